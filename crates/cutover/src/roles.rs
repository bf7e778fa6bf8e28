//! The background roles, each run by its crate. Each detaches first (before any thread
//! exists) when asked to.

use cutover_cli::{ProxyArgs, Role, SuperviseArgs};
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
    }
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
    let options = cutover_proxy::ProxyOptions::new(&args.edge_dir);
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
