//! End-to-end tests of `ProcessRuntime` with real processes.
//!
//! This test binary has its own `main` (harness = false): run as `<exe> supervise --state-dir D
//! --detach` it is the supervisor, making exactly the calls that `cutover supervise` makes
//! (`cutover_daemon::detach(None)`, then `supervisor::run`). Otherwise it runs the tests below,
//! each in its own thread. `cargo test -p cutover-runtime --test process -- NAME` filters.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cutover_process::ProcessRuntime;
use cutover_runtime::{
    InstanceInfo, InstanceSpec, InstanceState, Placement, Runtime, RuntimeError, Workload,
};

const SECRET: &str = "s3cr3t-value-never-on-disk";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("supervise") {
        std::process::exit(supervise(&args[2..]));
    }
    let tests: &[(&str, fn())] = &[
        (
            "starts_with_its_env_and_keeps_secrets_off_disk",
            starts_with_its_env_and_keeps_secrets_off_disk,
        ),
        (
            "a_crashing_app_is_restarted_and_its_exits_recorded",
            a_crashing_app_is_restarted_and_its_exits_recorded,
        ),
        (
            "stop_kills_an_app_that_ignores_sigterm_after_stop_timeout",
            stop_kills_an_app_that_ignores_sigterm_after_stop_timeout,
        ),
        (
            "stop_of_a_well_behaved_app_is_quick_and_unknown_ids_are_ok",
            stop_of_a_well_behaved_app_is_quick_and_unknown_ids_are_ok,
        ),
        (
            "a_fresh_runtime_adopts_running_instances_and_drops_dead_ones",
            a_fresh_runtime_adopts_running_instances_and_drops_dead_ones,
        ),
        (
            "a_missing_or_non_executable_command_is_a_clean_error",
            a_missing_or_non_executable_command_is_a_clean_error,
        ),
        (
            "logs_returns_the_tail_also_after_stop",
            logs_returns_the_tail_also_after_stop,
        ),
        (
            "a_log_that_cannot_be_opened_is_a_clean_error",
            a_log_that_cannot_be_opened_is_a_clean_error,
        ),
        (
            "starting_a_running_id_again_is_refused",
            starting_a_running_id_again_is_refused,
        ),
        (
            "stop_ends_an_instance_whose_supervisor_died_before_writing_its_state",
            stop_ends_an_instance_whose_supervisor_died_before_writing_its_state,
        ),
    ];
    let filters: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with('-')).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    let selected: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", selected.len());
    let handles: Vec<_> = selected
        .iter()
        .map(|&&(name, test)| (name, std::thread::spawn(test)))
        .collect();
    let mut failed = Vec::new();
    for (name, handle) in handles {
        let ok = handle.join().is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}

/// The `supervise` role, as `cutover supervise` runs it.
fn supervise(args: &[String]) -> i32 {
    let state_dir = args
        .windows(2)
        .find(|w| w[0] == "--state-dir")
        .map(|w| PathBuf::from(&w[1]));
    let Some(state_dir) = state_dir else {
        eprintln!("usage: supervise --state-dir D [--detach]");
        return 2;
    };
    if args.iter().any(|a| a == "--detach") {
        if let Err(e) = cutover_daemon::detach(None) {
            eprintln!("error: could not detach the supervisor: {e}");
            return 1;
        }
    }
    cutover_process::supervisor::run(&state_dir)
}

/// One test's state dir, runtime and instances; stops every instance it started when dropped,
/// also when the test fails.
struct Fixture {
    dir: tempfile::TempDir,
    rt: ProcessRuntime,
    tokio: tokio::runtime::Runtime,
    started: Vec<String>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        Fixture {
            rt: ProcessRuntime::new(&dir.path().join("state"), &exe),
            dir,
            tokio: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            started: Vec::new(),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn spec(&self, id: &str, script: &str) -> InstanceSpec {
        let vars = BTreeMap::from([
            ("APP_VERSION".to_string(), "abc123".to_string()),
            ("SECRET_TOKEN".to_string(), SECRET.to_string()),
        ]);
        InstanceSpec {
            id: id.into(),
            app: "demo".into(),
            env: "staging".into(),
            release: 7,
            version: "abc123".into(),
            kind: cutover_config::RuntimeKind::Process,
            placement: Placement {
                workload: Workload::Bundle {
                    dir: self.dir.path().to_path_buf(),
                },
                data_dir: None,
                volumes: Vec::new(),
                constraints: Vec::new(),
            },
            argv: vec!["sh".into(), "-c".into(), script.into()],
            vars,
            secret_names: Vec::new(),
            port_env: "PORT".into(),
            app_port: None,
            stop_timeout: Duration::from_secs(5),
        }
    }

    fn start(&mut self, spec: InstanceSpec) -> Result<InstanceInfo, RuntimeError> {
        self.started.push(spec.id.clone());
        self.tokio.block_on(self.rt.start(spec))
    }

    fn stop(&self, id: &str) {
        self.tokio.block_on(self.rt.stop(id)).unwrap();
    }

    fn inspect(&self, id: &str) -> Option<InstanceInfo> {
        self.tokio.block_on(self.rt.inspect(id)).unwrap()
    }

    fn logs(&self, id: &str, lines: usize) -> Vec<String> {
        self.tokio.block_on(self.rt.logs(id, lines)).unwrap()
    }

    fn log_text(&self, id: &str) -> String {
        self.logs(id, 10_000).join("\n")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for id in &self.started {
            let _ = self.tokio.block_on(self.rt.stop(id));
        }
    }
}

/// Polls `cond` every 20 ms for up to `timeout`.
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (ppid, pgrp) from /proc/<pid>/stat.
fn ppid_and_pgrp(pid: u32) -> (u32, u32) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    (fields[1].parse().unwrap(), fields[2].parse().unwrap())
}

fn all_files_contain(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hits.extend(all_files_contain(&path, needle));
        } else if String::from_utf8_lossy(&fs::read(&path).unwrap()).contains(needle) {
            hits.push(path);
        }
    }
    hits
}

fn starts_with_its_env_and_keeps_secrets_off_disk() {
    let mut fx = Fixture::new();
    // The cargo test runner's own variables must not reach the app. (`$$` is a `$` for the
    // shell: cutover expands `$NAME` in the command itself.)
    let spec = fx.spec(
        "staging-r7-1",
        "echo PORT=$$PORT VERSION=$$APP_VERSION SECRET_LEN=$${#SECRET_TOKEN}; \
         echo CARGO=$${CARGO_MANIFEST_DIR:-unset}; echo oops >&2; sleep 60",
    );
    let info = fx.start(spec).unwrap();
    let port = info.port;
    assert_eq!(info.state, InstanceState::Running);
    assert_eq!(info.address.to_string(), format!("127.0.0.1:{port}"));
    let pid = info.pid.expect("a running instance has a pid");
    assert!(cutover_daemon::pid_alive(pid));

    // The supervisor is detached: not our child, and the app leads its own process group.
    let (ppid, _) = ppid_and_pgrp(info.supervisor_pid.unwrap());
    assert_ne!(ppid, std::process::id());
    assert_eq!(ppid_and_pgrp(pid), (info.supervisor_pid.unwrap(), pid));

    assert!(
        wait_until(Duration::from_secs(3), || fx
            .log_text("staging-r7-1")
            .contains("oops")),
        "{}",
        fx.log_text("staging-r7-1")
    );
    let log = fx.log_text("staging-r7-1");
    assert!(
        log.contains(&format!("[cutover] started pid {pid}")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "PORT={port} VERSION=abc123 SECRET_LEN={}",
            SECRET.len()
        )),
        "{log}"
    );
    assert!(log.contains("CARGO=unset"), "{log}");
    assert_eq!(
        info.log_file,
        Some(fx.state_dir().join("logs/staging/staging-r7-1.log"))
    );

    // Nothing in the state dir holds the secret, nor does the supervisor's command line.
    assert!(all_files_contain(&fx.state_dir(), SECRET).is_empty());
    let cmdline = fs::read(format!("/proc/{}/cmdline", info.supervisor_pid.unwrap())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(SECRET));
    let state = fs::read_to_string(fx.state_dir().join("instances/staging-r7-1.json")).unwrap();
    assert!(!state.contains("SECRET_TOKEN"), "{state}");
}

fn a_crashing_app_is_restarted_and_its_exits_recorded() {
    let mut fx = Fixture::new();
    fx.start(fx.spec("crash-1", "echo boom; exit 3")).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || fx
            .inspect("crash-1")
            .is_some_and(|i| i.restarts >= 2 && i.exits.len() >= 2)),
        "{:?}",
        fx.inspect("crash-1")
    );
    let info = fx.inspect("crash-1").unwrap();
    assert!(
        info.exits.iter().all(|e| e.status == "exit status 3"),
        "{:?}",
        info.exits
    );
    assert!(info.exits.windows(2).all(|w| w[0].at <= w[1].at));
    let log = fx.log_text("crash-1");
    assert!(
        log.contains("[cutover] exited with exit status 3; restarting in 200ms"),
        "{log}"
    );
    assert!(
        log.contains("[cutover] exited with exit status 3; restarting in 400ms"),
        "{log}"
    );
    assert!(log.matches("boom").count() >= 2, "{log}");
    fx.stop("crash-1");
    assert!(fx.inspect("crash-1").is_none());
}

fn stop_kills_an_app_that_ignores_sigterm_after_stop_timeout() {
    let mut fx = Fixture::new();
    let mut spec = fx.spec(
        "stubborn-1",
        "trap '' TERM; echo ready; while :; do sleep 0.1; done",
    );
    spec.stop_timeout = Duration::from_millis(300);
    let info = fx.start(spec).unwrap();
    let (supervisor, pid) = (info.supervisor_pid.unwrap(), info.pid.unwrap());
    assert!(wait_until(Duration::from_secs(3), || fx
        .log_text("stubborn-1")
        .contains("ready")));

    let began = Instant::now();
    fx.stop("stubborn-1");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "stopped after {took:?}, before stop_timeout"
    );
    assert!(took < Duration::from_secs(3), "stop took {took:?}");
    assert!(!cutover_daemon::pid_alive(supervisor));
    assert!(!cutover_daemon::pid_alive(pid));
    assert!(!fx.state_dir().join("instances/stubborn-1.json").exists());
    let log = fx.log_text("stubborn-1");
    assert!(log.contains("still running after 300ms: SIGKILL"), "{log}");
    assert!(
        log.contains("[cutover] exited with killed by signal 9"),
        "{log}"
    );
    assert!(log.ends_with("[cutover] stopped"), "{log}");
}

fn stop_of_a_well_behaved_app_is_quick_and_unknown_ids_are_ok() {
    let mut fx = Fixture::new();
    let info = fx.start(fx.spec("calm-1", "sleep 60")).unwrap();
    let began = Instant::now();
    fx.stop("calm-1"); // stop_timeout is 5 s: SIGTERM must end it well before
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    assert!(!cutover_daemon::pid_alive(info.supervisor_pid.unwrap()));
    assert!(!cutover_daemon::pid_alive(info.pid.unwrap()));
    assert!(fx
        .log_text("calm-1")
        .contains("[cutover] exited with killed by signal 15"));
    fx.stop("calm-1");
    fx.stop("never-started");
}

fn a_fresh_runtime_adopts_running_instances_and_drops_dead_ones() {
    let mut fx = Fixture::new();
    let a = fx.start(fx.spec("adopt-a", "sleep 60")).unwrap();
    let b = fx.start(fx.spec("adopt-b", "sleep 60")).unwrap();

    // A state file whose supervisor is dead (a reaped child's pid) is stale.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let stale = fs::read_to_string(fx.state_dir().join("instances/adopt-a.json"))
        .unwrap()
        .replace(
            &format!("\"supervisor_pid\": {}", a.supervisor_pid.unwrap()),
            &format!("\"supervisor_pid\": {dead_pid}"),
        )
        .replace("adopt-a", "gone-1");
    let stale_path = fx.state_dir().join("instances/gone-1.json");
    fs::write(&stale_path, stale).unwrap();

    let fresh = ProcessRuntime::new(&fx.state_dir(), &std::env::current_exe().unwrap());
    let listed = fx.tokio.block_on(fresh.list()).unwrap();
    let ids: Vec<(&str, u32)> = listed
        .iter()
        .map(|i| (i.id.as_str(), i.supervisor_pid.unwrap()))
        .collect();
    assert_eq!(
        ids,
        [
            ("adopt-a", a.supervisor_pid.unwrap()),
            ("adopt-b", b.supervisor_pid.unwrap())
        ]
    );
    assert!(!stale_path.exists(), "the stale state file is removed");
    assert!(fx
        .tokio
        .block_on(fresh.inspect("gone-1"))
        .unwrap()
        .is_none());

    // The fresh runtime can stop what the old one started.
    fx.tokio.block_on(fresh.stop("adopt-a")).unwrap();
    assert!(!cutover_daemon::pid_alive(a.supervisor_pid.unwrap()));
    let listed = fx.tokio.block_on(fresh.list()).unwrap();
    assert_eq!(listed.len(), 1);
}

fn a_missing_or_non_executable_command_is_a_clean_error() {
    let mut fx = Fixture::new();
    let mut spec = fx.spec("missing-1", "");
    spec.argv = vec!["./nope".into(), "--serve".into()];
    let err = fx.start(spec).unwrap_err();
    assert!(matches!(err, RuntimeError::Start(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "run command `./nope` not found in {} (instance missing-1)",
            fx.dir.path().display()
        )
    );

    fs::write(fx.dir.path().join("app"), "#!/bin/sh\n").unwrap();
    let mut spec = fx.spec("noexec-1", "");
    spec.argv = vec!["./app".into()];
    let err = fx.start(spec).unwrap_err().to_string();
    assert!(
        err.contains("`./app`") && err.contains("not an executable file"),
        "{err}"
    );

    let mut spec = fx.spec("nopath-1", "");
    spec.argv = vec!["no-such-command-xyz".into()];
    let err = fx.start(spec).unwrap_err().to_string();
    assert!(
        err.starts_with("run command `no-such-command-xyz` not found on PATH"),
        "{err}"
    );

    let mut spec = fx.spec("../evil", "");
    spec.argv = vec!["sh".into()];
    assert!(matches!(fx.start(spec), Err(RuntimeError::InvalidSpec(_))));

    assert!(fx.tokio.block_on(fx.rt.list()).unwrap().is_empty());
    assert!(fx
        .log_text("missing-1")
        .contains("[cutover] run command `./nope` not found"));
}

fn logs_returns_the_tail_also_after_stop() {
    let mut fx = Fixture::new();
    fx.start(fx.spec(
        "logs-1",
        "for i in 1 2 3 4 5; do echo line$$i; done; sleep 60",
    ))
    .unwrap();
    assert!(wait_until(Duration::from_secs(3), || fx
        .log_text("logs-1")
        .contains("line5")));
    assert_eq!(fx.logs("logs-1", 2), ["line4", "line5"]);
    assert_eq!(fx.logs("logs-1", 6)[0], fx.logs("logs-1", 100)[0]);
    assert!(fx.logs("logs-1", 6)[0].starts_with("[cutover] started pid "));
    fx.stop("logs-1");
    let tail = fx.logs("logs-1", 1);
    assert_eq!(tail, ["[cutover] stopped"]);
    assert!(matches!(
        fx.tokio.block_on(fx.rt.logs("nothing-1", 5)),
        Err(RuntimeError::NotFound(_))
    ));
}

fn starting_a_running_id_again_is_refused() {
    let mut fx = Fixture::new();
    let first = fx.start(fx.spec("twice-1", "sleep 60")).unwrap();
    let err = fx.start(fx.spec("twice-1", "sleep 60")).unwrap_err();
    assert!(matches!(err, RuntimeError::AlreadyRunning(_)), "{err:?}");
    assert_eq!(
        fx.inspect("twice-1").unwrap().supervisor_pid.unwrap(),
        first.supervisor_pid.unwrap()
    );
}

fn a_log_that_cannot_be_opened_is_a_clean_error() {
    let mut fx = Fixture::new();
    // A file where the environment's log folder should be.
    fs::create_dir_all(fx.state_dir().join("logs")).unwrap();
    fs::write(fx.state_dir().join("logs/staging"), "").unwrap();
    let err = fx.start(fx.spec("nolog-1", "sleep 60")).unwrap_err();
    assert!(matches!(err, RuntimeError::Start(_)), "{err:?}");
    let err = err.to_string();
    assert!(err.starts_with("could not open the log "), "{err}");
    assert!(err.contains("of instance nolog-1"), "{err}");
    assert!(!fx.state_dir().join("instances/nolog-1.json").exists());
}

/// Regression (chaos, a leak after `cutover down`): a supervisor SIGKILLed after it started
/// its instance but before it wrote the state file leaves an instance nothing records. A stop
/// of that id finds it by its mark and ends its process group, children included.
fn stop_ends_an_instance_whose_supervisor_died_before_writing_its_state() {
    use std::os::unix::process::CommandExt as _;
    let fx = Fixture::new();
    let mut orphan = std::process::Command::new("sh")
        .args(["-c", "sleep 60 & wait"])
        .env("CUTOVER_INSTANCE", "orphan-1")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = orphan.id();
    // A stranger with another instance's mark is left alone.
    let mut other = std::process::Command::new("sleep")
        .arg("60")
        .env("CUTOVER_INSTANCE", "orphan-10")
        .process_group(0)
        .spawn()
        .unwrap();
    assert!(fx.inspect("orphan-1").is_none(), "no state file records it");
    let began = Instant::now();
    fx.stop("orphan-1");
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "{:?}",
        began.elapsed()
    );
    assert!(
        wait_until(Duration::from_secs(2), || orphan
            .try_wait()
            .unwrap()
            .is_some()),
        "the orphaned instance {pid} still runs"
    );
    // SAFETY: signal 0 checks only whether the group still has a member.
    let group_left = unsafe { libc::kill(-(pid as i32), 0) } == 0;
    assert!(!group_left, "its child (sleep) still runs");
    assert!(
        other.try_wait().unwrap().is_none(),
        "a stranger was stopped"
    );
    other.kill().unwrap();
    other.wait().unwrap();
}
