//! cutover-runtime: what the engine asks of whatever runs instances, as a trait and a neutral
//! spec. The implementations live in their own crates (`cutover-process`, the embedded default;
//! `cutover-docker`, Docker and Podman), and the server picks one per environment from the
//! config's `RuntimeKind` ([`DynRuntime`] lets it hold them side by side).
//!
//! A runtime gets a release's artifact in place ([`Runtime::place`]: unpack a bundle, or check
//! an image's registry digest and pull it by digest), picks each instance's port, starts, stops,
//! finds and tails instances. The engine never learns which kind of runtime it talks to.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use cutover_artifact::Artifact;
use cutover_config::{Config, RuntimeKind};
use serde::{Deserialize, Serialize};

/// What to place: one release's artifact, for one environment, on the runtime its config
/// names.
#[derive(Debug, Clone, Copy)]
pub struct PlaceRequest<'a> {
    pub kind: RuntimeKind,
    pub app: &'a str,
    pub env: &'a str,
    pub release: i64,
    pub version: &'a str,
    /// The artifact's manifest (its bundle, and its image if it has one).
    pub artifact: &'a Artifact,
    /// The config the release runs (`cutover.toml` as committed in its version).
    pub config: &'a Config,
    /// Registry login, resolved from its secret sources by whoever asked for the deploy.
    pub credentials: Option<&'a (String, String)>,
    /// Where relative paths of the config start (the directory of `cutover.toml`).
    pub base_dir: &'a std::path::Path,
}

/// What instances run: a directory with the unpacked bundle, or an image by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Workload {
    Bundle { dir: PathBuf },
    Image { reference: String },
}

/// A release's artifact in place on a runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub workload: Workload,
    /// `CUTOVER_DATA_DIR` of the release's instances: a directory kept across releases, or
    /// where the environment's data volume is mounted.
    pub data_dir: Option<String>,
    /// Named data volumes (`name:/path`) scoped to the app and environment, for runtimes that
    /// mount them.
    pub volumes: Vec<String>,
    /// Where a runtime that schedules onto several machines may put the release's instances
    /// (placement constraints, e.g. `node.role == worker`); empty: anywhere. Runtimes of one
    /// machine leave it empty.
    pub constraints: Vec<String>,
}

/// Everything needed to start one instance. Contains secret values (in `vars`): a runtime
/// hands it over in memory (a pipe, an API call) and never writes it to disk.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// Unique, `[a-z0-9-]`, e.g. `staging-r7-1-ab12`.
    pub id: String,
    pub app: String,
    pub env: String,
    pub release: i64,
    pub version: String,
    /// Which runtime starts it.
    pub kind: RuntimeKind,
    pub placement: Placement,
    /// `run.command` as configured; `$PORT`-style references are expanded by the runtime once
    /// it has picked the port ([`launch_env`]). Empty: the workload's own command (an image's).
    pub argv: Vec<String>,
    /// The instance's cutover-given environment (APP_VERSION, `[env]`, secrets …) without its
    /// port, which the runtime adds under `port_env`.
    pub vars: BTreeMap<String, String>,
    /// Which of `vars` are secrets. A runtime with a secret store of its own keeps these there
    /// rather than in the instance's environment; the others put them with the rest of `vars`.
    pub secret_names: Vec<String>,
    /// The variable that carries the port (`run.port_env`, default `PORT`).
    pub port_env: String,
    /// The port the app listens on inside its sandbox (`run.port`), where it has one of its
    /// own; `None`: the app listens on the port the runtime picks.
    pub app_port: Option<u16>,
    pub stop_timeout: Duration,
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
    /// Where the edge reaches it: `127.0.0.1:port`.
    pub address: SocketAddr,
    /// The pid of its supervisor; `None` where the runtime has none of its own (a container
    /// engine supervises).
    #[serde(default)]
    pub supervisor_pid: Option<u32>,
    /// The pid of the instance's process (the leader of its process group), while it runs.
    pub pid: Option<u32>,
    pub state: InstanceState,
    pub started_at: DateTime<Utc>,
    pub restarts: u32,
    /// The last 20 exits of the child, oldest first.
    pub exits: Vec<ExitRecord>,
    /// Where its output is kept, if in a file (a container engine keeps it itself).
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// The machine it runs on, where a runtime spreads instances over several (a cluster
    /// node's name); `None` on a runtime of one machine.
    #[serde(default)]
    pub node: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitRecord {
    pub at: DateTime<Utc>,
    /// E.g. "exit status 1", "killed by signal 9".
    pub status: String,
}

/// How the engine places artifacts and starts, stops and finds instances, whatever runs them.
pub trait Runtime: Send + Sync + 'static {
    /// What a release of `req.artifact` runs, by digest, as the ledger records it: the bundle's
    /// digest, or the image's registry digest. Refuses an artifact this runtime cannot run.
    fn identify(
        &self,
        req: &PlaceRequest<'_>,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    /// Gets the artifact where instances of the release run from.
    fn place(
        &self,
        req: &PlaceRequest<'_>,
    ) -> impl Future<Output = Result<Placement, RuntimeError>> + Send;
    /// Picks a port and starts an instance; returns once its process started (or failed to).
    fn start(
        &self,
        spec: InstanceSpec,
    ) -> impl Future<Output = Result<InstanceInfo, RuntimeError>> + Send;
    /// Graceful stop (SIGTERM, `stop_timeout`, SIGKILL); returns once it is gone.
    fn stop(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn inspect(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<InstanceInfo>, RuntimeError>> + Send;
    /// Every instance this runtime looks after (this is how a restarted server adopts them).
    fn list(&self) -> impl Future<Output = Result<Vec<InstanceInfo>, RuntimeError>> + Send;
    /// The last `lines` lines of the instance's output.
    fn logs(
        &self,
        id: &str,
        lines: usize,
    ) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send;
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`Runtime`] as a trait object, so that one server can hold runtimes of several kinds side by
/// side. Every `Runtime` is one.
pub trait DynRuntime: Send + Sync + 'static {
    fn identify<'a>(
        &'a self,
        req: &'a PlaceRequest<'a>,
    ) -> BoxFuture<'a, Result<String, RuntimeError>>;
    fn place<'a>(
        &'a self,
        req: &'a PlaceRequest<'a>,
    ) -> BoxFuture<'a, Result<Placement, RuntimeError>>;
    fn start(&self, spec: InstanceSpec) -> BoxFuture<'_, Result<InstanceInfo, RuntimeError>>;
    fn stop<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>>;
    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<InstanceInfo>, RuntimeError>>;
    fn list(&self) -> BoxFuture<'_, Result<Vec<InstanceInfo>, RuntimeError>>;
    fn logs<'a>(
        &'a self,
        id: &'a str,
        lines: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, RuntimeError>>;
}

impl<R: Runtime> DynRuntime for R {
    fn identify<'a>(
        &'a self,
        req: &'a PlaceRequest<'a>,
    ) -> BoxFuture<'a, Result<String, RuntimeError>> {
        Box::pin(Runtime::identify(self, req))
    }
    fn place<'a>(
        &'a self,
        req: &'a PlaceRequest<'a>,
    ) -> BoxFuture<'a, Result<Placement, RuntimeError>> {
        Box::pin(Runtime::place(self, req))
    }
    fn start(&self, spec: InstanceSpec) -> BoxFuture<'_, Result<InstanceInfo, RuntimeError>> {
        Box::pin(Runtime::start(self, spec))
    }
    fn stop<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(Runtime::stop(self, id))
    }
    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<InstanceInfo>, RuntimeError>> {
        Box::pin(Runtime::inspect(self, id))
    }
    fn list(&self) -> BoxFuture<'_, Result<Vec<InstanceInfo>, RuntimeError>> {
        Box::pin(Runtime::list(self))
    }
    fn logs<'a>(
        &'a self,
        id: &'a str,
        lines: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, RuntimeError>> {
        Box::pin(Runtime::logs(self, id, lines))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The spec cannot be run as given (bad id, empty command …).
    #[error("invalid instance spec: {0}")]
    InvalidSpec(String),
    #[error("instance {0} is already running")]
    AlreadyRunning(String),
    /// The artifact cannot be run or put in place here (no image, never published, a tag that
    /// moved, a pull that failed, a bundle that does not unpack).
    #[error("{0}")]
    Place(String),
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
    pub fn io(context: impl Into<String>, source: std::io::Error) -> RuntimeError {
        RuntimeError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The environment and command line an instance is started with once its runtime picked
/// `port` (the port the app listens on): `vars` plus the port under `port_env`, and `argv`
/// with `$NAME`, `${NAME}` and `$$` expanded from them ([`cutover_config::expand_argv`]; the
/// config check already refused secrets and names the instance does not get).
pub fn launch_env(
    spec: &InstanceSpec,
    port: u16,
) -> Result<(Vec<String>, BTreeMap<String, String>), RuntimeError> {
    let mut vars = spec.vars.clone();
    vars.insert(spec.port_env.clone(), port.to_string());
    let argv = cutover_config::expand_argv(&spec.argv, &vars)
        .map_err(|e| RuntimeError::InvalidSpec(format!("[run] command: {e}")))?;
    Ok((argv, vars))
}

/// How long a port handed out by [`free_port`] is not handed out again.
const PORT_QUARANTINE: Duration = Duration::from_secs(120);

/// A free TCP port on 127.0.0.1 for an instance to listen on. The kernel picks it (bind to
/// port 0); the port is then remembered for a while so that two instances started close
/// together by this process never get the same one, even before either has bound it.
pub fn free_port() -> std::io::Result<u16> {
    static GIVEN: Mutex<Vec<(u16, Instant)>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    given.retain(|(_, at)| at.elapsed() < PORT_QUARANTINE);
    for _ in 0..64 {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        if !given.iter().any(|(p, _)| *p == port) {
            given.push((port, Instant::now()));
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free port on 127.0.0.1 after 64 tries",
    ))
}

/// Instance ids become file and container names: `[a-z0-9-]`, 1-100 characters.
pub fn validate_id(id: &str) -> Result<(), String> {
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

/// Checks the parts of a spec that become file names: its id and environment name.
pub fn validate(spec: &InstanceSpec) -> Result<(), String> {
    validate_names(&spec.id, &spec.env)
}

/// An instance id and its environment's name, which become file and container names.
pub fn validate_names(id: &str, env: &str) -> Result<(), String> {
    validate_id(id)?;
    let env_ok = !env.is_empty()
        && !env.starts_with('.')
        && env
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !env_ok {
        return Err(format!(
            "environment name `{env}` of instance {id} must be letters, digits, -, _ or . (not leading)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, env: &str) -> InstanceSpec {
        InstanceSpec {
            id: id.into(),
            app: "app".into(),
            env: env.into(),
            release: 1,
            version: "abc".into(),
            kind: RuntimeKind::Process,
            placement: Placement {
                workload: Workload::Bundle {
                    dir: PathBuf::from("/tmp"),
                },
                data_dir: None,
                volumes: Vec::new(),
                constraints: Vec::new(),
            },
            argv: vec!["x".into()],
            vars: BTreeMap::new(),
            secret_names: Vec::new(),
            port_env: "PORT".into(),
            app_port: None,
            stop_timeout: Duration::from_millis(1500),
        }
    }

    #[test]
    fn validate_rejects_ids_and_envs_that_would_escape_the_state_dir() {
        assert!(validate(&spec("staging-r7-1", "staging")).is_ok());
        assert!(validate(&spec("../x", "staging")).is_err());
        assert!(validate(&spec("A", "staging")).is_err());
        assert!(validate(&spec("a", "../etc")).is_err());
        assert!(validate(&spec("a", "")).is_err());
    }

    #[test]
    fn the_port_goes_under_port_env() {
        let mut s = spec("a", "b");
        s.port_env = "HTTP_PORT".into();
        let (_, vars) = launch_env(&s, 8080).unwrap();
        assert_eq!(vars["HTTP_PORT"], "8080");
        assert!(!vars.contains_key("PORT"));
    }

    #[test]
    fn the_command_is_expanded_with_the_port() {
        let mut s = spec("a", "b");
        s.port_env = "HTTP_PORT".into();
        s.argv = [
            "./serve",
            "-b",
            "127.0.0.1:${HTTP_PORT}",
            "--id=$CUTOVER_INSTANCE",
            "$$1",
        ]
        .map(String::from)
        .to_vec();
        s.vars.insert("CUTOVER_INSTANCE".into(), "a".into());
        let (argv, _) = launch_env(&s, 8080).unwrap();
        assert_eq!(argv, ["./serve", "-b", "127.0.0.1:8080", "--id=a", "$1"]);
        s.argv = vec!["$NOPE".into()];
        let err = launch_env(&s, 8080).unwrap_err().to_string();
        assert!(
            err.contains("[run] command") && err.contains("NOPE"),
            "{err}"
        );
    }

    #[test]
    fn free_ports_are_not_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        assert!(ports.iter().all(|p| *p != 0));
    }
}
