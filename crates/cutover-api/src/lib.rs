//! Every document cutover sends or receives as JSON: request bodies, answers, the NDJSON
//! progress lines of long commands, the views of `status`, `history`, `show` and
//! `pipeline show` (stable: users script against their `--json`), notifications and webhook
//! answers.
//!
//! This crate depends on none of cutover's other crates. The server converts its engine's and
//! ledger's types into these explicitly (the engine and the ledger do not know the wire shape),
//! and the CLI reads them, so a change of a JSON shape is a change of this crate.

mod line;
mod requests;
mod responses;
mod views;

pub use line::{Line, Outcome, RunEvent, RunEventKind};
pub use requests::{
    BlobsQuery, ChecksBody, DeployBody, EnvBody, GateBody, HistoryQuery, LogsQuery,
    MaintenanceBody, PassedElsewhere, PauseBody, PromoteBody, PruneBody, RemoteRelease, Role,
    RollbackBody, RollbackTargetQuery, RunRequest, RunsQuery, TokenBody, TokenGate, VerdictQuery,
};
pub use responses::{
    AccessLogView, BlobsMissing, CertificateEvent, HookAnswer, InstanceLogs, Kept, Notification,
    PassedView, Ping, PipelineRunEvent, PruneReport, Refusal, RefusalsView, RefusedCall,
    ReleaseEvent, Removed, Revoked, ServerInfo, Stopped, TargetView, TokenCreated, TokenEntry,
    Verdict, WhoAmI,
};
pub use views::{
    CertificateView, CheckView, EnvironmentView, EventView, FreezeView, HistoryView, InstanceView,
    LiveView, MaintenanceView, PauseView, PipelineRunView, Promotion, ReleaseRef, ReleaseView,
    RestartView, RunView, RunsView, ShowView, SnapshotView, StatusView,
};
