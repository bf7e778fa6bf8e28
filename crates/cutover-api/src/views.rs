//! The JSON documents of `status`, `history`, `show` and `pipeline show` (stable: users script
//! against their `--json`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub environments: Vec<EnvironmentView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvironmentView {
    pub name: String,
    /// The edge proxy's address, from the live release's config (or the working tree's).
    pub listen: Option<String>,
    /// The names it answers for on `listen` (`hosts`, same source); empty: every name.
    #[serde(default)]
    pub hosts: Vec<String>,
    pub live: Option<LiveView>,
    /// The rollback target.
    pub previous: Option<ReleaseRef>,
    pub instances: Vec<InstanceView>,
    /// Releases waiting at the manual gate, newest first.
    #[serde(default)]
    pub awaiting_approval: Vec<ReleaseRef>,
    /// Set while deploys to the environment are frozen.
    #[serde(default)]
    pub frozen: Option<FreezeView>,
    /// Set while the edge answers 503 for maintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceView>,
    /// Set while the edge holds new requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<PauseView>,
    /// The server it lives on (`https://…`) when not this machine's; set by the CLI, which
    /// asks each server of the working tree's config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Why that server could not be asked (then nothing else of it is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
    /// The certificates the edge obtains by ACME for the environment's hosts (`tls = "acme"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateView>,
}

/// A certificate the edge obtains and renews by ACME for one host: until when the one that
/// serves is valid (none yet: handshakes for the host fail), and the last attempt's error,
/// kept until an attempt succeeds (the old certificate serves meanwhile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateView {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Maintenance: the edge answers 503 with the message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaintenanceView {
    pub message: String,
    pub by: String,
    pub at: DateTime<Utc>,
}

/// A pause: new requests wait at the edge until `until` or `cutover resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PauseView {
    pub until: DateTime<Utc>,
    pub by: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveView {
    pub release: i64,
    pub version: String,
    pub digest: String,
    pub since: Option<DateTime<Utc>>,
    pub deployed_by: String,
    pub monitoring_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRef {
    pub release: i64,
    pub version: String,
    pub digest: String,
    pub since: Option<DateTime<Utc>>,
}

/// A freeze: no deploys to the environment until it is lifted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FreezeView {
    pub by: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceView {
    pub id: String,
    pub release: i64,
    pub version: String,
    pub address: SocketAddr,
    pub pid: Option<u32>,
    /// `null` where the runtime has no supervisor process of its own (a container engine).
    pub supervisor_pid: Option<u32>,
    pub state: String,
    /// `serving` (gets traffic) or `standby` (kept warm through a monitor window).
    pub role: String,
    pub restarts: u32,
    pub started_at: DateTime<Utc>,
    /// `null` where the runtime keeps the output itself (a container engine).
    pub log_file: Option<String>,
    /// The cluster node it runs on (`swarm`); absent on runtimes of one machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// How it last ended before it was restarted (a crash, or on `swarm` the loss of its
    /// node); absent while it never restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart: Option<RestartView>,
}

/// One restart of an instance: when its previous run ended and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestartView {
    pub at: DateTime<Utc>,
    /// E.g. "exit status 1", "was lost with its node worker-2 (node down); Swarm placed a new
    /// task".
    pub reason: String,
}

/// `GET /v1/history/{env}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryView {
    pub environment: String,
    pub releases: Vec<ReleaseView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseView {
    pub id: i64,
    pub environment: String,
    pub version: String,
    pub artifact: String,
    pub digest: String,
    /// `deploy`, `rollback` or `promote`.
    pub kind: String,
    pub state: String,
    pub reason: Option<String>,
    pub known_good: bool,
    pub restored_from: Option<i64>,
    pub requested_by: String,
    /// What brought it: "cli", "pipeline", "webhook", "watch".
    pub trigger: String,
    pub approved_by: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub live_at: Option<DateTime<Utc>>,
    pub monitor_until: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// A promotion's source: the release live in another environment that it ships.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_from: Option<Promotion>,
}

/// Where a promotion came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Promotion {
    pub release: i64,
    pub environment: String,
}

impl std::fmt::Display for Promotion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "promoted from release {} of {}",
            self.release, self.environment
        )
    }
}

/// `GET /v1/releases/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShowView {
    pub release: ReleaseView,
    /// The config snapshot: committed config, `--env` overrides, secret names with salted hashes.
    pub config: SnapshotView,
    pub events: Vec<EventView>,
    pub instances: Vec<InstanceView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotView {
    pub config_text: String,
    pub overrides: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventView {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub message: String,
}

/// `GET /v1/pipeline/runs`: the most recent runs, newest first, each with its outcome and
/// reason (runs refused before their first stage included, for webhooks and `watch`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunsView {
    pub runs: Vec<PipelineRunView>,
}

/// `GET /v1/pipeline/runs/{id}`: the whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunView {
    pub run: PipelineRunView,
    pub checks: Vec<CheckView>,
    pub events: Vec<crate::RunEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineRunView {
    pub id: i64,
    pub sha: String,
    /// "cli", "webhook", "watch".
    pub trigger: String,
    pub requested_by: String,
    /// "running", "succeeded", "refused", "failed".
    pub state: String,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// One check's latest result for a commit (`GET /v1/checks/{sha}` lists them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckView {
    pub name: String,
    /// "passed", "failed", "timed-out", "skipped".
    pub status: String,
    pub duration_ms: u64,
    pub exit: Option<String>,
    pub log_file: String,
}
