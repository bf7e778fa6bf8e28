//! The edge's side of the admin protocol ([`crate::protocol`]): one reply line per request
//! line on a unix socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Mutex};

use crate::listeners::Listeners;
use crate::protocol::{
    self, conflict, AdminError, DrainOutcome, ErrorCode, Hold, ProxyStatus, Reply, Request, Route,
    RouteKey, PROTOCOL,
};
use crate::routes::{Routes, RoutesFile};

/// Longest request line accepted; the socket is private, this only guards against mistakes.
const MAX_LINE: usize = 1 << 20;

/// How long a drain past its timeout waits for the tunnels it closed to go.
pub(crate) const CLOSE_TUNNELS: Duration = Duration::from_secs(4);

/// What the admin side shares with the serving threads.
pub(crate) struct Admin {
    pub routes_file: PathBuf,
    pub routes: Arc<Routes>,
    pub listeners: Listeners,
    /// Certificates, TLS and redirect listeners, ACME.
    pub https: Arc<crate::https::Https>,
    /// The routes on disk and installed. Held through a whole change, so that generations
    /// and the file on disk stay in step.
    pub current: Mutex<RoutesFile>,
    pub shutdown: watch::Sender<bool>,
    /// Set when the last route is removed, or during a handover: changes are refused, so that
    /// none is made to an edge about to exit.
    pub closing: std::sync::atomic::AtomicBool,
    /// Set once a new edge serves the sockets this one handed over: stop accepting and drain.
    pub draining: watch::Sender<bool>,
}

impl Admin {
    pub async fn serve(self: Arc<Self>, listener: UnixListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(self.clone().connection(stream));
                }
                Err(e) => {
                    eprintln!("edge: admin accept failed: {e}");
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
            if !too_long && matches!(protocol::parse_request(&line), Ok(Request::Handover)) {
                // Whatever a new edge sent after its request is its own: nothing is buffered.
                if let Ok(stream) = reader.into_inner().reunite(write) {
                    self.handover(stream).await;
                }
                return;
            }
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
            Request::Set(_) | Request::Check(_) | Request::Hold { .. } if self.is_closing() => {
                Reply::Error(
                    AdminError::new(
                        ErrorCode::Stopping,
                        "the edge is stopping: it has no route left",
                    )
                    .hint("start the edge again and send the change to the new one"),
                )
            }
            Request::Set(route) => match self.set(route).await {
                Ok(generation) => Reply::Set { generation },
                Err(error) => Reply::Error(error),
            },
            Request::Check(route) => match self.check(&route).await {
                Ok(()) => Reply::Check,
                Err(error) => Reply::Error(error),
            },
            Request::Remove { owner, env } => match self.remove(&owner, env.as_deref()).await {
                Ok((generation, left)) => {
                    if left == 0 {
                        eprintln!("edge: no route is left; shutting down");
                    }
                    return (Reply::Remove { generation, left }, left == 0);
                }
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
            Request::Handover => Reply::Error(AdminError::new(
                ErrorCode::BadRequest,
                "a handover goes on a connection of its own",
            )),
            Request::Shutdown => {
                eprintln!("edge: shutting down (asked)");
                return (Reply::Shutdown, true);
            }
            Request::Renew { host } => match self.https.acme.renew(&host).await {
                Ok(not_after) => Reply::Renew { host, not_after },
                Err(crate::acme::RenewError::NotAcme) => Reply::Error(
                    AdminError::new(
                        ErrorCode::UnknownRoute,
                        format!("no route of this edge gets the certificate of {host} by ACME"),
                    )
                    .field("host")
                    .hint("name a host of an environment with tls = \"acme\" (see `cutover edge status`)"),
                ),
                Err(crate::acme::RenewError::Acme(e)) => Reply::Error(
                    AdminError::new(ErrorCode::Acme, format!("{e}; the old certificate, if any, keeps serving"))
                        .field("host")
                        .hint(e.hint()),
                ),
            },
        };
        (reply, false)
    }

    fn status(&self) -> ProxyStatus {
        let (generation, routes, draining) = self.routes.status();
        let held = self.routes.held();
        let exe = cutover_daemon::started_exe();
        ProxyStatus {
            protocol: PROTOCOL,
            version: crate::VERSION.to_string(),
            exe: exe.map(|e| e.path.clone()),
            binary_replaced: exe.is_some_and(|e| e.replaced()),
            stopping: self.is_closing(),
            pid: std::process::id(),
            listeners: self.listeners.status(),
            generation,
            routes,
            draining,
            held,
            acme: self.https.acme.status(),
        }
    }

    /// Whether `route` may be installed over `current`: valid, claiming nothing another
    /// route has. Returns it with its hosts as routes compare them.
    fn admissible(current: &RoutesFile, route: &Route) -> Result<(), AdminError> {
        route.validate()?;
        match conflict(route, &current.routes) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Opens `listen` if no route uses it yet; the refusal when it cannot be.
    fn listen(&self, listen: SocketAddr) -> Result<(), AdminError> {
        self.listeners
            .open(listen)
            .map_err(|e| listen_failed(listen, &e))
    }

    /// Persists the new routes, opens the address if it is new, then installs them.
    async fn set(&self, route: Route) -> Result<u64, AdminError> {
        let mut current = self.current.lock().await;
        Self::admissible(&current, &route)?;
        let next = current.with(route.clone());
        // Certificates and listener kinds are checked before any address is opened.
        self.https.check(&next)?;
        let opened = !self.listeners.is_open(route.listen)
            || route
                .http_redirect
                .is_some_and(|r| !self.listeners.is_open(r));
        let listened = std::iter::once(route.listen)
            .chain(route.http_redirect)
            .try_for_each(|listen| self.listen(listen));
        let installed = match listened {
            Ok(()) => self.install(&mut current, next).await,
            Err(e) => Err(e),
        };
        if installed.is_err() && opened {
            self.listeners.close_unused(&current.listens());
        }
        installed
    }

    /// What a `set` of `route` would say, changing nothing.
    async fn check(&self, route: &Route) -> Result<(), AdminError> {
        let current = self.current.lock().await;
        Self::admissible(&current, route)?;
        self.https.verify(&current.with(route.clone()))?;
        if !self.listeners.is_open(route.listen) {
            crate::listeners::bind(route.listen).map_err(|e| listen_failed(route.listen, &e))?;
        }
        Ok(())
    }

    /// Removes routes of `owner`; returns the generation and how many routes are left (none:
    /// the edge is closing).
    async fn remove(&self, owner: &str, env: Option<&str>) -> Result<(u64, usize), AdminError> {
        let mut current = self.current.lock().await;
        let next = current.without(owner, env);
        let generation = self.install(&mut current, next).await?;
        if current.routes.is_empty() {
            self.closing
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok((generation, current.routes.len()))
    }

    fn is_closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Puts a hold on a route or lifts it; persisted, then installed.
    async fn hold(&self, route: RouteKey, hold: Option<Hold>) -> Result<u64, AdminError> {
        if let Some(hold) = &hold {
            hold.validate()?;
        }
        let mut current = self.current.lock().await;
        if hold.is_some() && !current.routes.iter().any(|r| r.key == route) {
            return Err(AdminError::new(
                ErrorCode::UnknownRoute,
                format!("the edge has no route {route}"),
            )
            .field("route")
            .hint("deploy the environment first: its route comes with its first deploy"));
        }
        let next = current.with_hold(&route, hold);
        self.install(&mut current, next).await
    }

    /// Opens the access logs of `next`, saves it, installs it, and closes the listeners it no
    /// longer uses. Nothing changes if the logs cannot be opened or the file written.
    async fn install(&self, current: &mut RoutesFile, next: RoutesFile) -> Result<u64, AdminError> {
        if let Err((path, e)) = self.routes.open_logs(&next) {
            return Err(AdminError::new(
                ErrorCode::NotSaved,
                format!("could not open the access log {}: {e}", path.display()),
            )
            .field("access_log")
            .hint("nothing changed: free the disk or fix the permissions, then send it again"));
        }
        // Persist first: an edge restarted after this reply serves what it was told.
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
        self.https.install(&next);
        self.listeners.close_unused(&next.listens());
        eprintln!("edge: generation {} {}", next.generation, describe(&next));
        let generation = next.generation;
        *current = next;
        Ok(generation)
    }

    /// Hands the listening sockets to the new edge on `stream`; once it says `ready`, stops
    /// accepting and drains (the serving threads and `serve` take it from there). Changes wait
    /// (the routes lock is held) and are refused meanwhile; a handover that does not complete
    /// leaves this edge serving as before.
    async fn handover(&self, stream: UnixStream) {
        let current = self.current.lock().await;
        if self.is_closing() {
            let error = AdminError::new(ErrorCode::Stopping, "the edge is already stopping")
                .hint("send the handover to the edge that answers next");
            let mut stream = stream;
            let _ = stream
                .write_all(&protocol::to_line(&Reply::Error(error)))
                .await;
            return;
        }
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let sockets = self.listeners.duplicates();
        let handed = async {
            let conn = stream.into_std()?;
            conn.set_nonblocking(false)?;
            tokio::task::spawn_blocking(move || {
                let borrowed: Vec<_> = sockets
                    .iter()
                    .map(|(addr, fd)| (*addr, std::os::fd::AsFd::as_fd(fd)))
                    .collect();
                crate::handover::give(&conn, &borrowed)?;
                conn.set_read_timeout(Some(crate::handover::WAIT))?;
                let mut line = String::new();
                std::io::BufRead::read_line(&mut std::io::BufReader::new(&conn), &mut line)?;
                Ok::<bool, std::io::Error>(line.trim() == "ready")
            })
            .await
            .map_err(std::io::Error::other)?
        };
        match handed.await {
            Ok(true) => {
                let count = self.listeners.status().len();
                self.listeners.close_all();
                eprintln!(
                    "edge: handed {count} listening socket(s) to a new edge; draining (generation {})",
                    current.generation
                );
                self.draining.send_replace(true);
            }
            Ok(false) => {
                self.closing
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                eprintln!("edge: the new edge did not take over; serving on");
            }
            Err(e) => {
                self.closing
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                eprintln!("edge: the handover failed ({e}); serving on");
            }
        }
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
            format!("{} on {} to {upstreams}", route.key, route.claim())
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

/// The refusal of a route whose address cannot be listened on.
fn listen_failed(listen: SocketAddr, e: &std::io::Error) -> AdminError {
    let (message, hint) = match e.kind() {
        std::io::ErrorKind::AddrInUse => (
            format!("{listen} is in use by another program"),
            format!("stop what listens on {listen}, or change `listen`"),
        ),
        std::io::ErrorKind::AddrNotAvailable => (
            format!("{listen} is not an address of this machine"),
            "use an address of this machine, 127.0.0.1 or 0.0.0.0".to_string(),
        ),
        std::io::ErrorKind::PermissionDenied => (
            format!("{listen} needs privileges to listen on"),
            "use a port above 1023, or give the edge the right to bind low ports \
             (e.g. setcap cap_net_bind_service=+ep on the cutover binary)"
                .to_string(),
        ),
        _ => (
            format!("cannot listen on {listen}: {e}"),
            "change `listen`".to_string(),
        ),
    };
    AdminError::new(ErrorCode::ListenFailed, message)
        .field("listen")
        .hint(hint)
}
