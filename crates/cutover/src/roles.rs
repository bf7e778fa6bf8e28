//! The background roles, each run by its crate. Each detaches first (before any thread
//! exists) when asked to.

use cutover_cli::{EdgeCommand, ProxyArgs, Role, SuperviseArgs};
use cutover_daemon::StateDir;

pub fn run(role: Role) -> i32 {
    match role {
        Role::Server {
            state,
            detach,
            serving,
        } => server(state, detach, serving),
        Role::Proxy(args) => proxy(args),
        Role::Supervise(args) => supervise(args),
        Role::Edge(command) => edge(command),
    }
}

/// `cutover edge renew HOST`, `status` and `upgrade`: asked of the machine's edge (the one of
/// `CUTOVER_EDGE_DIR`) over its admin socket.
fn edge(command: EdgeCommand) -> i32 {
    let dir = cutover_proxy::default_edge_dir();
    let client = cutover_proxy::ProxyClient::for_options(&cutover_proxy::ProxyOptions::new(&dir));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return 1;
        }
    };
    let refused = |e: cutover_proxy::ProxyError| {
        match e {
            cutover_proxy::ProxyError::Refused { error } => {
                eprintln!("error: {}", error.message);
                if let Some(hint) = error.hint {
                    eprintln!("hint: {hint}");
                }
            }
            cutover_proxy::ProxyError::NotRunning { .. } => not_running(&dir),
            other => eprintln!("error: {other}"),
        }
        1
    };
    match command {
        EdgeCommand::Upgrade => upgrade_edge(&dir),
        EdgeCommand::Renew { host } => match runtime.block_on(client.renew(&host)) {
            Ok(not_after) => {
                eprintln!(
                    "the certificate of {host} was renewed by ACME: valid until {}",
                    until(not_after)
                );
                0
            }
            Err(e) => refused(e),
        },
        EdgeCommand::Status { json } => {
            match runtime.block_on(client.status()) {
                Ok(status) if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&status).unwrap_or_default()
                    );
                    0
                }
                Ok(status) => {
                    println!(
                        "edge {} (pid {}) in {}",
                        status.version,
                        status.pid,
                        dir.display()
                    );
                    if status.binary_replaced {
                        println!("  {}", replaced(status.exe.as_deref()));
                    }
                    for l in &status.listeners {
                        match &l.error {
                            Some(e) => println!("  {}: cannot listen: {e}", l.listen),
                            None => println!("  listening on {}", l.listen),
                        }
                    }
                    for r in &status.routes {
                        let hosts = if r.hosts.is_empty() {
                            "every host".to_string()
                        } else {
                            r.hosts.join(", ")
                        };
                        // A route set without an app name (an older server) names its state dir.
                        let app = if r.app.is_empty() {
                            format!("the app of {}", r.route.owner)
                        } else {
                            r.app.clone()
                        };
                        println!("  {} of {app} on {} for {hosts}", r.route.env, r.listen);
                        for u in &r.upstreams {
                            if let Some(e) = &u.ejected {
                                println!(
                                    "    upstream {}: connecting failed: {}; skipped while another answers until {} (ejection {} in a row), then one request tries it again",
                                    u.addr,
                                    e.error,
                                    ejected_until(e.until_ms),
                                    e.times
                                );
                            }
                        }
                    }
                    for c in &status.acme {
                        let serving = c.not_after.map_or_else(
                            || "no certificate yet".to_string(),
                            |t| format!("valid until {}", until(t)),
                        );
                        match &c.error {
                        Some(e) => println!("  certificate of {} by ACME: {serving}; the last attempt failed: {e}", c.host),
                        None => println!("  certificate of {} by ACME: {serving}", c.host),
                    }
                    }
                    0
                }
                Err(e) => refused(e),
            }
        }
    }
}

/// What `cutover edge status` says of an edge whose binary (at `exe`) was replaced on disk or
/// removed since it started.
fn replaced(exe: Option<&std::path::Path>) -> String {
    match exe {
        Some(exe) if exe.exists() => format!(
            "its binary {} was replaced on disk since it started: the next server start \
             (`cutover server restart`) or `cutover edge upgrade` moves it to the new binary",
            exe.display()
        ),
        Some(exe) => format!(
            "its binary {} was removed since it started: `cutover edge upgrade` moves it to the \
             binary that runs the command",
            exe.display()
        ),
        None => "its binary was replaced on disk since it started: `cutover edge upgrade` \
                 moves it to the binary that runs the command"
            .to_string(),
    }
}

fn not_running(dir: &std::path::Path) {
    eprintln!("error: no edge runs in {}", dir.display());
    eprintln!("hint: deploy an environment to start it (CUTOVER_EDGE_DIR names another edge)");
}

/// `cutover edge upgrade`: an edge of this binary takes the running one's sockets over.
fn upgrade_edge(dir: &std::path::Path) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("error: cannot find this cutover binary: {e}");
            return 1;
        }
    };
    match cutover_proxy::upgrade(&exe, dir) {
        Ok(done) if done.restarted => {
            eprintln!(
                "edge restarted: pid {} (cutover {}) could not hand its sockets over, so it was stopped; pid {} (cutover {}) listens again (a short gap)",
                done.old_pid, done.old_version, done.new_pid, cutover_proxy::VERSION
            );
            0
        }
        Ok(done) => {
            eprintln!(
                "edge upgraded: pid {} (cutover {}) handed its listening sockets to pid {} (cutover {}); it drains what it serves and exits",
                done.old_pid, done.old_version, done.new_pid, cutover_proxy::VERSION
            );
            0
        }
        Err(cutover_proxy::ProxyError::NotRunning { .. }) => {
            not_running(dir);
            1
        }
        Err(e) => {
            eprintln!("error: the edge was not upgraded: {e}; the running edge serves on");
            eprintln!(
                "hint: its log is {}",
                cutover_proxy::ProxyOptions::new(dir).log_file.display()
            );
            1
        }
    }
}

/// "12:00:10 UTC", the end of an upstream's ejection (Unix ms).
fn ejected_until(until_ms: u64) -> String {
    i64::try_from(until_ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || until_ms.to_string(),
            |t| t.format("%H:%M:%S UTC").to_string(),
        )
}

fn until(not_after: i64) -> String {
    chrono::DateTime::from_timestamp(not_after, 0).map_or_else(
        || not_after.to_string(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// `cutover supervise`: one instance under its supervisor (started by the server).
fn supervise(args: SuperviseArgs) -> i32 {
    if args.detach {
        if let Err(e) = cutover_daemon::detach(None) {
            eprintln!("error: could not detach the supervisor: {e}");
            return 1;
        }
    }
    cutover_process::supervisor::run(&args.state_dir)
}

/// `cutover proxy`: the machine's edge (started by the first server that needs it).
fn proxy(args: ProxyArgs) -> i32 {
    // Which binary this edge runs, recorded before anyone can replace it (`binary_replaced`
    // in its status).
    let _ = cutover_daemon::started_exe();
    let mut options = cutover_proxy::ProxyOptions::new(&args.edge_dir);
    options.takeover = args.takeover;
    if args.detach {
        if let Err(e) = cutover_proxy::prepare_edge_dir(&options.dir)
            .and_then(|()| cutover_daemon::detach(Some(&options.log_file)))
        {
            eprintln!("error: could not detach the edge: {e}");
            return 1;
        }
    }
    match cutover_proxy::run(options) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: edge in {}: {e}", args.edge_dir.display());
            1
        }
    }
}

/// `cutover server`: the control plane, in the foreground unless `--detach` (the CLI starts
/// it so when none runs).
fn server(state: StateDir, detach: bool, serving: cutover_cli::Serving) -> i32 {
    // Before anyone could replace the binary: `ping` tells when it was.
    let _ = cutover_daemon::started_exe();
    if detach {
        if let Err(e) = state.create() {
            eprintln!("error: cannot create {}: {e}", state.path.display());
            return 1;
        }
        if let Err(e) = cutover_daemon::detach(Some(&state.log_file())) {
            eprintln!("error: could not detach the server: {e}");
            return 1;
        }
        cutover_daemon::close_stdin();
    }
    cutover_server::run(
        state,
        cutover_server::Serving {
            listen: serving.listen,
            tls: serving.tls,
        },
    )
}
