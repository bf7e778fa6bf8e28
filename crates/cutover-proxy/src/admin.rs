//! The admin protocol: newline-delimited JSON on a unix socket, one reply line per request line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Mutex};

use crate::routes::{Routes, RoutesFile};
use crate::ProxyStatus;

/// Longest request line accepted; the socket is private, this only guards against mistakes.
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum AdminRequest {
    Status,
    Set {
        upstreams: Vec<SocketAddr>,
    },
    Drain {
        upstreams: Vec<SocketAddr>,
        #[serde(default = "default_drain_ms")]
        timeout_ms: u64,
    },
    Shutdown,
}

fn default_drain_ms() -> u64 {
    30_000
}

/// What the admin side shares with the proxy.
pub(crate) struct Admin {
    pub env: String,
    pub listen: SocketAddr,
    pub routes_file: PathBuf,
    pub routes: Arc<Routes>,
    /// Serializes `set`s, so that generations and the file on disk stay in step.
    pub set_lock: Mutex<()>,
    pub shutdown: watch::Sender<bool>,
}

#[derive(Serialize)]
struct StatusReply<'a> {
    ok: bool,
    #[serde(flatten)]
    status: &'a ProxyStatus,
}

impl Admin {
    pub async fn serve(self: Arc<Self>, listener: UnixListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(self.clone().connection(stream));
                }
                Err(e) => {
                    eprintln!("edge proxy for {}: admin accept failed: {e}", self.env);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn connection(self: Arc<Self>, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = match (&mut reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(n) => n,
                Err(_) => return,
            };
            if n == 0 {
                return;
            }
            if line.trim_ascii().is_empty() {
                continue;
            }
            let too_long = line.len() >= MAX_LINE && line.last() != Some(&b'\n');
            let (reply, stop) = if too_long {
                (error_reply("request line too long"), false)
            } else {
                self.answer(&line).await
            };
            let mut bytes = reply.to_string().into_bytes();
            bytes.push(b'\n');
            if write.write_all(&bytes).await.is_err() || write.flush().await.is_err() {
                return;
            }
            if stop {
                self.shutdown.send_replace(true);
            }
            if too_long {
                return;
            }
        }
    }

    /// The reply to one request line, and whether to shut down once it is sent.
    async fn answer(&self, line: &[u8]) -> (Value, bool) {
        let request: AdminRequest = match serde_json::from_slice(line) {
            Ok(request) => request,
            Err(e) => return (error_reply(&format!("bad request: {e}")), false),
        };
        match request {
            AdminRequest::Status => {
                let status = self.status();
                let reply = serde_json::to_value(StatusReply {
                    ok: true,
                    status: &status,
                })
                .unwrap_or_else(|e| error_reply(&e.to_string()));
                (reply, false)
            }
            AdminRequest::Set { upstreams } => (self.set(upstreams).await, false),
            AdminRequest::Drain {
                upstreams,
                timeout_ms,
            } => (self.drain(&upstreams, timeout_ms).await, false),
            AdminRequest::Shutdown => {
                eprintln!("edge proxy for {}: shutting down (asked)", self.env);
                (json!({"ok": true}), true)
            }
        }
    }

    fn status(&self) -> ProxyStatus {
        ProxyStatus {
            env: self.env.clone(),
            listen: self.listen,
            pid: std::process::id(),
            generation: self.routes.generation(),
            upstreams: self.routes.upstreams(),
            inflight: self.routes.inflight(),
        }
    }

    async fn set(&self, upstreams: Vec<SocketAddr>) -> Value {
        let _serial = self.set_lock.lock().await;
        let next = RoutesFile {
            generation: self.routes.generation() + 1,
            upstreams,
        };
        // Persist first: a proxy restarted after this reply serves what it was told.
        let path = self.routes_file.clone();
        let to_save = next.clone();
        let saved = tokio::task::spawn_blocking(move || to_save.save(&path)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return error_reply(&format!(
                    "could not write {}: {e}",
                    self.routes_file.display()
                ))
            }
            Err(e) => return error_reply(&format!("could not write the routes: {e}")),
        }
        self.routes.install(&next);
        eprintln!(
            "edge proxy for {}: generation {} routes to {}",
            self.env,
            next.generation,
            describe(&next.upstreams)
        );
        json!({"ok": true, "generation": next.generation})
    }

    async fn drain(&self, upstreams: &[SocketAddr], timeout_ms: u64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
        loop {
            let remaining = self.routes.inflight_to(upstreams);
            if remaining == 0 {
                return json!({"ok": true, "drained": true, "remaining": 0});
            }
            if tokio::time::Instant::now() >= deadline {
                return json!({"ok": true, "drained": false, "remaining": remaining});
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn error_reply(message: &str) -> Value {
    json!({"ok": false, "error": message})
}

pub(crate) fn describe(upstreams: &[SocketAddr]) -> String {
    if upstreams.is_empty() {
        "nothing (503)".to_string()
    } else {
        upstreams
            .iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
