//! The binary's background roles as the command line names them. The CLI only parses them
//! (so that `cutover --help` and usage errors stay one thing); the `cutover` binary runs each
//! role in its own crate.

use std::path::PathBuf;

use clap::Args;
use cutover_daemon::StateDir;

#[derive(Args, Debug)]
pub struct SuperviseArgs {
    /// The state dir the instance belongs to.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Detach from the caller (print the pid and return at once).
    #[arg(long)]
    pub detach: bool,
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

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Detach from the caller (print the pid and return at once).
    #[arg(long, hide = true)]
    pub detach: bool,
}

/// A background role to run instead of a command.
#[derive(Debug)]
pub enum Role {
    /// `cutover server`: the control plane of `state` (an absolute path), in the foreground
    /// unless `detach`.
    Server { state: StateDir, detach: bool },
    /// `cutover proxy`: an environment's edge proxy.
    Proxy(ProxyArgs),
    /// `cutover supervise`: one instance under its supervisor.
    Supervise(SuperviseArgs),
}

/// The state dir a `cutover server` serves: the one given, or the one beside cutover.toml.
pub(crate) fn server_state(state_dir: Option<&std::path::Path>) -> anyhow::Result<StateDir> {
    let state = match state_dir {
        Some(dir) => StateDir::new(dir),
        None => crate::context::Context::discover(None)?.state,
    };
    Ok(StateDir::new(
        std::path::absolute(&state.path).unwrap_or(state.path),
    ))
}
