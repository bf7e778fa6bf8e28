//! The control plane (`cutover server`): one per state dir. It owns the ledger and the engine
//! and answers the CLI over a unix socket with a small JSON API whose documents are
//! `cutover_api`'s; `convert.rs` is where engine and ledger types become them.
//!
//! Architecture invariant: the server is never on the data path. Edge proxies and instance
//! supervisors are separate processes; killing the server (even with `kill -9`) stops no
//! traffic, and a restarted server reconciles with what it finds.

mod api;
mod auth;
mod certificates;
mod convert;
pub mod https;
mod pipeline;
mod policy;
mod prune;
mod runtimes;
mod ship;
mod triggers;

use std::sync::Arc;

use cutover_daemon::{FileLock, StateDir};
use cutover_engine::{Engine, EngineOptions, HttpProber, ProxyEdge};
use cutover_ledger::Ledger;

/// How long requests still open at a stop may go on before the server exits anyway.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The engine as the server runs it.
pub type ServerEngine = Engine<runtimes::Runtimes, ProxyEdge, HttpProber>;

/// How the server serves besides its unix socket.
#[derive(Debug, Clone, Default)]
pub struct Serving {
    /// Serve the whole API over HTTPS on this address.
    pub listen: Option<std::net::SocketAddr>,
    /// Certificate and key files for it; none: the server's own, made on first start.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Serving {
    /// These options as command-line arguments (paths made absolute), for the next server.
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(listen) = self.listen {
            args.extend(["--listen".to_string(), listen.to_string()]);
        }
        if let Some((cert, key)) = &self.tls {
            let absolute = |p: &std::path::Path| {
                std::path::absolute(p)
                    .unwrap_or_else(|_| p.to_path_buf())
                    .display()
                    .to_string()
            };
            args.extend(["--tls-cert".to_string(), absolute(cert)]);
            args.extend(["--tls-key".to_string(), absolute(key)]);
        }
        args
    }
}

/// Runs the server in the foreground until `cutover down` or a signal. Returns the exit code.
pub fn run(state: StateDir, serving: Serving) -> i32 {
    if let Err(e) = state.create() {
        eprintln!(
            "error: cannot create the state dir {}: {e}",
            state.path.display()
        );
        return 1;
    }
    let lock = match FileLock::try_acquire(&state.run_lock()) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            let pid =
                cutover_daemon::read_pid(&state.pid_file()).map_or("?".into(), |p| p.to_string());
            eprintln!(
                "error: a cutover server already runs for {} (pid {pid})",
                state.path.display()
            );
            return 1;
        }
        Err(e) => {
            eprintln!("error: cannot lock {}: {e}", state.run_lock().display());
            return 1;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let code = runtime.block_on(serve(state.clone(), serving));
    let _ = std::fs::remove_file(state.pid_file());
    drop(lock);
    code
}

/// `[docker] host` of the working tree's config, if it says.
fn docker_host(state: &StateDir) -> Option<String> {
    cutover_config::Config::load(&state.repo_root().join(cutover_config::CONFIG_FILE))
        .ok()
        .and_then(|c| c.docker.host)
}

async fn serve(state: StateDir, serving: Serving) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("error: cannot find the cutover binary: {e}");
            return 1;
        }
    };
    let ledger = match Ledger::open(&state.path.join("ledger.db")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let options = EngineOptions {
        state_dir: state.path.clone(),
        repo_root: state.repo_root(),
    };
    let engine = match Engine::new(
        options,
        ledger,
        runtimes::Runtimes::new(&state.path, &exe, docker_host(&state)),
        ProxyEdge::new(exe.clone(), state.path.clone()),
        HttpProber,
    ) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let socket = state.socket();
    if let Err(e) = cutover_daemon::prepare_socket_dir(&socket) {
        eprintln!("error: cannot prepare {}: {e}", socket.display());
        return 1;
    }
    let listener = match tokio::net::UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", socket.display());
            return 1;
        }
    };
    if let Err(e) =
        cutover_daemon::write_atomic(&state.pid_file(), std::process::id().to_string().as_bytes())
    {
        eprintln!("error: cannot write {}: {e}", state.pid_file().display());
        return 1;
    }
    eprintln!(
        "cutover server {} (pid {}) for {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        state.path.display()
    );
    // HTTPS before anything else, so that a bad certificate or a taken address is the first
    // thing a user reads, and nothing was started.
    let https = match &serving.listen {
        Some(addr) => {
            let files = serving
                .tls
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path()));
            let identity = match https::identity(&state.path, files) {
                Ok(identity) => identity,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 1;
                }
            };
            let listener = match https::bind(*addr).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 1;
                }
            };
            let addr = listener.local_addr().unwrap_or(*addr);
            Some((listener, identity, addr))
        }
        None => None,
    };
    let info = cutover_api::ServerInfo {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: chrono::Utc::now(),
        https: https.as_ref().map(|(_, _, addr)| format!("https://{addr}")),
        fingerprint: https.as_ref().map(|(_, id, _)| id.fingerprint.clone()),
        certificate: https
            .as_ref()
            .map(|(_, id, _)| id.cert_file.display().to_string()),
        args: serving.args(),
    };
    if let Ok(json) = serde_json::to_vec_pretty(&info) {
        let _ = cutover_daemon::write_atomic(&state.path.join("server.json"), &json);
    }
    // Said once `server info` can tell it too.
    if let Some((_, identity, addr)) = &https {
        eprintln!(
            "HTTPS API on https://{addr} (certificate {}: {})",
            identity.cert_file.display(),
            identity.fingerprint
        );
    }
    for line in engine.reconcile().await {
        eprintln!("reconcile: {line}");
    }
    let mut push = None;
    if let Ok(config) =
        cutover_config::Config::load(&state.repo_root().join(cutover_config::CONFIG_FILE))
    {
        let webhooks = triggers::start_webhooks(engine.clone(), state.clone(), &config).await;
        push = webhooks.push;
        for line in [
            triggers::start_notifications(&engine, &state, &config),
            webhooks.said,
        ]
        .into_iter()
        .flatten()
        {
            eprintln!("{line}");
        }
    }
    certificates::watch(engine.clone(), state.clone());
    let watcher = engine.clone();
    tokio::spawn(async move { watcher.watch(std::time::Duration::from_secs(1)).await });
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let app = api::router(Arc::new(api::AppState {
        engine: engine.clone(),
        state: state.clone(),
        stop: stop_tx,
        started_at: info.started_at,
    }));
    if let Some((listener, identity, _)) = https {
        // The same API, every call authenticated by a token whose role allows it; the push
        // webhook (signed, not token-authenticated) beside it.
        let mut remote = app
            .clone()
            .layer(axum::middleware::from_fn_with_state(
                engine.clone(),
                auth::require_role,
            ))
            .layer(axum::extract::DefaultBodyLimit::max(auth::BODY_LIMIT));
        if let Some(push) = push {
            remote = remote.merge(push);
        }
        tokio::spawn(https::serve(listener, remote, identity.config));
    }
    let shutdown = async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = stop_rx.changed() => {}
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    };
    let serving = axum::serve(listener, app).with_graceful_shutdown(shutdown);
    // Requests still open once the server stops (a `logs -f`, a `show --follow`) get a bounded
    // moment to end, so that a stop (or `cutover server restart`) never waits on a follower.
    let bounded = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(STOP_GRACE).await;
            eprintln!(
                "cutover server: requests still open {} s after the stop end with it",
                STOP_GRACE.as_secs()
            );
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        result = serving => result,
        () = bounded => Ok(()),
    };
    let _ = std::fs::remove_file(&socket);
    // The socket folder goes too once the proxies' sockets are gone (remove_dir keeps a
    // folder that is not empty).
    if let Some(dir) = socket.parent() {
        let _ = std::fs::remove_dir(dir);
    }
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
