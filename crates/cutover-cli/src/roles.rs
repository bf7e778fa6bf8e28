//! The binary's background roles. Each detaches first (before any thread exists) when asked to.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct SuperviseArgs {
    /// The state dir the instance belongs to.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Detach from the caller (print the pid and return at once).
    #[arg(long)]
    pub detach: bool,
}

pub fn supervise(args: SuperviseArgs) -> i32 {
    if args.detach {
        if let Err(e) = cutover_daemon::detach(None) {
            eprintln!("error: could not detach the supervisor: {e}");
            return 1;
        }
    }
    cutover_runtime::supervisor::run(&args.state_dir)
}

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// The state dir whose environment this proxy serves.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The environment's name.
    #[arg(long)]
    pub env: String,
    /// The address clients connect to, e.g. 127.0.0.1:8001.
    #[arg(long)]
    pub listen: std::net::SocketAddr,
    /// Detach from the caller (print the pid and return at once).
    #[arg(long)]
    pub detach: bool,
}

pub fn proxy(args: ProxyArgs) -> i32 {
    let options = cutover_proxy::ProxyOptions::new(&args.state_dir, &args.env, args.listen);
    if args.detach {
        if let Err(e) = cutover_daemon::detach(Some(&options.log_file)) {
            eprintln!("error: could not detach the edge proxy: {e}");
            return 1;
        }
    }
    match cutover_proxy::run(options) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: edge proxy for {}: {e}", args.env);
            1
        }
    }
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Detach from the caller (print the pid and return at once).
    #[arg(long, hide = true)]
    pub detach: bool,
}

/// `cutover server`: the control plane, in the foreground unless `--detach`.
pub fn server(args: ServerArgs, state_dir: Option<&std::path::Path>) -> i32 {
    let state = match state_dir {
        Some(dir) => cutover_daemon::StateDir::new(dir),
        None => match crate::context::Context::discover(None) {
            Ok(ctx) => ctx.state,
            Err(e) => return crate::output::report_error(&e),
        },
    };
    let state =
        cutover_daemon::StateDir::new(std::path::absolute(&state.path).unwrap_or(state.path));
    if args.detach {
        if let Err(e) = state.create() {
            eprintln!("error: cannot create {}: {e}", state.path.display());
            return 1;
        }
        if let Err(e) = cutover_daemon::detach(Some(&state.log_file())) {
            eprintln!("error: could not detach the server: {e}");
            return 1;
        }
        cutover_daemon::close_stdin();
    }
    cutover_server::run(state)
}
