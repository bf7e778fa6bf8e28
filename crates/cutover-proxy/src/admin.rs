//! The proxy's side of the admin protocol ([`crate::protocol`]): one reply line per request
//! line on a unix socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Mutex};

use crate::protocol::{
    self, AdminError, DrainOutcome, ErrorCode, Hold, ProxyStatus, Reply, Request, Route, RouteKey,
    PROTOCOL,
};
use crate::routes::{serves, Routes, RoutesFile};

/// Longest request line accepted; the socket is private, this only guards against mistakes.
const MAX_LINE: usize = 1 << 20;

/// How long a drain past its timeout waits for the tunnels it closed to go.
pub(crate) const CLOSE_TUNNELS: Duration = Duration::from_secs(4);

/// What the admin side shares with the proxy.
pub(crate) struct Admin {
    pub env: String,
    pub listen: SocketAddr,
    pub routes_file: PathBuf,
    pub routes: Arc<Routes>,
    /// The routes on disk and installed. Held through a whole `set`, so that generations and
    /// the file on disk stay in step.
    pub current: Mutex<RoutesFile>,
    pub shutdown: watch::Sender<bool>,
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
                let error = AdminError::new(
                    ErrorCode::LineTooLong,
                    format!("the request line is longer than {MAX_LINE} bytes"),
                );
                (Reply::Error(error), false)
            } else {
                self.answer(&line).await
            };
            let bytes = protocol::to_line(&reply);
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
    async fn answer(&self, line: &[u8]) -> (Reply, bool) {
        let request = match protocol::parse_request(line) {
            Ok(request) => request,
            Err(error) => return (Reply::Error(error), false),
        };
        let reply = match request {
            Request::Status => Reply::Status(self.status()),
            Request::Set(route) => match self.set(route).await {
                Ok(generation) => Reply::Set { generation },
                Err(error) => Reply::Error(error),
            },
            Request::Drain {
                upstreams,
                timeout_ms,
            } => Reply::Drain(self.drain(&upstreams, timeout_ms).await),
            Request::Hold { route, hold } => match self.hold(route, hold).await {
                Ok(generation) => Reply::Hold { generation },
                Err(error) => Reply::Error(error),
            },
            Request::Shutdown => {
                eprintln!("edge proxy for {}: shutting down (asked)", self.env);
                return (Reply::Shutdown, true);
            }
        };
        (reply, false)
    }

    fn status(&self) -> ProxyStatus {
        let (generation, routes, draining) = self.routes.status();
        let held = self.routes.held();
        ProxyStatus {
            protocol: PROTOCOL,
            env: self.env.clone(),
            listen: self.listen,
            pid: std::process::id(),
            generation,
            routes,
            draining,
            held,
        }
    }

    /// Persists the new routes, then installs them.
    async fn set(&self, route: Route) -> Result<u64, AdminError> {
        route.validate()?;
        serves(&self.env, &route.key)?;
        let mut current = self.current.lock().await;
        let next = current.with(route);
        self.install(&mut current, next).await
    }

    /// Puts a hold on a route or lifts it; persisted, then installed.
    async fn hold(&self, route: RouteKey, hold: Option<Hold>) -> Result<u64, AdminError> {
        serves(&self.env, &route)?;
        if let Some(hold) = &hold {
            hold.validate()?;
        }
        let mut current = self.current.lock().await;
        let next = current.with_hold(&route, hold);
        self.install(&mut current, next).await
    }

    async fn install(&self, current: &mut RoutesFile, next: RoutesFile) -> Result<u64, AdminError> {
        // Persist first: a proxy restarted after this reply serves what it was told.
        let (path, to_save) = (self.routes_file.clone(), next.clone());
        let saved = tokio::task::spawn_blocking(move || to_save.save(&path))
            .await
            .map_err(std::io::Error::other)
            .and_then(|saved| saved);
        if let Err(e) = saved {
            return Err(AdminError::new(
                ErrorCode::NotSaved,
                format!("could not write {}: {e}", self.routes_file.display()),
            )
            .hint(format!(
                "nothing changed: generation {} still serves; free the disk or fix the \
                 permissions, then send the change again",
                current.generation
            )));
        }
        self.routes.install(&next);
        eprintln!(
            "edge proxy for {}: generation {} {}",
            self.env,
            next.generation,
            describe(&next)
        );
        let generation = next.generation;
        *current = next;
        Ok(generation)
    }

    /// Waits until nothing is in flight to `upstreams`, or `timeout_ms` (or their routes'
    /// drain timeout) passes; then closes
    /// their tunnels (open WebSockets, cleanly) and waits a moment for them to go.
    async fn drain(&self, upstreams: &[SocketAddr], timeout_ms: Option<u64>) -> DrainOutcome {
        let timeout = match timeout_ms {
            Some(ms) => Duration::from_millis(ms),
            None => self.routes.drain_timeout(upstreams),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let at_deadline = loop {
            let remaining = self.routes.inflight_to(upstreams);
            if remaining == 0 {
                return DrainOutcome {
                    drained: true,
                    remaining,
                    closed: 0,
                };
            }
            if tokio::time::Instant::now() >= deadline {
                break remaining;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let tunnels = self.routes.tunnels_to(upstreams);
        let mut open = tunnels;
        if tunnels > 0 {
            self.routes.close_tunnels(upstreams);
            let closing = tokio::time::Instant::now() + CLOSE_TUNNELS;
            while open > 0 && tokio::time::Instant::now() < closing {
                tokio::time::sleep(Duration::from_millis(10)).await;
                open = self.routes.tunnels_to(upstreams);
            }
        }
        DrainOutcome {
            drained: false,
            remaining: if tunnels > 0 {
                self.routes.inflight_to(upstreams)
            } else {
                at_deadline
            },
            closed: tunnels - open,
        }
    }
}

/// The routes for a log line: "routes staging to 127.0.0.1:4001 (90), 127.0.0.1:4002 (10)".
pub(crate) fn describe(file: &RoutesFile) -> String {
    if file.routes.is_empty() {
        return "routes nothing (503)".to_string();
    }
    let routes: Vec<String> = file
        .routes
        .iter()
        .map(|route| {
            let mut upstreams = route
                .upstreams
                .iter()
                .map(|u| format!("{} ({})", u.addr, u.weight))
                .collect::<Vec<_>>()
                .join(", ");
            if route.upstreams.iter().all(|u| u.weight == 0) {
                upstreams.push_str(if upstreams.is_empty() {
                    "nothing (503)"
                } else {
                    ": no new requests (503)"
                });
            }
            format!("{} to {upstreams}", route.key)
        })
        .collect();
    let holds: Vec<String> = file
        .holds
        .iter()
        .map(|h| match &h.hold {
            Hold::Maintenance { .. } => format!("; {} is in maintenance (503)", h.route),
            Hold::Pause { until_ms } => format!("; {} is paused until {until_ms}", h.route),
        })
        .collect();
    format!("routes {}{}", routes.join("; "), holds.concat())
}
