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
    /// The machine edge's directory (routes, pid file, log).
    #[arg(long)]
    pub edge_dir: PathBuf,
    /// Take the listening sockets over from the edge running in that directory (`cutover edge
    /// upgrade`).
    #[arg(long)]
    pub takeover: bool,
    /// Detach from the caller (print the pid and return at once).
    #[arg(long)]
    pub detach: bool,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    /// Also serve the whole API over HTTPS on this address, for the CLI on other machines
    /// (each call needs a token: `cutover token create NAME --role ROLE`), e.g. 0.0.0.0:9871.
    /// The server prints its certificate's fingerprint, which clients pin.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// The HTTPS certificate (PEM, the server's first). Default: one the server makes itself
    /// on first start and keeps in the state dir.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "listen"])]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "listen"])]
    pub tls_key: Option<PathBuf>,
    /// Detach from the caller (print the pid and return at once).
    #[arg(long, hide = true)]
    pub detach: bool,
    #[command(subcommand)]
    pub command: Option<ServerCommand>,
}

#[derive(clap::Subcommand, Debug)]
pub enum ServerCommand {
    /// What the server of this state dir is: whether it runs, its HTTPS address and the
    /// fingerprint clients pin.
    Info {
        #[arg(long)]
        json: bool,
    },
    /// Stop the server of this state dir, and nothing else: the instances and the edge serve
    /// on, and the next cutover command starts a server that takes them over. Refused while a
    /// deploy, rollback or pipeline run is under way.
    Stop,
    /// Stop the server of this state dir and start it again with the same options (--listen,
    /// --tls-cert, --tls-key): after installing a new cutover, the new server takes the
    /// instances over and upgrades the machine's edge, dropping nothing. Refused while a
    /// deploy, rollback or pipeline run is under way.
    #[command(
        after_help = "A server run by a service manager (systemd) is restarted there instead: `systemctl restart cutover`."
    )]
    Restart,
}

/// `cutover edge …`: the machine's edge, asked directly over its admin socket.
#[derive(clap::Subcommand, Debug)]
pub enum EdgeCommand {
    /// Obtain a new certificate by ACME for HOST now (a host of an environment with
    /// tls = "acme"); the old one serves until the new one is there, and on if it fails.
    Renew {
        /// The host, e.g. tasks.example.com.
        host: String,
    },
    /// What the edge serves: its listeners, routes, and the certificates ACME keeps; and
    /// whether its binary was replaced on disk since it started.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Replace the running edge by this cutover binary, dropping nothing: it hands its listening
    /// sockets to the new edge, drains what it still serves, and exits. A server does the same
    /// by itself when it starts (or deploys) and finds the edge older than itself, or running a
    /// binary that was replaced on disk by the one the server runs.
    Upgrade,
}

/// How `cutover server` serves, besides its unix socket.
#[derive(Debug, Clone, Default)]
pub struct Serving {
    /// The HTTPS API's address.
    pub listen: Option<std::net::SocketAddr>,
    /// Certificate and key files; none: the server's own.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A background role to run instead of a command.
#[derive(Debug)]
pub enum Role {
    /// `cutover server`: the control plane of `state` (an absolute path), in the foreground
    /// unless `detach`.
    Server {
        state: StateDir,
        detach: bool,
        serving: Serving,
    },
    /// `cutover proxy`: the machine's edge.
    Proxy(ProxyArgs),
    /// `cutover supervise`: one instance under its supervisor.
    Supervise(SuperviseArgs),
    /// `cutover edge …`: a question or an order for the machine's edge.
    Edge(EdgeCommand),
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
