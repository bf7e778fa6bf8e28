//! The client side of the admin protocol, used by the engine and the server; plus starting a
//! detached proxy process and finding a running one.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::{DrainOutcome, ProxyError, ProxyOptions, ProxyStatus};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `shutdown` waits for the proxy to finish its in-flight requests and close.
const STOP_TIMEOUT: Duration = Duration::from_secs(8);

/// Talks to one environment's edge proxy over its admin socket.
#[derive(Debug, Clone)]
pub struct ProxyClient {
    socket: PathBuf,
    env: String,
}

impl ProxyClient {
    pub fn new(admin_socket: impl Into<PathBuf>) -> ProxyClient {
        let socket = admin_socket.into();
        // Sockets are named `proxy-<env>.sock` (see `ProxyOptions::new`): name the environment
        // in errors when the name says it.
        let env = socket
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.strip_prefix("proxy-"))
            .unwrap_or("this environment")
            .to_string();
        ProxyClient { socket, env }
    }

    /// The client of the proxy described by `options`.
    pub fn for_options(options: &ProxyOptions) -> ProxyClient {
        ProxyClient {
            socket: options.admin_socket.clone(),
            env: options.env.clone(),
        }
    }

    pub fn admin_socket(&self) -> &Path {
        &self.socket
    }

    pub async fn status(&self) -> Result<ProxyStatus, ProxyError> {
        let (reply, _) = self.call(json!({"op": "status"}), REPLY_TIMEOUT).await?;
        serde_json::from_value(reply).map_err(|e| self.bad_reply(e))
    }

    /// Routes all traffic to `upstreams` (none: answer 503). Returns the new generation.
    pub async fn set_upstreams(&self, upstreams: &[SocketAddr]) -> Result<u64, ProxyError> {
        let request = json!({"op": "set", "upstreams": upstreams});
        let (reply, _) = self.call(request, REPLY_TIMEOUT).await?;
        reply
            .get("generation")
            .and_then(Value::as_u64)
            .ok_or_else(|| self.bad_reply("no generation"))
    }

    /// Waits until no request is in flight to `upstreams`, or `timeout` passes.
    pub async fn drain(
        &self,
        upstreams: &[SocketAddr],
        timeout: Duration,
    ) -> Result<DrainOutcome, ProxyError> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let request = json!({"op": "drain", "upstreams": upstreams, "timeout_ms": timeout_ms});
        let (reply, _) = self
            .call(request, timeout.saturating_add(Duration::from_secs(2)))
            .await?;
        let drained = reply.get("drained").and_then(Value::as_bool);
        let remaining = reply.get("remaining").and_then(Value::as_u64);
        match (drained, remaining) {
            (Some(drained), Some(remaining)) => Ok(DrainOutcome { drained, remaining }),
            _ => Err(self.bad_reply("no drained/remaining")),
        }
    }

    /// Asks the proxy to stop, and returns once it has closed its admin connection (it has
    /// stopped serving), or after a few seconds.
    pub async fn shutdown(&self) -> Result<(), ProxyError> {
        let (_, mut stream) = self.call(json!({"op": "shutdown"}), REPLY_TIMEOUT).await?;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(STOP_TIMEOUT, stream.read_to_end(&mut rest)).await;
        Ok(())
    }

    /// Sends one request; returns the reply (checked for `ok`) and the connection.
    async fn call(
        &self,
        request: Value,
        timeout: Duration,
    ) -> Result<(Value, BufReader<UnixStream>), ProxyError> {
        let op = request
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.socket)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => return Err(self.not_running(source)),
                Err(_) => return Err(self.timeout(&op, CONNECT_TIMEOUT)),
            };
        let mut stream = BufReader::new(stream);
        let mut line = request.to_string().into_bytes();
        line.push(b'\n');
        let exchange = async {
            stream.get_mut().write_all(&line).await?;
            let mut reply = String::new();
            stream.read_line(&mut reply).await?;
            Ok::<String, std::io::Error>(reply)
        };
        let reply = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(source)) => return Err(self.not_running(source)),
            Err(_) => return Err(self.timeout(&op, timeout)),
        };
        let reply = parse_reply(&self.env, &reply)?;
        Ok((reply, stream))
    }

    fn not_running(&self, source: std::io::Error) -> ProxyError {
        ProxyError::NotRunning {
            env: self.env.clone(),
            socket: self.socket.clone(),
            source,
        }
    }

    fn timeout(&self, op: &str, after: Duration) -> ProxyError {
        ProxyError::Timeout {
            env: self.env.clone(),
            op: op.to_string(),
            after,
        }
    }

    fn bad_reply(&self, detail: impl std::fmt::Display) -> ProxyError {
        ProxyError::BadReply {
            env: self.env.clone(),
            detail: detail.to_string(),
        }
    }
}

/// Checks one reply line: JSON, with `"ok": true`.
fn parse_reply(env: &str, line: &str) -> Result<Value, ProxyError> {
    if line.trim().is_empty() {
        return Err(ProxyError::BadReply {
            env: env.to_string(),
            detail: "the connection closed without a reply".to_string(),
        });
    }
    let reply: Value = serde_json::from_str(line).map_err(|e| ProxyError::BadReply {
        env: env.to_string(),
        detail: e.to_string(),
    })?;
    if reply.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(reply)
    } else {
        Err(ProxyError::Refused {
            env: env.to_string(),
            message: reply
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
                .to_string(),
        })
    }
}

/// The pid of this environment's proxy if one runs (its pid file names a live `proxy` process
/// of this environment).
pub fn running_pid(options: &ProxyOptions) -> Option<u32> {
    let pid = cutover_daemon::read_pid(&options.pid_file)?;
    cutover_daemon::pid_runs(pid, &["proxy", &options.env]).then_some(pid)
}

/// Starts `exe proxy --state-dir D --env E --listen ADDR --detach` and waits (up to 5 s) until
/// its admin socket answers `status`. If the process dies first, the error carries the last
/// lines of its log (e.g. "listen address … is already in use"). Blocking: from async code,
/// call it inside `spawn_blocking`.
pub fn spawn(
    exe: &Path,
    state_dir: &Path,
    env: &str,
    listen: SocketAddr,
) -> Result<u32, ProxyError> {
    let options = ProxyOptions::new(state_dir, env, listen);
    let mut command = Command::new(exe);
    command
        .arg("proxy")
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--env")
        .arg(env)
        .arg("--listen")
        .arg(listen.to_string());
    let pid =
        cutover_daemon::spawn_detached(command, None).map_err(|e| ProxyError::StartFailed {
            env: env.to_string(),
            detail: e.to_string(),
        })?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if status_pid_blocking(&options.admin_socket) == Some(pid) {
            return Ok(pid);
        }
        if !cutover_daemon::pid_alive(pid) {
            // The log may still be being written by the exiting process.
            std::thread::sleep(Duration::from_millis(20));
            return Err(ProxyError::StartFailed {
                env: env.to_string(),
                detail: log_tail(&options.log_file, 5)
                    .unwrap_or_else(|| "it exited without a word".to_string()),
            });
        }
        if Instant::now() >= deadline {
            return Err(ProxyError::StartFailed {
                env: env.to_string(),
                detail: format!(
                    "process {pid} did not answer on {} within 5 s{}",
                    options.admin_socket.display(),
                    log_tail(&options.log_file, 5)
                        .map(|t| format!("; its log ends with: {t}"))
                        .unwrap_or_default()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The pid a proxy reports on `socket`, if one answers.
fn status_pid_blocking(socket: &Path) -> Option<u32> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .ok()?;
    stream.write_all(b"{\"op\":\"status\"}\n").ok()?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).ok()?;
    let reply: Value = serde_json::from_str(&line).ok()?;
    reply
        .get("pid")
        .and_then(Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
}

fn log_tail(path: &Path, lines: usize) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    (!tail.is_empty()).then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_comes_from_the_socket_name() {
        let client = ProxyClient::new("/tmp/x/proxy-staging.sock");
        assert_eq!(client.env, "staging");
        assert_eq!(ProxyClient::new("/tmp/other.sock").env, "this environment");
    }

    #[test]
    fn replies_are_checked() {
        assert!(parse_reply("e", "{\"ok\":true}").is_ok());
        let refused = parse_reply("e", "{\"ok\":false,\"error\":\"nope\"}").unwrap_err();
        assert!(refused.to_string().contains("nope"), "{refused}");
        assert!(matches!(
            parse_reply("e", "garbage"),
            Err(ProxyError::BadReply { .. })
        ));
        assert!(matches!(
            parse_reply("e", ""),
            Err(ProxyError::BadReply { .. })
        ));
    }
}
