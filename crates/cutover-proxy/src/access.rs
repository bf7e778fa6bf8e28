//! The access log: one JSON line per request, written by a thread of its own (serving threads
//! only hand it the line) to `logs/access-<env>.log`, rotated by size.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use cutover_daemon::log::LogFile;
use serde::Serialize;

/// Rotate the access log when it would grow past this; two older files are kept.
const MAX_BYTES: u64 = 16 * 1024 * 1024;

/// One request as the access log records it.
#[derive(Debug, Serialize)]
pub(crate) struct Entry<'a> {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub host: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// Bytes of the response body sent.
    pub bytes: u64,
    pub duration_ms: f64,
    /// The upstream that answered; `null` when the edge answered itself (503, 413, …).
    pub upstream: Option<String>,
    pub instance: Option<&'a str>,
    pub release: Option<i64>,
    pub request_id: &'a str,
}

pub(crate) struct AccessLog {
    lines: mpsc::Sender<String>,
}

impl AccessLog {
    /// Opens (creates) the log and starts its writer thread.
    pub fn open(path: &Path) -> std::io::Result<AccessLog> {
        let mut file = LogFile::open(path, MAX_BYTES)?;
        let (lines, incoming) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                // Whatever has queued up is written in one go.
                while let Ok(first) = incoming.recv() {
                    let mut batch = first;
                    while let Ok(more) = incoming.try_recv() {
                        batch.push_str(&more);
                        if batch.len() > 64 * 1024 {
                            break;
                        }
                    }
                    file.write(batch.as_bytes());
                }
            })?;
        Ok(AccessLog { lines })
    }

    pub fn record(&self, entry: &Entry<'_>) {
        if let Ok(mut line) = serde_json::to_string(entry) {
            line.push('\n');
            let _ = self.lines.send(line);
        }
    }
}

/// The time now as the access log writes it.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Milliseconds with a fraction.
pub(crate) fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}
