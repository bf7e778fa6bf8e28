//! Triggers and notifications for the pipeline.
//!
//! - [`verify`] checks a push webhook from GitHub, Gitea/Forgejo or GitLab over the raw request
//!   body (HMAC-SHA256 or token, compared in constant time) and only then parses it into a
//!   [`Push`]. [`ReplayGuard`] remembers delivery ids across restarts.
//! - [`Notifier`] POSTs a [`ReleaseEvent`] as JSON to configured URLs from background tasks, with
//!   retries, so a dead receiver never blocks or fails a deploy.
//!
//! No HTTP server lives here: the server crate hands [`verify`] the request's headers and body.

mod notify;
mod replay;
mod webhook;

pub use notify::{
    redact, render, summary, Format, Notification, Notifier, Receiver, ReleaseEvent, RetryPolicy,
    USER_AGENT,
};
pub use replay::{ReplayGuard, DEFAULT_REPLAY_CAPACITY};
pub use webhook::{verify, Delivery, Forge, Push, Verified, WebhookError};
