//! The `cutover` command line: argument parsing, the client side of the server's API, and the
//! dispatch to the binary's other roles (server, edge proxy, instance supervisor).

mod roles;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cutover",
    version,
    about = "Merged isn't running: build once, deploy, health-check, cut over, roll back by itself."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Internal: run one instance under a supervisor (started by the server).
    #[command(hide = true)]
    Supervise(roles::SuperviseArgs),
    /// Internal: run an environment's edge proxy (started by the server).
    #[command(hide = true)]
    Proxy(roles::ProxyArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match cli.command {
        Command::Supervise(args) => roles::supervise(args),
        Command::Proxy(args) => roles::proxy(args),
    }
}
