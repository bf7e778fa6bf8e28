//! cutover-process: the process runtime, the embedded default. Every instance runs under its
//! own supervisor process (`cutover supervise`, see [`supervisor`]) that is not a child of the
//! server, owns the instance's process group, writes its log and restarts it when it exits.
//! The supervisor publishes an [`InstanceInfo`] in `<state dir>/instances/<id>.json` on every
//! change; that file is how the server (or a restarted one) finds it again.
//!
//! Placement unpacks the release's bundle into `<state dir>/releases/<env>/<release>/`; the
//! instance's data dir is `<state dir>/data/<env>/`, kept across releases.

mod process;
pub mod supervisor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cutover_runtime::InstanceInfo;
use serde::{Deserialize, Serialize};

pub use process::ProcessRuntime;

/// What a supervisor is handed on its standard input: one instance, its port picked and its
/// command line expanded. Contains secret values (in `vars`): never written to disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
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

/// Checks the parts of a launch that become file names or a command line.
fn validate(launch: &Launch) -> Result<(), String> {
    cutover_runtime::validate_names(&launch.id, &launch.env)?;
    if !matches!(launch.argv.first(), Some(a) if !a.is_empty()) {
        return Err(format!("instance {} has an empty run command", launch.id));
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

    fn launch(id: &str, env: &str, argv: &[&str]) -> Launch {
        Launch {
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
        }
    }

    #[test]
    fn validate_rejects_ids_and_envs_that_would_escape_the_state_dir() {
        assert!(validate(&launch("staging-r7-1", "staging", &["x"])).is_ok());
        assert!(validate(&launch("../x", "staging", &["x"])).is_err());
        assert!(validate(&launch("A", "staging", &["x"])).is_err());
        assert!(validate(&launch("a", "../etc", &["x"])).is_err());
        assert!(validate(&launch("a", "", &["x"])).is_err());
        let err = validate(&launch("a", "staging", &[])).unwrap_err();
        assert!(err.contains("empty run command"), "{err}");
    }

    #[test]
    fn stop_timeout_travels_as_milliseconds() {
        let json = serde_json::to_value(launch("a", "b", &["x"])).unwrap();
        assert_eq!(json["stop_timeout"], 1500);
        let back: Launch = serde_json::from_value(json).unwrap();
        assert_eq!(back.stop_timeout, Duration::from_millis(1500));
    }
}
