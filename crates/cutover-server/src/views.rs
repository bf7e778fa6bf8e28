//! The JSON documents of `status`, `history` and `show` (stable: users script against them).

use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use cutover_ledger::{Event, Release};
use cutover_runtime::InstanceInfo;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub environments: Vec<EnvironmentView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvironmentView {
    pub name: String,
    /// The edge proxy's address, from the live release's config (or the working tree's).
    pub listen: Option<String>,
    pub live: Option<LiveView>,
    /// The rollback target.
    pub previous: Option<ReleaseRef>,
    pub instances: Vec<InstanceView>,
    /// Releases waiting at the manual gate, newest first.
    #[serde(default)]
    pub awaiting_approval: Vec<ReleaseRef>,
    /// Set while deploys to the environment are frozen.
    #[serde(default)]
    pub frozen: Option<cutover_ledger::Freeze>,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceView {
    pub id: String,
    pub release: i64,
    pub version: String,
    pub address: SocketAddr,
    pub pid: Option<u32>,
    pub supervisor_pid: u32,
    pub state: String,
    /// `serving` (gets traffic) or `standby` (kept warm through a monitor window).
    pub role: String,
    pub restarts: u32,
    pub started_at: DateTime<Utc>,
    pub log_file: String,
}

impl InstanceView {
    pub fn new(i: &InstanceInfo, serving: bool) -> InstanceView {
        InstanceView {
            id: i.id.clone(),
            release: i.release,
            version: i.version.clone(),
            address: i.address,
            pid: i.pid,
            supervisor_pid: i.supervisor_pid,
            state: serde_json::to_value(i.state)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            role: if serving { "serving" } else { "standby" }.into(),
            restarts: i.restarts,
            started_at: i.started_at,
            log_file: i.log_file.display().to_string(),
        }
    }
}

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
}

impl From<&Release> for ReleaseView {
    fn from(r: &Release) -> ReleaseView {
        ReleaseView {
            id: r.id,
            environment: r.env.clone(),
            version: r.version.clone(),
            artifact: r.artifact.clone(),
            digest: r.digest.clone(),
            kind: r.kind.as_str().into(),
            state: r.state.as_str().into(),
            reason: r.reason.clone(),
            known_good: r.passed_monitor && matches!(r.state.as_str(), "live" | "superseded"),
            restored_from: r.restored_from,
            requested_by: r.requested_by.clone(),
            trigger: r.trigger.clone(),
            approved_by: r.approved_by.clone(),
            approved_at: r.approved_at,
            created_at: r.created_at,
            started_at: r.started_at,
            live_at: r.live_at,
            monitor_until: r.monitor_until,
            ended_at: r.ended_at,
        }
    }
}

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
    pub overrides: std::collections::BTreeMap<String, String>,
    pub secrets: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventView {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub message: String,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> EventView {
        EventView {
            at: e.at,
            kind: e.kind.clone(),
            message: e.message.clone(),
        }
    }
}

pub fn release_ref(r: &Release) -> ReleaseRef {
    ReleaseRef {
        release: r.id,
        version: r.version.clone(),
        digest: r.digest.clone(),
        since: r.live_at,
    }
}
