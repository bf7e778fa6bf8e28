//! End-to-end tests of the instance supervisor role of the real `cutover` binary:
//! `cutover supervise --state-dir D --detach`, spec as JSON on standard input, state published
//! in `D/instances/<id>.json`, log in `D/logs/<env>/<id>.log`.
//!
//! `ProcessRuntime` itself (start/stop/list/inspect/logs on top of this role) is tested end to
//! end in `crates/cutover-runtime/tests/process.rs`. This file only uses the dev-dependencies
//! this crate has (serde_json, tempfile), so it drives the role the way `ProcessRuntime` does.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const SECRET: &str = "s3cr3t-value-never-on-disk";

/// A state dir plus the supervisors started in it; stops them all when dropped, also when a
/// test fails.
struct Fixture {
    dir: tempfile::TempDir,
    supervisors: Vec<u32>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            supervisors: Vec::new(),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn spec(&self, id: &str, argv: &[&str], stop_timeout_ms: u64) -> Value {
        json!({
            "id": id, "app": "demo", "env": "staging", "release": 7, "version": "abc123",
            "argv": argv, "cwd": self.dir.path(),
            "vars": {"PORT": "18123", "APP_VERSION": "abc123", "SECRET_TOKEN": SECRET},
            "port": 18123, "stop_timeout": stop_timeout_ms,
        })
    }

    /// Runs `cutover supervise --state-dir D --detach` with `spec` on stdin, as
    /// `cutover_daemon::spawn_detached` does; returns the detached supervisor's pid.
    fn supervise(&mut self, spec: &Value) -> u32 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["supervise", "--state-dir"])
            .arg(self.state_dir())
            .arg("--detach")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(spec.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        self.supervisors.push(pid);
        pid
    }

    fn state(&self, id: &str) -> Option<Value> {
        let text =
            fs::read_to_string(self.state_dir().join(format!("instances/{id}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn log(&self, id: &str) -> String {
        fs::read_to_string(self.state_dir().join(format!("logs/staging/{id}.log")))
            .unwrap_or_default()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for &pid in &self.supervisors {
            if runs_supervise(pid) {
                kill("-TERM", pid);
                wait_until(Duration::from_secs(5), || !alive(pid));
            }
        }
    }
}

fn kill(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn runs_supervise(pid: u32) -> bool {
    alive(pid)
        && fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains("supervise"))
            .unwrap_or(false)
}

fn ppid(pid: u32) -> u32 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

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

fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hits.extend(files_containing(&path, needle));
        } else if String::from_utf8_lossy(&fs::read(&path).unwrap()).contains(needle) {
            hits.push(path);
        }
    }
    hits
}

#[test]
fn supervise_runs_the_instance_detached_and_stops_it_on_sigterm() {
    let mut fx = Fixture::new();
    let spec = fx.spec(
        "staging-r7-1",
        &[
            "sh",
            "-c",
            "echo PORT=$PORT SECRET_LEN=${#SECRET_TOKEN}; sleep 60",
        ],
        5000,
    );
    let supervisor = fx.supervise(&spec);
    assert!(wait_until(Duration::from_secs(3), || fx
        .state("staging-r7-1")
        .is_some_and(|s| s["state"] == "running")));
    let state = fx.state("staging-r7-1").unwrap();
    assert_eq!(state["supervisor_pid"], supervisor);
    assert_eq!(state["address"], "127.0.0.1:18123");
    let pid = state["pid"].as_u64().unwrap() as u32;
    assert!(alive(pid));
    // Detached: the supervisor is not our child; the instance is the supervisor's.
    assert_ne!(ppid(supervisor), std::process::id());
    assert_eq!(ppid(pid), supervisor);

    assert!(wait_until(Duration::from_secs(3), || fx
        .log("staging-r7-1")
        .contains("PORT=18123")));
    let log = fx.log("staging-r7-1");
    assert!(
        log.contains(&format!("SECRET_LEN={}", SECRET.len())),
        "{log}"
    );
    assert!(
        log.contains(&format!("[cutover] started pid {pid}")),
        "{log}"
    );
    assert!(files_containing(&fx.state_dir(), SECRET).is_empty());
    assert!(state.get("vars").is_none(), "{state}");

    kill("-TERM", supervisor);
    assert!(wait_until(Duration::from_secs(3), || !alive(supervisor)));
    assert!(!alive(pid));
    let state = fx.state("staging-r7-1").unwrap();
    assert_eq!(state["state"], "stopped");
    assert_eq!(state["pid"], Value::Null);
    assert_eq!(state["exits"][0]["status"], "killed by signal 15");
    assert!(fx.log("staging-r7-1").ends_with("[cutover] stopped\n"));
}

#[test]
fn supervise_restarts_a_crashing_instance_and_records_its_exits() {
    let mut fx = Fixture::new();
    fx.supervise(&fx.spec("crash-1", &["sh", "-c", "echo boom; exit 3"], 1000));
    assert!(
        wait_until(Duration::from_secs(5), || fx
            .state("crash-1")
            .is_some_and(|s| s["restarts"].as_u64() >= Some(2))),
        "{:?}",
        fx.state("crash-1")
    );
    let state = fx.state("crash-1").unwrap();
    assert_eq!(state["exits"][0]["status"], "exit status 3");
    let log = fx.log("crash-1");
    assert!(
        log.contains("[cutover] exited with exit status 3; restarting in 200ms"),
        "{log}"
    );
}

#[test]
fn supervise_kills_an_instance_that_ignores_sigterm_after_stop_timeout() {
    let mut fx = Fixture::new();
    let spec = fx.spec(
        "stubborn-1",
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.1; done",
        ],
        300,
    );
    let supervisor = fx.supervise(&spec);
    // The log line can come before the state file names the pid: wait for both.
    assert!(wait_until(Duration::from_secs(10), || fx
        .log("stubborn-1")
        .contains("ready")
        && fx
            .state("stubborn-1")
            .is_some_and(|s| s["pid"].as_u64().is_some())));
    let pid = fx.state("stubborn-1").unwrap()["pid"].as_u64().unwrap() as u32;
    let began = Instant::now();
    kill("-TERM", supervisor);
    assert!(wait_until(Duration::from_secs(3), || !alive(supervisor)));
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert!(!alive(pid));
    let state = fx.state("stubborn-1").unwrap();
    assert_eq!(state["state"], "stopped");
    assert_eq!(state["exits"][0]["status"], "killed by signal 9");
}

#[test]
fn supervise_reports_a_missing_command_in_the_state_file_and_exits() {
    let mut fx = Fixture::new();
    let supervisor = fx.supervise(&fx.spec("missing-1", &["./nope"], 1000));
    assert!(wait_until(Duration::from_secs(3), || !alive(supervisor)));
    let state = fx.state("missing-1").unwrap();
    assert_eq!(
        state["error"],
        format!(
            "run command `./nope` not found in {} (instance missing-1)",
            fx.dir.path().display()
        )
    );
    assert_eq!(state["state"], "stopped");
    assert!(fx
        .log("missing-1")
        .contains("[cutover] run command `./nope` not found"));
}

#[test]
fn a_malformed_spec_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["supervise", "--state-dir"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bad =
        format!("{{\"id\": \"x\", \"vars\": {{\"TOKEN\": \"{SECRET}\"}}, \"port\": \"{SECRET}\"}}");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(bad.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("instance spec on standard input is not valid"),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET), "{stderr}");
}
