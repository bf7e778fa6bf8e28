//! The access log: one JSON line per request to `logs/access-<env>.log`, rotated by size.
//! Serving threads format their line straight into a shared buffer (no allocation, no
//! syscall, no wakeup per request); a thread of its own writes the buffer out every
//! [`FLUSH_EVERY`] and once more when the edge stops.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_daemon::log::LogFile;
use serde::Serialize;

/// Rotate the access log when it would grow past this; two older files are kept.
const MAX_BYTES: u64 = 16 * 1024 * 1024;

/// How often the writer thread writes what has been logged.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// What may wait for the writer; beyond it lines are dropped (and counted) rather than let a
/// stalled disk grow the edge's memory.
const MAX_PENDING: usize = 8 * 1024 * 1024;

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
    pending: Arc<Mutex<Pending>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
    /// Set by [`AccessLog::close`]: write what is left and end.
    closing: bool,
}

impl AccessLog {
    /// Opens (creates) the log and starts its writer thread, which ends (after a last write)
    /// once the log is dropped.
    pub fn open(path: &Path) -> std::io::Result<AccessLog> {
        let mut file = LogFile::open(path, MAX_BYTES)?;
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let shared = pending.clone();
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || loop {
                std::thread::park_timeout(FLUSH_EVERY);
                let (batch, dropped, closing) = {
                    let mut p = shared.lock().unwrap_or_else(|e| e.into_inner());
                    (
                        std::mem::take(&mut p.bytes),
                        std::mem::take(&mut p.dropped),
                        p.closing,
                    )
                };
                let last = closing || Arc::strong_count(&shared) == 1;
                if !batch.is_empty() {
                    file.write(&batch);
                }
                if dropped > 0 {
                    file.line(&format!(
                        "{dropped} access log line(s) dropped: the disk did not keep up"
                    ));
                }
                if last {
                    return;
                }
            })?;
        Ok(AccessLog {
            pending,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Writes what is left and stops the writer (the edge is stopping).
    pub fn close(&self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closing = true;
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            writer.thread().unpark();
            let _ = writer.join();
        }
    }

    pub fn record(&self, entry: &Entry<'_>) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.bytes.len() > MAX_PENDING {
            p.dropped += 1;
            return;
        }
        let start = p.bytes.len();
        if serde_json::to_writer(&mut p.bytes, entry).is_ok() {
            p.bytes.push(b'\n');
        } else {
            p.bytes.truncate(start);
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
