//! The NDJSON answer of a long command (deploy, rollback, approve, a pipeline run, a build):
//! progress lines, then one outcome line.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One line of progress or the final outcome: `{"type":"step","message":…}`,
/// `{"type":"detail","message":…}` or `{"type":"outcome","exit_code":…,…}`.
///
/// The one progress type of cutover's wire: the server streams it, a build in the CLI's own
/// process reports with it, and the CLI renders it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Line {
    /// A step ("building 9f3a2c1d4e5f", "cutting over").
    Step { message: String },
    /// Supporting detail (a build's output, a probe failure).
    Detail { message: String },
    /// The release the command created (`{"type":"release","id":7}`), sent once it exists, so
    /// that a client whose connection breaks off knows what to follow.
    Release { id: i64 },
    /// Sent while nothing else is (`{"type":"heartbeat"}`), so that a client can tell a quiet
    /// server from a dead connection.
    Heartbeat,
    /// How the command ended; the last line.
    Outcome(Outcome),
}

impl Line {
    pub fn step(message: impl Into<String>) -> Line {
        Line::Step {
            message: message.into(),
        }
    }

    pub fn detail(message: impl Into<String>) -> Line {
        Line::Detail {
            message: message.into(),
        }
    }
}

/// How a command that changes an environment ended. `exit_code` is the CLI's: `0` done ·
/// `1` refused, nothing changed · `3` a new instance failed and the rollback target serves ·
/// `4` it failed and restoring failed too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub exit_code: i32,
    pub release: Option<i64>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The failing instance's last log lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        self.exit_code == 0
    }
}

/// A progress line of a pipeline run as kept in its event file and shown by
/// `pipeline show --json`: `{"at":…,"message":…,"type":"step"|"detail"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    /// When it happened (RFC 3339 with `+00:00`); absent in runs kept before times were.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339_offset"
    )]
    pub at: Option<DateTime<Utc>>,
    pub message: String,
    #[serde(rename = "type")]
    pub kind: RunEventKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunEventKind {
    Step,
    Detail,
}

impl RunEvent {
    /// The kept form of a progress line (an outcome is not kept: the run records it).
    pub fn new(line: &Line, at: DateTime<Utc>) -> Option<RunEvent> {
        let (kind, message) = match line {
            Line::Step { message } => (RunEventKind::Step, message),
            Line::Detail { message } => (RunEventKind::Detail, message),
            Line::Outcome(_) | Line::Release { .. } | Line::Heartbeat => return None,
        };
        Some(RunEvent {
            at: Some(at),
            message: message.clone(),
            kind,
        })
    }
}

/// Times written as `2025-01-02T03:04:05.123456789+00:00`, as run events always were.
mod rfc3339_offset {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(t) => s.serialize_str(&t.to_rfc3339()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}
