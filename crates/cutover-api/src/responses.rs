//! What the server answers besides the views, and what it sends to others (notifications,
//! webhook answers).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::views::ReleaseView;

/// A refusal: `{"error": "...", "hint": "..."}`, the answer of every endpoint that says no
/// (with a 4xx or 5xx status). Shown as `error:` and `hint:` lines, exit code 1. The CLI uses
/// it for its own refusals too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    #[serde(rename = "error")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Refusal {
    pub fn new(message: impl Into<String>, hint: impl Into<Option<String>>) -> Refusal {
        Refusal {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

/// `GET /v1/ping`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ping {
    pub pid: u32,
    pub version: String,
    pub state_dir: String,
    /// The binary the server was started from was replaced on disk since (a new cutover was
    /// installed): `cutover server restart` moves the server, and the edge, to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub binary_replaced: bool,
}

/// A release with the config committed in its version, so that the caller can resolve that
/// config's secrets before asking for it (`GET /v1/rollback-target/{env}`, and
/// `GET /v1/live/{env}` before a promotion).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetView {
    pub release: ReleaseView,
    pub config_text: String,
}

/// The server's answer to a [`crate::VerdictQuery`]: whether a commit's checks let it be
/// built and deployed. `{"verdict":"allowed",…}`, `{"verdict":"run-checks",…}` or
/// `{"verdict":"refused",…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// It may; `reason` says why (its checks passed, it declares none, it is built already…).
    Allowed { reason: String },
    /// Its checks never ran: run them first (`POST /v1/checks/run` with `sha`); it may if they
    /// pass. `message` says so.
    RunChecks { sha: String, message: String },
    /// It may not: its checks failed. Nothing is built.
    Refused {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
    },
}

/// `GET /v1/logs/{env}`: one entry per instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceLogs {
    pub id: String,
    pub release: i64,
    /// `null` where the runtime keeps the output itself (a container engine).
    pub log_file: Option<String>,
    pub lines: Vec<String>,
}

/// `GET /v1/logs/{env}/access`: the last lines of the environment's access log (one JSON
/// document each: time, host, method, path, status, bytes, duration_ms, upstream, instance,
/// release, request_id), and the file, to follow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessLogView {
    pub env: String,
    pub log_file: String,
    pub lines: Vec<String>,
}

/// `POST /v1/prune`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PruneReport {
    pub kept: Vec<Kept>,
    pub removed: Vec<Removed>,
    /// Instances of releases that no longer run, stopped (on Swarm: services and secrets
    /// removed), one line each: `<id> (release N in ENV)`.
    #[serde(default)]
    pub instances_removed: Vec<String>,
    pub release_dirs_removed: usize,
    pub bytes_freed: u64,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kept {
    pub version: String,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Removed {
    pub version: String,
    /// The image references removed from the engine, if the artifact had an image.
    pub images: Vec<String>,
    /// Why an image could not be removed, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /v1/tokens`: the token, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenCreated {
    pub name: String,
    pub token: String,
}

/// `GET /v1/tokens`: who has a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenEntry {
    pub created_at: String,
    pub name: String,
    pub role: crate::Role,
}

/// `POST /v1/tokens/revoke`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revoked {
    pub revoked: String,
}

/// `POST /v1/down`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stopped {
    pub stopped: bool,
}

/// The answer to a push webhook: `{"started": …}`, `{"ignored": …}`, `{"pong": …}` or
/// `{"error": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookAnswer {
    Started(String),
    Ignored(String),
    Pong(String),
    Error(String),
}

/// What a `[[notify]]` receiver is sent (its `"json"` format): the fields of the event and a
/// `kind` naming which event it is, so that receivers can tell events apart as kinds are added.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Notification {
    /// A release changed state: `{"kind":"release","app":…,"state":"live",…}`.
    Release(ReleaseEvent),
    /// A pipeline run ended without shipping (a check failed, it was refused, a deploy rolled
    /// back): `{"kind":"pipeline-run","run":…,"state":"failed",…}`. Above all for the runs a
    /// webhook or `watch` started, which nobody watches.
    PipelineRun(PipelineRunEvent),
    /// The edge could not obtain or renew a host's certificate by ACME (the old one, if any,
    /// keeps serving): `{"kind":"certificate","host":…,"error":…,…}`.
    Certificate(CertificateEvent),
}

/// A failed ACME attempt for a host, as notifications carry it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertificateEvent {
    pub app: String,
    pub environment: String,
    pub host: String,
    /// Until when the certificate that still serves is valid; none: nothing serves the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<DateTime<Utc>>,
    pub error: String,
    pub at: DateTime<Utc>,
}

/// How a pipeline run ended, as notifications carry it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PipelineRunEvent {
    pub app: String,
    pub run: i64,
    /// The commit (or what was asked for, when it could not be resolved).
    pub sha: String,
    /// "cli", "webhook", "watch".
    pub trigger: String,
    pub requested_by: String,
    /// "refused" or "failed".
    pub state: String,
    pub exit_code: i32,
    pub message: String,
    pub at: DateTime<Utc>,
}

impl From<ReleaseEvent> for Notification {
    fn from(event: ReleaseEvent) -> Notification {
        Notification::Release(event)
    }
}

/// A release state change, as notifications carry it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReleaseEvent {
    pub app: String,
    pub environment: String,
    pub release: i64,
    pub version: String,
    pub digest: String,
    /// `"awaiting-approval"`, `"live"`, `"failed"`, `"rolled-back"`, …
    pub state: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// `<state dir>/server.json`, written by a server when it starts: what `cutover server info`
/// shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub pid: u32,
    pub version: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// `https://ADDR` when the server serves its API over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<String>,
    /// `sha256:<hex>` of its HTTPS certificate, which clients pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The serving options it was started with (`--listen`, `--tls-cert`, `--tls-key` and
    /// their values): `cutover server restart` starts the next server with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

/// `GET /v1/refusals`: the calls the server refused (no token, an invalid one, a role too
/// small), newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusalsView {
    pub refusals: Vec<RefusedCall>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusedCall {
    pub at: DateTime<Utc>,
    /// Whose token the call carried, when it was a valid one.
    pub token: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub reason: String,
}

/// The answer to `POST /v1/blobs/missing`: the ones to upload (`PUT /v1/blobs/{digest}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobsMissing {
    pub missing: Vec<String>,
}

/// `GET /v1/passed/{env}/{version}`: whether the version passed the environment's monitor
/// window on this server (what `requires` asks of another server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassedView {
    pub environment: String,
    pub version: String,
    pub passed: bool,
}

/// `GET /v1/whoami`: whose token the call carried, and its role (the local socket's caller is
/// the machine's user, with every right).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI {
    pub name: String,
    pub role: crate::Role,
}
