//! cutover-proxy: the edge proxy (data plane). See docs/ARCHITECTURE.md.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything one environment's proxy process needs to know.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub env: String,
    pub listen: SocketAddr,
    /// Unix socket of the admin protocol.
    pub admin_socket: PathBuf,
    /// Where the proxy keeps its routes, so that a restarted proxy serves the same upstreams.
    pub routes_file: PathBuf,
    pub pid_file: PathBuf,
    pub log_file: PathBuf,
}

impl ProxyOptions {
    /// The standard layout inside a state dir.
    pub fn new(state_dir: &Path, env: &str, listen: SocketAddr) -> ProxyOptions {
        ProxyOptions {
            env: env.to_string(),
            listen,
            admin_socket: cutover_daemon::socket_path(state_dir, &format!("proxy-{env}")),
            routes_file: state_dir.join("proxy").join(format!("{env}.routes.json")),
            pid_file: state_dir.join("proxy").join(format!("{env}.pid")),
            log_file: state_dir.join("logs").join(format!("proxy-{env}.log")),
        }
    }
}

/// Runs the proxy until it is told to shut down. Builds its own tokio runtime.
pub fn run(_options: ProxyOptions) -> Result<(), std::io::Error> {
    todo!()
}
