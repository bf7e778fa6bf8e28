//! What clients send: the bodies of the server's `POST` endpoints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The query of `GET /v1/history/{env}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// How many releases, newest first (default 50).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The query of `GET /v1/pipeline/runs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunsQuery {
    /// How many runs, newest first (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The query of `GET /v1/rollback-target/{env}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RollbackTargetQuery {
    /// A known-good release id or version prefix; default: the rollback target.
    #[serde(default)]
    pub to: Option<String>,
}

/// The query of `GET /v1/logs/{env}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogsQuery {
    /// How many lines per instance (default 50).
    #[serde(default)]
    pub lines: Option<usize>,
}

/// `POST /v1/deploy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployBody {
    pub env: String,
    pub app: String,
    pub version: String,
    #[serde(default)]
    pub overrides: BTreeMap<String, String>,
    /// Secret values resolved by the caller, by name (kept in memory only).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    pub requested_by: String,
    #[serde(default)]
    pub queue: bool,
    /// Registry login (user, password) for pulling the image.
    #[serde(default)]
    pub registry_login: Option<(String, String)>,
    /// "cli" (a person), "pipeline", "webhook", "watch".
    #[serde(default = "cli")]
    pub trigger: String,
    /// The commit's author, "Name <email>".
    #[serde(default)]
    pub author: Option<String>,
    /// The commit's checks were skipped with --skip-checks (recorded in the release).
    #[serde(default)]
    pub skip_checks: bool,
    /// Environments this one `requires` that live on other servers, with what the CLI read
    /// there: the version passed their monitor window. The server takes these only for
    /// required environments whose committed config names another server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passed_elsewhere: Vec<PassedElsewhere>,
    /// A promotion across servers: the release live in an environment of another server
    /// whose artifact this deploy ships, digest for digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_from: Option<RemoteRelease>,
}

/// `requires` relayed from another server: `version` passed `environment`'s monitor window
/// there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassedElsewhere {
    pub environment: String,
    pub server: String,
    pub version: String,
}

/// A release of another server (a promotion's source).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteRelease {
    pub server: String,
    pub environment: String,
    pub release: i64,
    pub digest: String,
}

fn cli() -> String {
    "cli".into()
}

/// `POST /v1/rollback`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackBody {
    pub env: String,
    /// A known-good release id or version prefix; default: the rollback target.
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    pub requested_by: String,
    #[serde(default)]
    pub queue: bool,
    #[serde(default)]
    pub registry_login: Option<(String, String)>,
}

/// `POST /v1/promote`: ship exactly the release live in `from` to `to`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PromoteBody {
    pub from: String,
    pub to: String,
    /// Secret values resolved by the caller from the committed config of what is live in
    /// `from`; the server resolves any that are missing.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    pub requested_by: String,
    #[serde(default)]
    pub queue: bool,
    #[serde(default)]
    pub registry_login: Option<(String, String)>,
}

/// `POST /v1/approve` and `/v1/reject` on the unix socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateBody {
    pub env: String,
    pub by: String,
    #[serde(default)]
    pub release: Option<i64>,
    #[serde(default)]
    pub older: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/approve` and `/v1/reject` over TCP: the person is whoever the bearer token was
/// issued to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenGate {
    pub env: String,
    #[serde(default)]
    pub release: Option<i64>,
    #[serde(default)]
    pub older: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/freeze`, `/v1/unfreeze` and `/v1/abort`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvBody {
    pub env: String,
    pub by: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/maintenance`: `on` with the message users see, or off.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaintenanceBody {
    pub env: String,
    pub by: String,
    pub on: bool,
    #[serde(default)]
    pub message: Option<String>,
}

/// `POST /v1/pause`: hold new requests at the edge for at most `max_ms` (default 30 s).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PauseBody {
    pub env: String,
    pub by: String,
    #[serde(default)]
    pub max_ms: Option<u64>,
}

/// `POST /v1/tokens`, `/v1/tokens/revoke`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenBody {
    pub name: String,
    pub by: String,
    /// What the token may do (create only; default `deploy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// What a token may do over the server's HTTPS API. Each role may do what the ones before it
/// may: `read` (status, history, show, logs, pipeline runs), `deploy` (deploy, rollback,
/// promote, approve/reject, freeze/unfreeze, abort, pipeline runs), `admin` (tokens, prune,
/// down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Deploy,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Read, Role::Deploy, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Deploy => "deploy",
            Role::Admin => "admin",
        }
    }

    /// `read`, `deploy` or `admin`.
    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// `POST /v1/checks/run`: a commit's checks alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChecksBody {
    pub rev: String,
}

/// `POST /v1/checks/verdict`: may this commit be built and deployed?
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerdictQuery {
    /// A commit, branch or tag.
    pub rev: String,
    /// The caller builds a dirty working tree (`--allow-dirty`).
    #[serde(default)]
    pub allow_dirty: bool,
    /// The caller skips the checks on purpose (`--skip-checks`, recorded in the release).
    #[serde(default)]
    pub skip_checks: bool,
}

/// `POST /v1/pipeline/run`: what starts a pipeline run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRequest {
    /// A commit, branch or tag; resolved to a full sha.
    pub rev: String,
    /// "cli", "webhook", "watch".
    pub trigger: String,
    pub requested_by: String,
    #[serde(default)]
    pub skip_checks: bool,
}

/// `POST /v1/prune`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PruneBody {
    pub app: String,
    /// Known-good releases per environment to keep (`[retention] keep`).
    pub keep: u32,
    /// Say what would go, remove nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /v1/blobs/missing`: which of these blobs (`sha256:<hex>`) the server lacks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobsQuery {
    pub digests: Vec<String>,
}
