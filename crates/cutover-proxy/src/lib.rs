//! cutover-proxy: the edge proxy (data plane). See docs/ARCHITECTURE.md.
//!
//! One process per machine, shared by every app (each with its own state dir and server) and
//! environment. It listens on every address a route names and forwards each request to an
//! upstream (instance) of the route its address and `Host` select, by weight, as its route
//! table says at that moment; the table sits behind one `ArcSwap`, so a cutover is one atomic
//! swap. The servers drive it over a unix socket with the typed admin [`protocol`]
//! ([`ProxyClient`]); the edge keeps its routes on disk and serves on when they are gone.

mod access;
pub mod acme;
mod admin;
mod client;
mod conn;
mod forward;
mod handover;
mod health;
mod https;
mod listeners;
pub mod protocol;
mod redirect;
mod routes;
mod routes_file;
pub mod tls;
mod tunnel;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};

pub use client::{running_pid, spawn, status_blocking, upgrade, ProxyClient, Upgraded};
pub use protocol::{DrainOutcome, Limits, ProxyStatus, Route, RouteKey, Upstream};
pub use routes_file::{legacy_routes, LegacyRoute, RoutesFile};

use crate::access::AccessLog;
use crate::admin::{describe, Admin};
use crate::forward::Forwarder;
use crate::listeners::Listeners;
use crate::routes::Routes;

/// How long a shutdown waits for in-flight requests before it closes their connections.
const GRACE: Duration = Duration::from_secs(5);

/// The cutover version of this edge, reported by `status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the machine's edge keeps its files: `CUTOVER_EDGE_DIR`, else `/var/lib/cutover/edge`
/// for root and `$XDG_STATE_HOME/cutover/edge` (or `~/.local/state/cutover/edge`) for others.
pub fn default_edge_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CUTOVER_EDGE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/cutover/edge");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local").join("state"))
        })
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    state.join("cutover").join("edge")
}

/// Creates the edge's directory, readable by its owner only.
pub fn prepare_edge_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The files of the machine's edge, all in its directory (the admin socket under the short
/// socket folder of `cutover_daemon::socket_path`).
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub dir: PathBuf,
    /// Unix socket of the admin protocol.
    pub admin_socket: PathBuf,
    /// Where the edge keeps its routes, so that a restarted edge serves the same upstreams.
    pub routes_file: PathBuf,
    pub pid_file: PathBuf,
    pub log_file: PathBuf,
    /// Held while an edge is being started, so that two servers start one.
    pub start_lock: PathBuf,
    /// The access log of requests no route takes.
    pub access_log: PathBuf,
    /// Take the listening sockets over from the edge running in this directory (an upgrade)
    /// instead of opening them.
    pub takeover: bool,
}

impl ProxyOptions {
    /// The layout of the edge directory `dir`.
    pub fn new(dir: &Path) -> ProxyOptions {
        ProxyOptions {
            dir: dir.to_path_buf(),
            admin_socket: cutover_daemon::socket_path(dir, "edge"),
            routes_file: dir.join("routes.json"),
            pid_file: dir.join("edge.pid"),
            log_file: dir.join("edge.log"),
            start_lock: dir.join("start.lock"),
            access_log: dir.join("access.log"),
            takeover: false,
        }
    }
}

/// What a request's route is chosen by, besides its `Host`: the connection it came on. A
/// connection is served from any `AsyncRead + AsyncWrite` (a TCP stream, or a TLS stream over
/// one) with this.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The listen address (as routes name it) whose listener accepted the connection.
    pub listen: SocketAddr,
    pub peer: SocketAddr,
    /// The TLS server name (SNI) the client asked for, on a TLS connection.
    pub server_name: Option<Arc<str>>,
    /// The connection is TLS (HTTPS).
    pub tls: bool,
}

/// Errors of the edge process and of its clients.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("listen address {0} is already in use")]
    AddressInUse(SocketAddr),
    #[error("could not listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("another edge already answers on {}", socket.display())]
    AlreadyRunning { socket: PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("the edge is not running (admin socket {}: {source})", socket.display())]
    NotRunning {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("the edge did not answer `{op}` within {} s", after.as_secs_f64())]
    Timeout { op: String, after: Duration },
    #[error("the edge refused: {error}")]
    Refused { error: protocol::AdminError },
    #[error("the edge sent a reply that makes no sense: {detail}")]
    BadReply { detail: String },
    #[error("the edge did not start: {detail}")]
    StartFailed { detail: String },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProxyError {
    let context = context.into();
    move |source| ProxyError::Io { context, source }
}

/// Runs the edge until it is told to shut down (admin `shutdown`, the last route removed,
/// SIGTERM or SIGINT). Builds its own tokio runtimes: one for the admin side, and one
/// single-threaded runtime per serving thread (see [`start_serving_threads`]).
pub fn run(options: ProxyOptions) -> Result<(), ProxyError> {
    let runtime =
        single_threaded_runtime().map_err(io_error("could not start the async runtime"))?;
    let mut workers = Vec::new();
    let result = runtime.block_on(serve(options, &mut workers));
    // Drops what is left (idle admin connections).
    runtime.shutdown_timeout(Duration::from_secs(1));
    for worker in workers {
        let _ = worker.join();
    }
    result
}

fn single_threaded_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// How many threads serve client connections: `TOKIO_WORKER_THREADS` if set (as for tokio's
/// default runtime), else one per core.
fn serving_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// What a serving thread is told: accept on a listener (its own duplicate of the socket), or
/// stop accepting on one.
pub(crate) enum Command {
    Open(SocketAddr, std::net::TcpListener),
    Close(SocketAddr),
}

/// Starts the serving threads: each accepts from every listening socket (its own duplicate)
/// and forwards with its own upstream connection pool on its own single-threaded runtime, so
/// a request, its upstream connection and their wakeups stay on one thread (no work stealing,
/// no cross-thread wakeups, no contended pool lock), as in nginx's workers. Returns the
/// command channel of each, and a receiver per thread that resolves once its connections
/// have finished.
fn start_serving_threads(
    count: usize,
    routes: &Arc<Routes>,
    https: &Arc<https::Https>,
    signals: &Signals,
    workers: &mut Vec<std::thread::JoinHandle<()>>,
) -> (Vec<mpsc::UnboundedSender<Command>>, mpsc::Receiver<()>) {
    let mut commands = Vec::new();
    // Each thread holds a sender until its connections have finished: `recv` returns `None`
    // once all of them are done.
    let (done_tx, done_rx) = mpsc::channel::<()>(1);
    for i in 0..count.max(1) {
        let signals = signals.clone();
        let routes = routes.clone();
        let https = https.clone();
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let done = done_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("edge-{i}"))
            .spawn(move || {
                let runtime = match single_threaded_runtime() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        eprintln!("edge: a serving thread could not start: {e}");
                        return;
                    }
                };
                let forwarder = Arc::new(Forwarder::new(routes, https, signals.tunnels.clone()));
                runtime.block_on(serve_thread(command_rx, forwarder, signals));
                drop(done);
                runtime.shutdown_timeout(Duration::from_secs(1));
            });
        match spawned {
            Ok(handle) => {
                workers.push(handle);
                commands.push(command_tx);
            }
            Err(e) => {
                eprintln!("edge: serving with {i} threads: {e}");
                break;
            }
        }
    }
    (commands, done_rx)
}

/// What tells serving threads, connections and tunnels to end.
#[derive(Clone)]
pub(crate) struct Signals {
    /// Stop: close idle connections, finish requests in flight (for up to [`GRACE`]).
    pub shutdown: watch::Receiver<bool>,
    /// Handed over to a new edge: stop accepting; each connection closes after its next answer
    /// (`Connection: close`) or once idle; tunnels stay until `tunnels`.
    pub draining: watch::Receiver<bool>,
    /// Close the tunnels (WebSockets with 1001).
    pub tunnels: watch::Receiver<bool>,
}

async fn serve(
    options: ProxyOptions,
    workers: &mut Vec<std::thread::JoinHandle<()>>,
) -> Result<(), ProxyError> {
    prepare_edge_dir(&options.dir).map_err(io_error(format!(
        "could not create the edge directory {}",
        options.dir.display()
    )))?;
    // An upgrade takes the sockets from the edge that runs; otherwise none may run.
    let taken = if options.takeover {
        let socket = options.admin_socket.clone();
        let taken = tokio::task::spawn_blocking(move || handover::take(&socket))
            .await
            .map_err(|e| ProxyError::StartFailed {
                detail: e.to_string(),
            })??;
        Some(taken)
    } else {
        if std::os::unix::net::UnixStream::connect(&options.admin_socket).is_ok() {
            return Err(ProxyError::AlreadyRunning {
                socket: options.admin_socket.clone(),
            });
        }
        None
    };
    let initial = RoutesFile::load(&options.routes_file).map_err(io_error(format!(
        "could not read the routes {}",
        options.routes_file.display()
    )))?;

    let pid = std::process::id();
    cutover_daemon::write_atomic(&options.pid_file, format!("{pid}\n").as_bytes()).map_err(
        io_error(format!(
            "could not write the pid file {}",
            options.pid_file.display()
        )),
    )?;
    let admin_listener = cutover_daemon::prepare_socket_dir(&options.admin_socket)
        .and_then(|()| UnixListener::bind(&options.admin_socket))
        .map_err(io_error(format!(
            "could not open the admin socket {}",
            options.admin_socket.display()
        )));
    let admin_listener = match admin_listener {
        Ok(listener) => listener,
        Err(e) => {
            remove_pid_file(&options.pid_file, pid);
            return Err(e);
        }
    };

    let default_log = match AccessLog::open(&options.access_log) {
        Ok(log) => Arc::new(log),
        Err(e) => {
            remove_pid_file(&options.pid_file, pid);
            return Err(ProxyError::Io {
                context: format!(
                    "could not open the access log {}",
                    options.access_log.display()
                ),
                source: e,
            });
        }
    };
    let routes = Arc::new(Routes::new(&initial, default_log));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let https = Arc::new(https::Https::new(&options.dir));
    https.start(&initial);
    tokio::spawn(https.clone().maintain(shutdown_rx.clone()));
    let (draining_tx, draining_rx) = watch::channel(false);
    let (tunnels_tx, tunnels_rx) = watch::channel(false);
    let signals = Signals {
        shutdown: shutdown_rx.clone(),
        draining: draining_rx.clone(),
        tunnels: tunnels_rx,
    };
    let (commands, mut done) =
        start_serving_threads(serving_threads(), &routes, &https, &signals, workers);
    let listeners = Listeners::new(commands);
    let handed_over = taken.as_ref().map_or(0, |t| t.listeners.len());
    if let Some(taken) = taken.as_ref() {
        for (listen, socket) in &taken.listeners {
            match socket.try_clone() {
                Ok(socket) => {
                    if let Err(e) = listeners.adopt(*listen, socket) {
                        eprintln!("edge: cannot serve the socket of {listen} handed over: {e}");
                    }
                }
                Err(e) => eprintln!("edge: cannot serve the socket of {listen} handed over: {e}"),
            }
        }
    }
    listeners.sync(&initial.listens());
    let admin = Arc::new(Admin {
        https,
        routes_file: options.routes_file.clone(),
        routes: routes.clone(),
        listeners,
        current: tokio::sync::Mutex::new(initial.clone()),
        shutdown: shutdown_tx.clone(),
        closing: std::sync::atomic::AtomicBool::new(false),
        draining: draining_tx,
    });
    let admin_task = tokio::spawn(admin.clone().serve(admin_listener));
    tokio::spawn(stop_on_signals(shutdown_tx.clone()));
    eprintln!(
        "edge {VERSION} (pid {pid}) in {}{}, generation {} {}",
        options.dir.display(),
        if options.takeover {
            format!(", took over {handed_over} listening socket(s)")
        } else {
            String::new()
        },
        initial.generation,
        describe(&initial)
    );
    if let Some(taken) = taken {
        // Serving them now: the old edge may stop accepting.
        taken.ready();
    }

    let (mut stop, mut drain) = (shutdown_rx.clone(), draining_rx);
    let handed = tokio::select! {
        () = stopping(&mut stop) => false,
        () = stopping(&mut drain) => true,
    };
    // Stop answering and listening at once, so that a new edge can start (or has started)
    // while this one lets its requests finish. Only the socket and pid file this edge made: a
    // newer edge may have taken the paths over.
    admin_task.abort();
    admin.listeners.close_all();
    if cutover_daemon::read_pid(&options.pid_file) == Some(pid) {
        let _ = std::fs::remove_file(&options.admin_socket);
    }
    remove_pid_file(&options.pid_file, pid);
    if handed {
        // Requests in flight finish, kept-alive connections close after their next answer,
        // WebSockets stay until the longest drain timeout of the routes.
        let limit = routes.longest_drain();
        tokio::select! {
            _ = done.recv() => {}
            () = tokio::time::sleep(limit) => {
                eprintln!("edge: drain timeout ({} s) passed; closing what is left", limit.as_secs_f64());
            }
            () = stopping(&mut stop) => {}
        }
    }
    shutdown_tx.send_replace(true);
    tunnels_tx.send_replace(true);
    while done.recv().await.is_some() {}
    routes.close_logs();
    eprintln!("edge (pid {pid}) stopped");
    Ok(())
}

/// One serving thread: accepts on the listeners it is given until shutdown or a handover,
/// then lets its connections finish (for up to [`GRACE`] after shutdown).
async fn serve_thread(
    mut commands: mpsc::UnboundedReceiver<Command>,
    forwarder: Arc<Forwarder>,
    signals: Signals,
) {
    let (mut shutdown, mut draining) = (signals.shutdown.clone(), signals.draining.clone());
    // Every connection task holds a sender; `recv` returns `None` once all of them are done.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    // Dropping a listener's sender stops its accept loop.
    let mut accepting: std::collections::HashMap<SocketAddr, tokio::sync::oneshot::Sender<()>> =
        std::collections::HashMap::new();
    loop {
        tokio::select! {
            () = stopping(&mut shutdown) => break,
            () = stopping(&mut draining) => break,
            command = commands.recv() => match command {
                Some(Command::Open(listen, listener)) => {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
                            accepting.insert(listen, stop_tx);
                            tokio::spawn(accept(
                                listener,
                                listen,
                                stop_rx,
                                forwarder.clone(),
                                signals.clone(),
                                alive_tx.clone(),
                            ));
                        }
                        Err(e) => eprintln!("edge: cannot accept on {listen}: {e}"),
                    }
                }
                Some(Command::Close(listen)) => {
                    accepting.remove(&listen);
                }
                None => break,
            },
        }
    }
    drop(accepting);
    drop(alive_tx);
    tokio::select! {
        _ = alive_rx.recv() => return,
        () = stopping(&mut shutdown) => {}
    }
    let _ = tokio::time::timeout(GRACE, alive_rx.recv()).await;
}

/// Accepts connections on one listener until it is closed or the edge stops accepting.
async fn accept(
    listener: tokio::net::TcpListener,
    listen: SocketAddr,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    forwarder: Arc<Forwarder>,
    signals: Signals,
    alive: mpsc::Sender<()>,
) {
    let (mut shutdown, mut draining) = (signals.shutdown.clone(), signals.draining.clone());
    loop {
        tokio::select! {
            () = stopping(&mut shutdown) => break,
            () = stopping(&mut draining) => break,
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(accepted_on(
                        stream,
                        ConnInfo { listen, peer, server_name: None, tls: false },
                        forwarder.clone(),
                        signals.clone(),
                        alive.clone(),
                    ));
                }
                Err(e) => {
                    // Usually out of file descriptors: wait a little rather than spin.
                    eprintln!("edge: accept on {listen} failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Serves a connection as its listener's kind says: plain HTTP, TLS (HTTP/2 when ALPN says
/// so, else HTTP/1.1; a TLS-ALPN-01 validation ends with its handshake), or an `http_redirect`.
async fn accepted_on(
    stream: tokio::net::TcpStream,
    mut info: ConnInfo,
    forwarder: Arc<Forwarder>,
    signals: Signals,
    alive: mpsc::Sender<()>,
) {
    match forwarder.https().kind(info.listen) {
        https::Kind::Plain => connection(stream, info, forwarder, signals, alive, false).await,
        https::Kind::Tls(acceptor) => {
            let limit = forwarder.connection_limits(info.listen).header_timeout_ms;
            let accepted = tls::accept(&acceptor, stream, Duration::from_millis(limit)).await;
            if let Ok(tls::Accepted::Http {
                stream,
                server_name,
                h2,
            }) = accepted
            {
                info.server_name = server_name;
                info.tls = true;
                connection(stream, info, forwarder, signals, alive, h2).await;
            }
        }
        https::Kind::Redirect(redirects) => {
            let tokens = forwarder.https().acme.http01.clone();
            let service = service_fn(move |request| {
                let answer = redirect::answer(&request, &tokens, |host| redirects.port(host));
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let (mut shutdown, mut draining) = (signals.shutdown, signals.draining);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stopping_or_draining(&mut shutdown, &mut draining) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        }
    }
}

/// How long a connection may sit idle while the edge drains after a handover before it is
/// closed (a client sending on it after that gets a fresh connection to the new edge).
const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// Serves one client connection (HTTP/1.1, or HTTP/2 when `h2`) until it closes, times out,
/// or the edge stops. After a handover an HTTP/1.1 connection closes after its next answer
/// (`Connection: close`), an HTTP/2 one gets a GOAWAY and finishes its streams.
pub(crate) async fn connection<S>(
    stream: S,
    info: ConnInfo,
    forwarder: Arc<Forwarder>,
    signals: Signals,
    alive: mpsc::Sender<()>,
    h2: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut shutdown, mut draining) = (signals.shutdown, signals.draining);
    let client_ip = forward::client_ip_header(info.peer);
    let limits = forwarder.connection_limits(info.listen);
    let activity = Arc::new(conn::Activity::default());
    let counted = activity.clone();
    let info = Arc::new(info);
    let service = service_fn(move |request| {
        let forwarder = forwarder.clone();
        let client_ip = client_ip.clone();
        let alive = alive.clone();
        let activity = counted.clone();
        let info = info.clone();
        async move {
            let asked = conn::Asked::of(&request);
            let response = forwarder.handle(request, &info, &client_ip, &alive).await;
            response.map(|r| activity.answer(r, asked, forwarder.default_log()))
        }
    });
    let io = TokioIo::new(conn::Counted::new(stream, activity.clone()));
    if h2 {
        let mut builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .http2_only();
        // RFC 8441: WebSockets over HTTP/2 by extended CONNECT.
        builder
            .http2()
            .timer(TokioTimer::new())
            .enable_connect_protocol();
        let conn = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = conn::expired(&activity, limits) => {}
            // HTTP/2 answers a stop and a handover alike: GOAWAY, then its streams finish.
            () = stopping_or_draining(&mut shutdown, &mut draining) => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
        return;
    }
    let conn = http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        // Both timeouts are kept by `conn::expired` (hyper's runs between requests too).
        .header_read_timeout(None)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        // Nothing is being answered: closing drops no response.
        _ = conn::expired(&activity, limits) => return,
        () = stopping(&mut shutdown) => {
            // Finishes the request in progress, then closes; idle connections close at once.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
            return;
        }
        () = stopping(&mut draining) => activity.close_after_answer(),
    }
    // Handed over: the next answer says `Connection: close`; an idle connection closes soon.
    let drain_limits = Limits {
        idle_timeout_ms: limits
            .idle_timeout_ms
            .min(u64::try_from(DRAIN_IDLE.as_millis()).unwrap_or(u64::MAX)),
        ..limits
    };
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = conn::expired(&activity, drain_limits) => {}
        () = stopping(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn stop_on_signals(shutdown: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("edge: cannot handle signals: {e}");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => eprintln!("edge: shutting down (SIGTERM)"),
        _ = int.recv() => eprintln!("edge: shutting down (SIGINT)"),
    }
    shutdown.send_replace(true);
}

/// Resolves once shutdown has been asked for.
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Resolves when a connection that ends by a graceful shutdown (HTTP/2, http_redirect) should
/// begin it: at once when the edge stops; [`DRAIN_IDLE`] after a handover, so that a connection
/// accepted just before it has sent its first request by then (hyper closes a connection that
/// has not, unanswered: its client would see a reset).
async fn stopping_or_draining(
    shutdown: &mut watch::Receiver<bool>,
    draining: &mut watch::Receiver<bool>,
) {
    tokio::select! {
        () = stopping(shutdown) => return,
        () = stopping(draining) => {}
    }
    tokio::select! {
        () = stopping(shutdown) => {}
        () = tokio::time::sleep(DRAIN_IDLE) => {}
    }
}

fn remove_pid_file(path: &Path, pid: u32) {
    if cutover_daemon::read_pid(path) == Some(pid) {
        let _ = std::fs::remove_file(path);
    }
}
