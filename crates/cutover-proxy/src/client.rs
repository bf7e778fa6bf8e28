//! The client side of the admin protocol, used by the engine and the server; plus starting the
//! machine's edge as a detached process and finding a running one.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::protocol::{self, DrainOutcome, Hold, ProxyStatus, Reply, Request, Route, RouteKey};
use crate::{ProxyError, ProxyOptions};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `shutdown` waits for the proxy to finish its in-flight requests and close.
const STOP_TIMEOUT: Duration = Duration::from_secs(8);
/// How long `spawn` waits for a live new proxy to answer (a dead one is reported at once). A
/// loaded machine took more than 5 s.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a drain without a timeout is waited for (the edge's drain timeout is shorter).
const LONGEST_DRAIN: Duration = Duration::from_secs(24 * 3600);

/// Talks to the machine's edge over its admin socket.
#[derive(Debug, Clone)]
pub struct ProxyClient {
    socket: PathBuf,
}

impl ProxyClient {
    pub fn new(admin_socket: impl Into<PathBuf>) -> ProxyClient {
        ProxyClient {
            socket: admin_socket.into(),
        }
    }

    /// The client of the edge described by `options`.
    pub fn for_options(options: &ProxyOptions) -> ProxyClient {
        ProxyClient::new(options.admin_socket.clone())
    }

    pub fn admin_socket(&self) -> &Path {
        &self.socket
    }

    pub async fn status(&self) -> Result<ProxyStatus, ProxyError> {
        match self.call(&Request::Status, REPLY_TIMEOUT).await?.0 {
            Reply::Status(status) => Ok(status),
            other => Err(self.unexpected(&Request::Status, &other)),
        }
    }

    /// Installs `route` (replacing the route of its key): its traffic goes to its upstreams by
    /// their weights (none, or only weight 0: 503). Refused (`Claimed`) when another owner's
    /// route has its address or a host. Returns the new generation.
    pub async fn set(&self, route: Route) -> Result<u64, ProxyError> {
        let request = Request::Set(route);
        match self.call(&request, REPLY_TIMEOUT).await?.0 {
            Reply::Set { generation } => Ok(generation),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    /// Obtains a new certificate for `host` by ACME now; returns its notAfter (seconds since
    /// the epoch).
    pub async fn renew(&self, host: &str) -> Result<i64, ProxyError> {
        let request = Request::Renew {
            host: host.to_string(),
        };
        // An order takes a few seconds; validation and issuance at most two minutes.
        match self.call(&request, Duration::from_secs(150)).await?.0 {
            Reply::Renew { not_after, .. } => Ok(not_after),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    /// Whether a `set` of `route` would be taken; changes nothing.
    pub async fn check(&self, route: Route) -> Result<(), ProxyError> {
        let request = Request::Check(route);
        match self.call(&request, REPLY_TIMEOUT).await?.0 {
            Reply::Check => Ok(()),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    /// Removes the routes of `owner` (only `env`'s when given). Returns how many routes the
    /// edge still serves; with none left, it stops.
    pub async fn remove(&self, owner: &str, env: Option<&str>) -> Result<usize, ProxyError> {
        let request = Request::Remove {
            owner: owner.to_string(),
            env: env.map(str::to_string),
        };
        let (reply, mut stream) = self.call(&request, REPLY_TIMEOUT).await?;
        match reply {
            Reply::Remove { left, .. } => {
                if left == 0 {
                    // The edge stops: wait until it has closed.
                    let mut rest = Vec::new();
                    let _ = tokio::time::timeout(STOP_TIMEOUT, stream.read_to_end(&mut rest)).await;
                }
                Ok(left)
            }
            other => Err(self.unexpected(&request, &other)),
        }
    }

    /// Puts a hold on the new requests of `route` (maintenance, pause), or lifts it (`None`).
    /// Returns the new generation.
    pub async fn hold(&self, route: RouteKey, hold: Option<Hold>) -> Result<u64, ProxyError> {
        let request = Request::Hold { route, hold };
        match self.call(&request, REPLY_TIMEOUT).await?.0 {
            Reply::Hold { generation } => Ok(generation),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    /// Waits until no request is in flight to `upstreams`, or `timeout` passes (then their
    /// open tunnels are closed). Without a timeout, the edge waits its routes' drain timeout.
    pub async fn drain(
        &self,
        upstreams: &[SocketAddr],
        timeout: Option<Duration>,
    ) -> Result<DrainOutcome, ProxyError> {
        let request = Request::Drain {
            upstreams: upstreams.to_vec(),
            timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        let wait = timeout
            .unwrap_or(LONGEST_DRAIN)
            .saturating_add(crate::admin::CLOSE_TUNNELS + Duration::from_secs(2));
        match self.call(&request, wait).await?.0 {
            Reply::Drain(outcome) => Ok(outcome),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    /// Asks the proxy to stop, and returns once it has closed its admin connection (it has
    /// stopped serving), or after a few seconds. An edge of an older cutover, whose replies this
    /// client cannot read, stops the same way.
    pub async fn shutdown(&self) -> Result<(), ProxyError> {
        let (line, mut stream) = self.exchange(&Request::Shutdown, REPLY_TIMEOUT).await?;
        if let Ok(Reply::Error(error)) = protocol::parse_reply(&line) {
            return Err(self.refused(error));
        }
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(STOP_TIMEOUT, stream.read_to_end(&mut rest)).await;
        Ok(())
    }

    /// Sends one request; returns its reply (an error reply is `Refused`) and the connection.
    async fn call(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<(Reply, BufReader<UnixStream>), ProxyError> {
        let (line, stream) = self.exchange(request, timeout).await?;
        match protocol::parse_reply(&line) {
            Ok(Reply::Error(error)) => Err(self.refused(error)),
            Ok(reply) => Ok((reply, stream)),
            Err(detail) => Err(self.bad_reply(detail)),
        }
    }

    /// Sends one request line and reads one reply line.
    async fn exchange(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<(String, BufReader<UnixStream>), ProxyError> {
        let op = request.op();
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.socket)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => return Err(self.not_running(source)),
                Err(_) => return Err(self.timeout(op, CONNECT_TIMEOUT)),
            };
        let mut stream = BufReader::new(stream);
        let line = protocol::to_line(request);
        let exchange = async {
            stream.get_mut().write_all(&line).await?;
            let mut reply = String::new();
            stream.read_line(&mut reply).await?;
            Ok::<String, std::io::Error>(reply)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(reply)) => Ok((reply, stream)),
            Ok(Err(source)) => Err(self.not_running(source)),
            Err(_) => Err(self.timeout(op, timeout)),
        }
    }

    fn not_running(&self, source: std::io::Error) -> ProxyError {
        ProxyError::NotRunning {
            socket: self.socket.clone(),
            source,
        }
    }

    fn timeout(&self, op: &str, after: Duration) -> ProxyError {
        ProxyError::Timeout {
            op: op.to_string(),
            after,
        }
    }

    fn refused(&self, error: protocol::AdminError) -> ProxyError {
        ProxyError::Refused { error }
    }

    fn bad_reply(&self, detail: impl std::fmt::Display) -> ProxyError {
        ProxyError::BadReply {
            detail: detail.to_string(),
        }
    }

    fn unexpected(&self, request: &Request, reply: &Reply) -> ProxyError {
        self.bad_reply(format!("`{}` was answered with {reply:?}", request.op()))
    }
}

/// The pid of the edge of `options` if one runs (its pid file names a live `proxy` process of
/// that directory).
pub fn running_pid(options: &ProxyOptions) -> Option<u32> {
    let pid = cutover_daemon::read_pid(&options.pid_file)?;
    let dir = options.dir.to_string_lossy();
    cutover_daemon::pid_runs(pid, &["proxy", &dir]).then_some(pid)
}

/// Makes sure the edge of `dir` runs: returns the pid of the one that answers, or starts
/// `exe proxy --edge-dir DIR --detach` and waits (up to 15 s) until it answers `status`. Under
/// the edge's start lock, so that servers starting together start one. If the process dies
/// first, the error carries the last lines of its log. Blocking: from async code, call it
/// inside `spawn_blocking`.
pub fn spawn(exe: &Path, dir: &Path) -> Result<u32, ProxyError> {
    let options = ProxyOptions::new(dir);
    let start_failed = |detail: String| ProxyError::StartFailed { detail };
    crate::prepare_edge_dir(dir).map_err(|e| {
        start_failed(format!(
            "cannot create the edge directory {}: {e}",
            dir.display()
        ))
    })?;
    let _lock = cutover_daemon::FileLock::acquire(&options.start_lock)
        .map_err(|e| start_failed(format!("cannot take {}: {e}", options.start_lock.display())))?;
    if let Some(pid) = status_pid_blocking(&options.admin_socket) {
        return Ok(pid);
    }
    launch(exe, dir, &options, false)
}

/// Starts `cutover proxy --edge-dir DIR [--takeover]` detached and waits until it answers on
/// the admin socket as itself; its pid. A process that exits first is reported with the end of
/// its log; one that stays silent past [`START_TIMEOUT`], too.
fn launch(
    exe: &Path,
    dir: &Path,
    options: &ProxyOptions,
    takeover: bool,
) -> Result<u32, ProxyError> {
    let start_failed = |detail: String| ProxyError::StartFailed { detail };
    let mut command = Command::new(exe);
    command.arg("proxy").arg("--edge-dir").arg(dir);
    if takeover {
        command.arg("--takeover");
    }
    let pid =
        cutover_daemon::spawn_detached(command, None).map_err(|e| start_failed(e.to_string()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if status_pid_blocking(&options.admin_socket) == Some(pid) {
            return Ok(pid);
        }
        if !cutover_daemon::pid_alive(pid) {
            // The log may still be being written by the exiting process.
            std::thread::sleep(Duration::from_millis(20));
            return Err(start_failed(
                log_tail(&options.log_file, 5)
                    .unwrap_or_else(|| "it exited without a word".to_string()),
            ));
        }
        if Instant::now() >= deadline {
            return Err(start_failed(format!(
                "process {pid} did not answer on {} within {} s{}",
                options.admin_socket.display(),
                START_TIMEOUT.as_secs(),
                log_tail(&options.log_file, 5)
                    .map(|t| format!("; its log ends with: {t}"))
                    .unwrap_or_default()
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// What an upgrade did: the edge that ran, and the one that serves now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgraded {
    pub old_pid: u32,
    pub old_version: String,
    pub new_pid: u32,
    /// The running edge could not hand its sockets over (an older edge): it was stopped and the
    /// new one opened them again, with a short gap.
    pub restarted: bool,
}

/// Replaces the edge of `dir` by a new process of `exe` that takes its listening sockets over
/// (`handover`): no connection is refused; the old edge drains and exits. An edge too old to
/// hand over is stopped and started again instead. Blocking.
pub fn upgrade(exe: &Path, dir: &Path) -> Result<Upgraded, ProxyError> {
    let options = ProxyOptions::new(dir);
    let start_failed = |detail: String| ProxyError::StartFailed { detail };
    let _lock = cutover_daemon::FileLock::acquire(&options.start_lock)
        .map_err(|e| start_failed(format!("cannot take {}: {e}", options.start_lock.display())))?;
    let old = status_blocking(&options.admin_socket).ok_or_else(|| ProxyError::NotRunning {
        socket: options.admin_socket.clone(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no edge answers"),
    })?;
    if old.protocol < 5 {
        // No `handover` before protocol 5: stop it, start the new one.
        let _ = shutdown_blocking(&options.admin_socket);
        drop(_lock);
        let new_pid = spawn(exe, dir)?;
        return Ok(Upgraded {
            old_pid: old.pid,
            old_version: old.version,
            new_pid,
            restarted: true,
        });
    }
    let new_pid = launch(exe, dir, &options, true)?;
    Ok(Upgraded {
        old_pid: old.pid,
        old_version: old.version,
        new_pid,
        restarted: false,
    })
}

/// Asks the edge on `socket` to stop and waits until it has closed the connection.
fn shutdown_blocking(socket: &Path) -> Option<()> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(STOP_TIMEOUT)).ok()?;
    stream
        .write_all(&protocol::to_line(&Request::Shutdown))
        .ok()?;
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut rest);
    Some(())
}

/// What the edge on `socket` reports, if one answers.
pub fn status_blocking(socket: &Path) -> Option<ProxyStatus> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    stream
        .write_all(&protocol::to_line(&Request::Status))
        .ok()?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).ok()?;
    match protocol::parse_reply(&line).ok()? {
        Reply::Status(status) => Some(status),
        _ => None,
    }
}

/// The pid the edge on `socket` reports, if one answers.
fn status_pid_blocking(socket: &Path) -> Option<u32> {
    status_blocking(socket).map(|s| s.pid)
}

fn log_tail(path: &Path, lines: usize) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    (!tail.is_empty()).then_some(tail)
}
