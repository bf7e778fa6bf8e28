//! The `cutover` command line: argument parsing, the client side of the server's API, and
//! human output. It parses the binary's background roles too (server, edge proxy, instance
//! supervisor) but does not run them: [`parse`] hands a [`Role`] to the `cutover` binary,
//! which runs it in its crate, and [`run`] runs every other command.
//!
//! Exit codes (stable): 0 done · 1 refused, nothing changed · 2 usage error ·
//! 3 a new instance failed and the rollback target serves · 4 restoring failed too.

mod client;
mod commands;
mod context;
mod credentials;
mod output;
mod roles;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use output::report_error;
pub use roles::{EdgeCommand, ProxyArgs, Role, Serving, SuperviseArgs};

/// The parsed command line.
#[derive(Parser, Debug)]
#[command(
    name = "cutover",
    version,
    about = "Merged isn't running: build once, deploy, health-check, cut over, roll back by itself.",
    long_about = "cutover takes a commit to a running, health-checked service the same way every time, \
and takes it back by itself when the new version is wrong.\n\n\
Start with `cutover init` in your repository, then `cutover deploy staging`. \
`cutover demo` walks the whole loop on a sample app.",
    after_help = "Exit codes: 0 done · 1 refused, nothing changed · 2 usage error · \
3 the new version failed and the previous one serves · 4 restoring failed too"
)]
pub struct Cli {
    /// The state dir (default: `.cutover/` beside cutover.toml).
    #[arg(long, global = true, env = "CUTOVER_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The token for a remote server, read from this file (instead of `cutover login`'s or
    /// CUTOVER_TOKEN), for CI jobs.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a commented cutover.toml for the repository you stand in.
    Init(commands::init::InitArgs),
    /// Build a commit once into an artifact named <app>:<full sha>.
    Build(commands::build::BuildArgs),
    /// Push a version's image to the registry and record its digest.
    Publish(commands::publish::PublishArgs),
    /// Build (if needed), deploy, health-check and cut over an environment.
    #[command(
        after_help = "Examples:\n  cutover deploy staging                    HEAD, built once if needed\n  \
cutover deploy staging --env BREAK=1      a one-off setting, recorded in the release\n  \
cutover deploy production --version 9f3a2c1   an artifact already built, never rebuilt\n\n\
Exit codes: 0 live · 1 refused, nothing changed · 3 the new version failed and the previous one serves · 4 restoring failed too"
    )]
    Deploy(commands::deploy::DeployArgs),
    /// The pipeline: checks → build → publish → staging → (approval) → production.
    #[command(subcommand)]
    Pipeline(commands::pipeline::PipelineCommand),
    /// API tokens, one per person and role, for the server's HTTPS API.
    #[command(subcommand)]
    Token(commands::token::TokenCommand),
    /// Keep the fingerprint and token of a cutover server on another machine, after checking
    /// both with it (for environments with `server = "https://…"`).
    Login(commands::login::LoginArgs),
    /// Forget a server's login.
    Logout(commands::login::LogoutArgs),
    /// Poll a git remote for new commits on [pipeline] branch and run the pipeline for each.
    Watch(commands::watch::WatchArgs),
    /// Ship the release waiting at an environment's manual gate (you are the approver).
    Approve(commands::gate::ApproveArgs),
    /// Turn down the release waiting at an environment's manual gate.
    Reject(commands::gate::RejectArgs),
    /// Deploy exactly the artifact live in one environment to another, nothing rebuilt.
    Promote(commands::gate::PromoteArgs),
    /// The stop button: refuse every deploy to an environment (rollbacks still work).
    Freeze(commands::gate::FreezeArgs),
    /// Lift a freeze.
    Unfreeze(commands::gate::EnvArgs),
    /// Stop the deploy in flight in an environment; the known-good keeps serving.
    Abort(commands::gate::EnvArgs),
    /// Answer every request with 503 and a message (`on --message "…"`), or stop (`off`).
    Maintenance(commands::gate::MaintenanceArgs),
    /// Hold new requests at the edge (not refused) until `cutover resume` or --max runs out.
    Pause(commands::gate::PauseArgs),
    /// End a pause: the held requests go on.
    Resume(commands::gate::EnvArgs),
    /// Go back to the previous known-good release (or the one given with --to).
    #[command(
        after_help = "A rollback is a new release of a known-good artifact and config; inside the monitor \
window it is a switch to the still-warm previous instances. A second rollback walks further back.\n\n\
Examples:\n  cutover rollback staging\n  cutover rollback production --to 7        release 7 (see `cutover history production`)"
    )]
    Rollback(commands::deploy::RollbackArgs),
    /// What is live in each environment, since when, and which instances serve it.
    Status(commands::read::StatusArgs),
    /// Every release of an environment, newest first.
    History(commands::read::HistoryArgs),
    /// One release's timeline, event by event.
    Show(commands::read::ShowArgs),
    /// The output of an environment's instances.
    Logs(commands::read::LogsArgs),
    /// Remove old images, artifacts and unpacked releases; never the live one nor the
    /// `[retention] keep` most recent known-good of any environment.
    Prune(commands::prune::PruneArgs),
    /// Run the course lab (Parts A–D) end to end on a sample app, narrated.
    Demo(commands::demo::DemoArgs),
    /// Run the control plane in the foreground (the CLI starts one in the background when needed).
    Server(roles::ServerArgs),
    /// Stop the server and every instance of this state dir, and remove its routes from the
    /// machine's edge (which stops once no app has a route).
    Down,
    /// The machine's edge: `status`, `upgrade` (to this binary, dropping nothing), `renew HOST`
    /// (a certificate by ACME, now).
    #[command(subcommand)]
    Edge(roles::EdgeCommand),
    /// Internal: run one instance under a supervisor (started by the server).
    #[command(hide = true)]
    Supervise(roles::SuperviseArgs),
    /// Internal: run the machine's edge (started by the first server that needs it).
    #[command(hide = true)]
    Proxy(roles::ProxyArgs),
}

/// What the command line asks for.
pub enum Invocation {
    /// A command of the CLI: give it to [`run`].
    Command(Cli),
    /// A background role, for the binary to run.
    Role(Role),
    /// Nothing more to do (help, a usage error): exit with this code.
    Exit(i32),
}

/// Parses the process's arguments.
pub fn parse() -> Invocation {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Invocation::Exit(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cli.command {
        Command::Supervise(args) => Invocation::Role(Role::Supervise(args)),
        Command::Proxy(args) => Invocation::Role(Role::Proxy(args)),
        Command::Edge(command) => Invocation::Role(Role::Edge(command)),
        Command::Server(ref args) if args.command.is_some() => Invocation::Command(cli),
        Command::Server(args) => match roles::server_state(cli.state_dir.as_deref()) {
            Ok(state) => Invocation::Role(Role::Server {
                state,
                detach: args.detach,
                serving: roles::Serving {
                    listen: args.listen,
                    tls: args.tls_cert.zip(args.tls_key),
                },
            }),
            Err(e) => Invocation::Exit(report_error(&e)),
        },
        _ => Invocation::Command(cli),
    }
}

/// Runs a command of the CLI and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let state_dir = cli.state_dir.as_deref();
    if let Some(path) = &cli.token_file {
        credentials::set_token_file(path.clone());
    }
    if matches!(
        cli.command,
        Command::Status(_) | Command::History(_) | Command::Show(_) | Command::Logs(_)
    ) {
        // Their output is often piped to `head`: end quietly when the reader goes away.
        // SAFETY: resetting a signal disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Init(args) => commands::init::run(args),
        Command::Server(roles::ServerArgs {
            command: Some(roles::ServerCommand::Info { json }),
            ..
        }) => match commands::server::info(json, state_dir) {
            Ok(code) => code,
            Err(e) => output::report_error(&e),
        },
        command => block_on(async move {
            match command {
                Command::Build(args) => commands::build::run(args, state_dir).await,
                Command::Publish(args) => commands::publish::run(args, state_dir).await,
                Command::Prune(args) => commands::prune::run(args, state_dir).await,
                Command::Pipeline(command) => commands::pipeline::run(command, state_dir).await,
                Command::Watch(args) => commands::watch::run(args, state_dir).await,
                Command::Token(command) => commands::token::run(command, state_dir).await,
                Command::Login(args) => commands::login::login(args).await,
                Command::Logout(args) => commands::login::logout(args),
                Command::Approve(args) => commands::gate::approve(args, state_dir).await,
                Command::Reject(args) => commands::gate::reject(args, state_dir).await,
                Command::Promote(args) => commands::gate::promote(args, state_dir).await,
                Command::Freeze(args) => commands::gate::freeze(args, state_dir).await,
                Command::Unfreeze(args) => commands::gate::unfreeze(args, state_dir).await,
                Command::Abort(args) => commands::gate::abort(args, state_dir).await,
                Command::Maintenance(args) => commands::gate::maintenance(args, state_dir).await,
                Command::Pause(args) => commands::gate::pause(args, state_dir).await,
                Command::Resume(args) => commands::gate::resume(args, state_dir).await,
                Command::Deploy(args) => commands::deploy::deploy(args, state_dir).await,
                Command::Rollback(args) => commands::deploy::rollback(args, state_dir).await,
                Command::Status(args) => commands::read::status(args, state_dir).await,
                Command::History(args) => commands::read::history(args, state_dir).await,
                Command::Show(args) => commands::read::show(args, state_dir).await,
                Command::Logs(args) => commands::read::logs(args, state_dir).await,
                Command::Down => commands::read::down(state_dir).await,
                Command::Server(roles::ServerArgs {
                    command: Some(roles::ServerCommand::Stop),
                    ..
                }) => commands::server::stop(state_dir).await,
                Command::Server(roles::ServerArgs {
                    command: Some(roles::ServerCommand::Restart),
                    ..
                }) => commands::server::restart(state_dir).await,
                Command::Demo(args) => commands::demo::run(args).await,
                Command::Init(_)
                | Command::Server(_)
                | Command::Supervise(_)
                | Command::Edge(_)
                // parse() hands roles to the binary; init runs above.
                | Command::Proxy(_) => Ok(2),
            }
        }),
    }
}

fn block_on(f: impl std::future::Future<Output = anyhow::Result<i32>>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(f) {
        Ok(code) => code,
        Err(e) => output::report_error(&e),
    }
}
