//! cutover-proxy: the edge proxy (data plane). See docs/ARCHITECTURE.md.
//!
//! One process per environment. It listens on the environment's address and forwards every
//! request to an upstream (instance) of the request's route, by weight, as its route table
//! says at that moment; the table sits behind one `ArcSwap`, so a cutover is one atomic swap.
//! The control plane drives it over a unix socket with the typed admin [`protocol`]
//! ([`ProxyClient`]); the proxy keeps its routes on disk and serves on when the control plane
//! is gone.

mod access;
pub mod acme;
mod admin;
mod client;
mod conn;
mod forward;
pub mod protocol;
mod routes;
pub mod tls;
mod tunnel;

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{mpsc, watch};

pub use client::{running_pid, spawn, ProxyClient};
pub use protocol::{DrainOutcome, Limits, ProxyStatus, Route, RouteKey, Upstream};
pub use routes::RoutesFile;

use crate::access::AccessLog;
use crate::admin::{describe, Admin};
use crate::forward::Forwarder;
use crate::routes::Routes;

/// How long a shutdown waits for in-flight requests before it closes their connections.
const GRACE: Duration = Duration::from_secs(5);

/// Everything one environment's proxy process needs to know.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub env: String,
    pub listen: SocketAddr,
    /// Unix socket of the admin protocol.
    pub admin_socket: PathBuf,
    /// Where the proxy keeps its routes, so that a restarted proxy serves the same upstreams.
    pub routes_file: PathBuf,
    pub pid_file: PathBuf,
    pub log_file: PathBuf,
    /// One JSON line per request, rotated by size.
    pub access_log: PathBuf,
}

impl ProxyOptions {
    /// The standard layout inside a state dir.
    pub fn new(state_dir: &Path, env: &str, listen: SocketAddr) -> ProxyOptions {
        ProxyOptions {
            env: env.to_string(),
            listen,
            admin_socket: cutover_daemon::socket_path(state_dir, &format!("proxy-{env}")),
            routes_file: state_dir.join("proxy").join(format!("{env}.routes.json")),
            pid_file: state_dir.join("proxy").join(format!("{env}.pid")),
            log_file: state_dir.join("logs").join(format!("proxy-{env}.log")),
            access_log: cutover_daemon::StateDir::new(state_dir).access_log(env),
        }
    }
}

/// Errors of the proxy process and of its clients.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("listen address {0} is already in use")]
    AddressInUse(SocketAddr),
    #[error("could not listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("another edge proxy for {env} already answers on {}", socket.display())]
    AlreadyRunning { env: String, socket: PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("edge proxy for {env} is not running (admin socket {}: {source})", socket.display())]
    NotRunning {
        env: String,
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("edge proxy for {env} did not answer `{op}` within {} s", after.as_secs_f64())]
    Timeout {
        env: String,
        op: String,
        after: Duration,
    },
    #[error("edge proxy for {env} refused the request: {error}")]
    Refused {
        env: String,
        error: protocol::AdminError,
    },
    #[error("edge proxy for {env} sent a reply that makes no sense: {detail}")]
    BadReply { env: String, detail: String },
    #[error("edge proxy for {env} did not start: {detail}")]
    StartFailed { env: String, detail: String },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProxyError {
    let context = context.into();
    move |source| ProxyError::Io { context, source }
}

/// Runs the proxy until it is told to shut down (admin `shutdown`, SIGTERM or SIGINT). Builds
/// its own tokio runtimes: one single-threaded runtime per serving thread (see [`serve`]).
pub fn run(options: ProxyOptions) -> Result<(), ProxyError> {
    let runtime =
        single_threaded_runtime().map_err(io_error("could not start the async runtime"))?;
    let mut workers = Vec::new();
    let result = runtime.block_on(serve(options, &mut workers));
    // Drops what is left (idle admin connections, stuck requests past the grace period).
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

/// Starts the extra serving threads (the calling thread serves too): each one accepts from the
/// same listening socket and forwards with its own upstream connection pool on its own
/// single-threaded runtime, so a request, its upstream connection and their wakeups stay on
/// one thread (no work stealing, no cross-thread wakeups, no contended pool lock), as in
/// nginx's workers. Each sends on its `done` channel once its connections have finished.
fn start_serving_threads(
    listener: &TcpListener,
    count: usize,
    env: &str,
    routes: &Arc<Routes>,
    access: &Arc<AccessLog>,
    shutdown: &watch::Receiver<bool>,
    workers: &mut Vec<std::thread::JoinHandle<()>>,
) -> Vec<tokio::sync::oneshot::Receiver<()>> {
    let mut done = Vec::new();
    for i in 1..count {
        // The same listening socket (a duplicated descriptor), registered with another runtime.
        let listener = match listener.as_fd().try_clone_to_owned() {
            Ok(fd) => std::net::TcpListener::from(fd),
            Err(e) => {
                eprintln!("edge proxy for {env}: serving with {i} threads: {e}");
                break;
            }
        };
        let shutdown = shutdown.clone();
        let forwarder = Arc::new(Forwarder::new(
            env.to_string(),
            routes.clone(),
            access.clone(),
            shutdown.clone(),
        ));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("proxy-{env}-{i}"))
            .spawn(move || {
                let runtime = match single_threaded_runtime() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        eprintln!("edge proxy: a serving thread could not start: {e}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => accept_until_shutdown(listener, forwarder, shutdown).await,
                        Err(e) => eprintln!("edge proxy: a serving thread could not start: {e}"),
                    }
                });
                let _ = done_tx.send(());
                runtime.shutdown_timeout(Duration::from_secs(1));
            });
        match spawned {
            Ok(handle) => {
                workers.push(handle);
                done.push(done_rx);
            }
            Err(e) => {
                eprintln!("edge proxy for {env}: serving with {i} threads: {e}");
                break;
            }
        }
    }
    done
}

async fn serve(
    options: ProxyOptions,
    workers: &mut Vec<std::thread::JoinHandle<()>>,
) -> Result<(), ProxyError> {
    let listener =
        TcpListener::bind(options.listen)
            .await
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AddrInUse => ProxyError::AddressInUse(options.listen),
                _ => ProxyError::Listen {
                    addr: options.listen,
                    source,
                },
            })?;
    let listen = listener
        .local_addr()
        .map_err(io_error("could not read the listen address"))?;
    if std::os::unix::net::UnixStream::connect(&options.admin_socket).is_ok() {
        return Err(ProxyError::AlreadyRunning {
            env: options.env.clone(),
            socket: options.admin_socket.clone(),
        });
    }
    let initial =
        RoutesFile::load(&options.routes_file, &options.env).map_err(io_error(format!(
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

    let access = match AccessLog::open(&options.access_log) {
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
    let routes = Arc::new(Routes::new(&initial));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let admin = Arc::new(Admin {
        env: options.env.clone(),
        listen,
        routes_file: options.routes_file.clone(),
        routes: routes.clone(),
        current: tokio::sync::Mutex::new(initial.clone()),
        shutdown: shutdown_tx.clone(),
    });
    let admin_task = tokio::spawn(admin.serve(admin_listener));
    tokio::spawn(stop_on_signals(options.env.clone(), shutdown_tx));
    eprintln!(
        "edge proxy for {} (pid {pid}) listening on {listen}, generation {} {}",
        options.env,
        initial.generation,
        describe(&initial)
    );

    let done = start_serving_threads(
        &listener,
        serving_threads(),
        &options.env,
        &routes,
        &access,
        &shutdown_rx,
        workers,
    );
    let log = access.clone();
    let forwarder = Arc::new(Forwarder::new(
        options.env.clone(),
        routes,
        access,
        shutdown_rx.clone(),
    ));
    accept_until_shutdown(listener, forwarder, shutdown_rx).await;
    for finished in done {
        let _ = finished.await;
    }
    log.close();

    admin_task.abort();
    let _ = std::fs::remove_file(&options.admin_socket);
    remove_pid_file(&options.pid_file, pid);
    eprintln!("edge proxy for {} stopped", options.env);
    Ok(())
}

/// Serves client connections until shutdown, then lets them finish for up to [`GRACE`].
async fn accept_until_shutdown(
    listener: TcpListener,
    forwarder: Arc<Forwarder>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Every connection task holds a sender; `recv` returns `None` once all of them are done.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            () = stopping(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(connection(
                        stream,
                        peer,
                        forwarder.clone(),
                        shutdown.clone(),
                        alive_tx.clone(),
                    ));
                }
                Err(e) => {
                    // Usually out of file descriptors: wait a little rather than spin.
                    eprintln!("edge proxy: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    drop(alive_tx);
    let _ = tokio::time::timeout(GRACE, alive_rx.recv()).await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    forwarder: Arc<Forwarder>,
    mut shutdown: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let _ = stream.set_nodelay(true);
    let client_ip = forward::client_ip_header(peer);
    let limits = forwarder.connection_limits();
    let activity = Arc::new(conn::Activity::default());
    let counted = activity.clone();
    let service = service_fn(move |request| {
        let forwarder = forwarder.clone();
        let client_ip = client_ip.clone();
        let alive = alive.clone();
        let activity = counted.clone();
        async move {
            let asked = conn::Asked::of(&request);
            let response = forwarder.handle(request, &client_ip, &alive).await;
            response.map(|r| activity.answer(r, asked, forwarder.access_log()))
        }
    });
    let io = TokioIo::new(conn::Counted::new(stream, activity.clone()));
    let conn = http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        // Both timeouts are kept by `conn::expired` (hyper's runs between requests too).
        .header_read_timeout(None)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        // Nothing is being answered: closing drops no response.
        _ = conn::expired(&activity, limits) => {}
        () = stopping(&mut shutdown) => {
            // Finishes the request in progress, then closes; idle connections close at once.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn stop_on_signals(env: String, shutdown: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("edge proxy for {env}: cannot handle signals: {e}");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => eprintln!("edge proxy for {env}: shutting down (SIGTERM)"),
        _ = int.recv() => eprintln!("edge proxy for {env}: shutting down (SIGINT)"),
    }
    shutdown.send_replace(true);
}

/// Resolves once shutdown has been asked for.
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn remove_pid_file(path: &Path, pid: u32) {
    if cutover_daemon::read_pid(path) == Some(pid) {
        let _ = std::fs::remove_file(path);
    }
}
