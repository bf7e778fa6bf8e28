use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a release is in the deploy state machine:
/// `pending → (awaiting-approval) → starting → verifying → live → superseded`,
/// or one of the two other ends, `failed` and `rolled-back`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseState {
    Pending,
    AwaitingApproval,
    Starting,
    Verifying,
    Live,
    Superseded,
    Failed,
    RolledBack,
}

impl ReleaseState {
    pub const ALL: [ReleaseState; 8] = [
        ReleaseState::Pending,
        ReleaseState::AwaitingApproval,
        ReleaseState::Starting,
        ReleaseState::Verifying,
        ReleaseState::Live,
        ReleaseState::Superseded,
        ReleaseState::Failed,
        ReleaseState::RolledBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseState::Pending => "pending",
            ReleaseState::AwaitingApproval => "awaiting-approval",
            ReleaseState::Starting => "starting",
            ReleaseState::Verifying => "verifying",
            ReleaseState::Live => "live",
            ReleaseState::Superseded => "superseded",
            ReleaseState::Failed => "failed",
            ReleaseState::RolledBack => "rolled-back",
        }
    }

    pub fn parse(s: &str) -> Option<ReleaseState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the release is still on its way (a crashed server must resolve these).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ReleaseState::Pending | ReleaseState::Starting | ReleaseState::Verifying
        )
    }
}

impl std::fmt::Display for ReleaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseKind {
    Deploy,
    Rollback,
    /// Exactly the release live in another environment (see [`Release::promoted_from`]).
    Promote,
}

impl ReleaseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseKind::Deploy => "deploy",
            ReleaseKind::Rollback => "rollback",
            ReleaseKind::Promote => "promote",
        }
    }

    pub fn parse(s: &str) -> Option<ReleaseKind> {
        match s {
            "deploy" => Some(ReleaseKind::Deploy),
            "rollback" => Some(ReleaseKind::Rollback),
            "promote" => Some(ReleaseKind::Promote),
            _ => None,
        }
    }
}

/// Where a promoted release came from: the release that was live in another environment when
/// the promotion took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub release: i64,
    pub env: String,
}

/// The configuration a release runs: `cutover.toml` as committed in its version, the
/// release's one-off `--env` overrides, and the names of its secrets with a salted hash of
/// their values (never the values). Stored as JSON in the release's row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub config_text: String,
    #[serde(default)]
    pub overrides: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

/// The release a promotion ships: one of this ledger (`env` is its environment) or of another
/// server's (`env` says which: "staging on https://staging.example.com:9871").
#[derive(Debug, Clone, PartialEq)]
pub struct PromotedFrom {
    pub release: i64,
    pub env: String,
    pub digest: String,
}

impl From<&Release> for PromotedFrom {
    fn from(r: &Release) -> PromotedFrom {
        PromotedFrom {
            release: r.id,
            env: r.env.clone(),
            digest: r.digest.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewRelease {
    pub app: String,
    pub env: String,
    pub version: String,
    pub artifact: String,
    pub digest: String,
    pub snapshot: Snapshot,
    pub kind: ReleaseKind,
    pub restored_from: Option<i64>,
    pub requested_by: String,
    /// What brought it: "cli", "pipeline", "webhook", "watch".
    pub trigger: String,
    /// The commit's author (who may not approve it).
    pub author: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub id: i64,
    pub app: String,
    pub env: String,
    pub version: String,
    pub artifact: String,
    pub digest: String,
    pub snapshot: Snapshot,
    pub kind: ReleaseKind,
    pub restored_from: Option<i64>,
    pub requested_by: String,
    pub state: ReleaseState,
    pub reason: Option<String>,
    pub passed_monitor: bool,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub live_at: Option<DateTime<Utc>>,
    pub monitor_until: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub trigger: String,
    pub author: Option<String>,
    pub approved_by: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    /// Set on a promotion (`kind` = promote).
    pub promoted_from: Option<Promotion>,
}

/// A freeze: no deploys to an environment (rollbacks still go) until it is lifted.
#[derive(Debug, Clone, PartialEq)]
pub struct Freeze {
    pub by: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// A hold on an environment's edge: maintenance (503 with a message) or a pause (requests
/// wait at the edge until `until` or a resume).
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeHold {
    pub kind: EdgeHoldKind,
    pub by: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EdgeHoldKind {
    Maintenance { message: String },
    Pause { until: DateTime<Utc> },
}

/// One check's result for a commit.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRecord {
    pub name: String,
    /// "passed", "failed", "timed-out", "skipped".
    pub status: String,
    pub duration_ms: u64,
    pub exit: Option<String>,
    pub log_file: String,
}

impl Release {
    /// The first 12 characters of the version, as people say it.
    pub fn short_version(&self) -> &str {
        cutover_git::short(&self.version)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub release: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub message: String,
}

/// One run of the pipeline: checks → build → publish → environments.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineRun {
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

/// A call the server refused, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// When (filled in when read back).
    pub at: Option<DateTime<Utc>>,
    /// The name of the token the call carried, if it carried a valid one.
    pub token_name: Option<String>,
    pub method: String,
    pub path: String,
    /// The HTTP status of the answer (401, 403).
    pub status: u16,
    pub reason: String,
}
