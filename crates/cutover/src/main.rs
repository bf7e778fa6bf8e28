//! The `cutover` binary: one executable, several roles. The background roles run in their
//! own crates, straight from here; every other command is the CLI's.

mod roles;

fn main() {
    let code = match cutover_cli::parse() {
        cutover_cli::Invocation::Command(cli) => cutover_cli::run(cli),
        cutover_cli::Invocation::Role(role) => roles::run(role),
        cutover_cli::Invocation::Exit(code) => code,
    };
    std::process::exit(code);
}
