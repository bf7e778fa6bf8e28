//! cutover-runtime: starts, stops and finds instances. See docs/ARCHITECTURE.md.
//!
//! The [`Runtime`] trait is what the engine codes against. [`ProcessRuntime`] is the embedded
//! default: every instance runs under its own supervisor process (`cutover supervise`, see
//! [`supervisor`]) that is not a child of the server, owns the instance's process group, writes
//! its log and restarts it when it exits. The supervisor publishes an [`InstanceInfo`] in
//! `<state dir>/instances/<id>.json` on every change; that file is how the server (or a restarted
//! one) finds it again.

mod log;
mod process;
pub mod supervisor;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use process::ProcessRuntime;

/// Everything needed to start one instance. Contains secret values (in `vars`): it is handed
/// to the supervisor on its standard input and never written to disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Unique, `[a-z0-9-]`, e.g. `staging-r7-1`.
    pub id: String,
    pub app: String,
    pub env: String,
    pub release: i64,
    pub version: String,
    /// `argv[0]` is resolved relative to `cwd` if it contains a `/`, else via `PATH`.
    pub argv: Vec<String>,
    /// The unpacked release dir.
    pub cwd: PathBuf,
    /// The instance's whole cutover-given environment (PORT, APP_VERSION, secrets …).
    pub vars: BTreeMap<String, String>,
    pub port: u16,
    #[serde(with = "millis")]
    pub stop_timeout: Duration,
    /// For container runtimes: the image to run, by digest (`repo@sha256:…`). The process
    /// runtime runs `argv` in `cwd` instead.
    #[serde(default)]
    pub image: Option<String>,
    /// For container runtimes: the port the app listens on inside the container; `port` is
    /// where it is published on 127.0.0.1.
    #[serde(default)]
    pub container_port: Option<u16>,
    /// For container runtimes: named volumes, `name:/path`, kept across releases.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// For container runtimes: which engine runs it ("docker" or "podman").
    #[serde(default)]
    pub engine: Option<String>,
}

/// An image a container runtime must have before instances of it start: pulled by digest,
/// and checked against the registry (a tag moved under us is refused).
#[derive(Debug, Clone)]
pub struct ImagePull {
    /// "docker" or "podman".
    pub engine: String,
    /// What instances run: `repository@sha256:…` (or a local image id without a registry).
    pub reference: String,
    /// `host[:port]/name`, without tag or digest.
    pub repository: String,
    /// The registry digest recorded when the artifact was published; `None`: never published.
    pub digest: Option<String>,
    /// The version tag (the full sha) the registry must still map to `digest`.
    pub tag: String,
    /// Registry login, resolved from its secret sources by whoever asked for the deploy.
    pub credentials: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Starting,
    Running,
    Restarting,
    Stopping,
    Stopped,
    /// Its supervisor died and left it running: it may still answer, but nothing restarts it
    /// or collects its output. Stopping it ends it.
    Unsupervised,
}

/// What a runtime knows about a running instance (never its `vars`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    pub app: String,
    pub env: String,
    pub release: i64,
    pub version: String,
    pub port: u16,
    /// `127.0.0.1:port`.
    pub address: SocketAddr,
    pub supervisor_pid: u32,
    /// The pid of the instance's process (the leader of its process group), while it runs.
    pub pid: Option<u32>,
    pub state: InstanceState,
    pub started_at: DateTime<Utc>,
    pub restarts: u32,
    /// The last 20 exits of the child, oldest first.
    pub exits: Vec<ExitRecord>,
    pub log_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitRecord {
    pub at: DateTime<Utc>,
    /// E.g. "exit status 1", "killed by signal 9".
    pub status: String,
}

/// How the engine starts, stops and finds instances, whatever runs them.
pub trait Runtime: Send + Sync + 'static {
    /// Starts an instance; returns once its process started (or failed to).
    fn start(
        &self,
        spec: InstanceSpec,
    ) -> impl Future<Output = Result<InstanceInfo, RuntimeError>> + Send;
    /// Graceful stop: SIGTERM to the instance's process group, wait stop_timeout, then SIGKILL;
    /// returns once the supervisor is gone.
    fn stop(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn inspect(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<InstanceInfo>, RuntimeError>> + Send;
    /// Every instance whose supervisor is alive (this is how a restarted server re-adopts them).
    fn list(&self) -> impl Future<Output = Result<Vec<InstanceInfo>, RuntimeError>> + Send;
    /// Makes `image` available before instances of it start. The process runtime needs
    /// nothing.
    fn prepare(&self, _image: &ImagePull) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        async { Ok(()) }
    }
    /// The last `lines` lines of the instance's output (current and rotated log files).
    fn logs(
        &self,
        id: &str,
        lines: usize,
    ) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The spec cannot be run as given (bad id, empty command …).
    #[error("invalid instance spec: {0}")]
    InvalidSpec(String),
    #[error("instance {0} is already running")]
    AlreadyRunning(String),
    /// The instance's process could not be started; the message names the command and why,
    /// e.g. "run command `./nope` not found in /path (instance staging-r7-1)".
    #[error("{0}")]
    Start(String),
    /// The supervisor misbehaved (died early, did not report in time).
    #[error("{0}")]
    Supervisor(String),
    #[error("no instance {0} (no state and no log file)")]
    NotFound(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    fn io(context: impl Into<String>, source: std::io::Error) -> RuntimeError {
        RuntimeError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A free TCP port on 127.0.0.1: binds port 0, reads the port, drops the socket.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// How many exits an [`InstanceInfo`] keeps.
const MAX_EXITS: usize = 20;

/// What a supervisor publishes in `<state dir>/instances/<id>.json`: the [`InstanceInfo`] plus
/// what the runtime needs to stop it and the error that ended it, if any.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateFile {
    #[serde(flatten)]
    info: InstanceInfo,
    #[serde(with = "millis")]
    stop_timeout: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn instances_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("instances")
}

fn state_path(state_dir: &Path, id: &str) -> PathBuf {
    instances_dir(state_dir).join(format!("{id}.json"))
}

fn log_path(state_dir: &Path, env: &str, id: &str) -> PathBuf {
    state_dir.join("logs").join(env).join(format!("{id}.log"))
}

/// Instance ids become file names: `[a-z0-9-]`, 1-100 characters.
fn validate_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "instance id `{id}` must be 1-100 characters of a-z, 0-9 and -"
        ))
    }
}

/// Checks the parts of a spec that become file names or a command line.
fn validate(spec: &InstanceSpec) -> Result<(), String> {
    validate_id(&spec.id)?;
    let env_ok = !spec.env.is_empty()
        && !spec.env.starts_with('.')
        && spec
            .env
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !env_ok {
        return Err(format!(
            "environment name `{}` of instance {} must be letters, digits, -, _ or . (not leading)",
            spec.env, spec.id
        ));
    }
    if !matches!(spec.argv.first(), Some(a) if !a.is_empty()) {
        return Err(format!("instance {} has an empty run command", spec.id));
    }
    Ok(())
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, env: &str, argv: &[&str]) -> InstanceSpec {
        InstanceSpec {
            id: id.into(),
            app: "app".into(),
            env: env.into(),
            release: 1,
            version: "abc".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: PathBuf::from("/tmp"),
            vars: BTreeMap::new(),
            port: 1234,
            stop_timeout: Duration::from_millis(1500),
            image: None,
            container_port: None,
            volumes: Vec::new(),
            engine: None,
        }
    }

    #[test]
    fn validate_rejects_ids_and_envs_that_would_escape_the_state_dir() {
        assert!(validate(&spec("staging-r7-1", "staging", &["x"])).is_ok());
        assert!(validate(&spec("../x", "staging", &["x"])).is_err());
        assert!(validate(&spec("A", "staging", &["x"])).is_err());
        assert!(validate(&spec("a", "../etc", &["x"])).is_err());
        assert!(validate(&spec("a", "", &["x"])).is_err());
        let err = validate(&spec("a", "staging", &[])).unwrap_err();
        assert!(err.contains("empty run command"), "{err}");
    }

    #[test]
    fn stop_timeout_travels_as_milliseconds() {
        let json = serde_json::to_value(spec("a", "b", &["x"])).unwrap();
        assert_eq!(json["stop_timeout"], 1500);
        let back: InstanceSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back.stop_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_port().unwrap(), 0);
    }
}
