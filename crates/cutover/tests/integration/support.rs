//! The harness: a [`Lab`] is a temporary git repository holding the course's `tasks-app`
//! (compiled once per test process with `rustc`, committed as a plain file) and a
//! `cutover.toml` with short timings and ports of its own. Tests drive the real `cutover`
//! binary in it and look at what a user sees: exit codes, stdout/stderr, what the edge proxy
//! serves, and the `--json` documents.
//!
//! Dropping a lab runs `cutover down` and then kills (by pid, only processes that belong to the
//! lab's directory) anything left over, also when the test failed.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest any single `cutover` command may take before the test gives up on it.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// The `tasks-app` binary, compiled once per test process.
pub fn tasks_app() -> &'static Path {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    APP.get_or_init(|| {
        let source =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tasks-app/src/main.rs");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("integration-tasks-app-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join("tasks-app");
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let result = Command::new(rustc)
            .args(["-O", "--edition", "2021", "--crate-name", "tasks_app", "-o"])
            .arg(&out)
            .arg(&source)
            .output()
            .expect("running rustc");
        assert!(
            result.status.success(),
            "compiling {} failed:\n{}",
            source.display(),
            String::from_utf8_lossy(&result.stderr)
        );
        out
    })
}

/// A port nobody listens on now, and that this process never handed out before. Taken below
/// the kernel's ephemeral range (32768–60999 by default), from where this process's id says,
/// so that no outgoing connection (a probe's, curl's, another test's) is given it as its local
/// port between now and the moment the test's server binds it — picking with a bind to port 0
/// made that collision possible, and a test failed with "address in use" once under load.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: OnceLock<std::sync::atomic::AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        std::sync::atomic::AtomicU32::new(std::process::id().wrapping_mul(7919) % SPAN)
    });
    for _ in 0..SPAN {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (FIRST + n % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}

/// What a `cutover` command did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
    pub args: Vec<String>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`cutover {}` exited {} after {:.2?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.took,
            self.stdout,
            self.stderr
        )
    }
}

impl Run {
    /// Asserts the exit code; the panic shows the whole run.
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "unexpected exit code: {self:?}");
        self
    }

    /// Asserts that stderr contains every needle (case-insensitive).
    #[track_caller]
    pub fn says(self, needles: &[&str]) -> Run {
        let text = self.stderr.to_lowercase();
        for needle in needles {
            assert!(
                text.contains(&needle.to_lowercase()),
                "stderr does not mention {needle:?}: {self:?}"
            );
        }
        self
    }

    /// The stdout parsed as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }
}

/// Knobs of the generated `cutover.toml`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub app: String,
    pub build: String,
    pub run: String,
    pub health: String,
    pub monitor: String,
    pub strategy: String,
    /// Extra top-level tables (e.g. `[secrets]`), appended before the environments.
    pub extra: String,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            app: "lab".into(),
            build: r#"files = ["tasks-app"]"#.into(),
            run: "command = [\"./tasks-app\"]\nstop_timeout = \"2s\"".into(),
            health: "path = \"/health\"\nbody_contains = \"ok\"\ninterval = \"50ms\"\ntimeout = \"2s\"\nhealthy_threshold = 2\ndeadline = \"5s\"\nunhealthy_threshold = 3".into(),
            monitor: "1s".into(),
            strategy: "blue-green".into(),
            extra: String::new(),
        }
    }
}

pub struct Lab {
    dir: tempfile::TempDir,
    pub repo: PathBuf,
    /// The staging edge proxy's address.
    pub listen: SocketAddr,
    pub settings: Settings,
    /// Extra environment variables for every `cutover` command.
    pub env: Vec<(String, String)>,
    /// The `cutover` binary the lab's commands run: the one built, unless a test installs a
    /// copy of its own (see [`Lab::root`]).
    pub exe: PathBuf,
}

impl Lab {
    /// A lab with the default settings, its first commit made.
    pub fn new() -> Lab {
        Lab::with(|_| {})
    }

    /// A lab whose settings `tweak` changes before the first commit.
    pub fn with(tweak: impl FnOnce(&mut Settings)) -> Lab {
        let app = tasks_app();
        let dir = tempfile::Builder::new()
            .prefix("cutover-it-")
            .tempdir()
            .unwrap();
        let repo = dir.path().join("repo");
        fs::create_dir_all(&repo).unwrap();
        fs::copy(app, repo.join("tasks-app")).unwrap();
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut settings = Settings::default();
        tweak(&mut settings);
        let lab = Lab {
            dir,
            repo,
            listen,
            settings,
            env: Vec::new(),
            exe: PathBuf::from(env!("CARGO_BIN_EXE_cutover")),
        };
        fs::write(lab.repo.join("cutover.toml"), lab.config()).unwrap();
        fs::write(lab.repo.join("notes.txt"), "first\n").unwrap();
        lab.git(&["init", "-q", "-b", "main"]);
        lab.git(&["add", "-A"]);
        lab.git(&["commit", "-q", "-m", "first"]);
        lab
    }

    /// The `cutover.toml` the settings describe.
    pub fn config(&self) -> String {
        let s = &self.settings;
        format!(
            "[app]\nname = \"{}\"\n\n[build]\n{}\n\n[run]\n{}\n\n[health]\n{}\nmonitor = \"{}\"\n\n{}\n\n[environments.staging]\nlisten = \"{}\"\nstrategy = \"{}\"\n",
            s.app, s.build, s.run, s.health, s.monitor, s.extra, self.listen, s.strategy
        )
    }

    /// The lab's temporary directory (the repository, the edge dir), removed with the lab.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.repo.join(".cutover")
    }

    /// This lab's machine edge (`CUTOVER_EDGE_DIR` of its commands), apart from other tests'.
    pub fn edge_dir(&self) -> PathBuf {
        self.dir.path().join("edge")
    }

    /// Runs git in the repository; panics if it fails. Returns stdout, trimmed.
    pub fn git(&self, args: &[&str]) -> String {
        git_as("Lab", "lab@example.com", &self.repo, args)
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// Changes a file and commits; returns the new full sha.
    pub fn commit(&self, message: &str) -> String {
        let notes = self.repo.join("notes.txt");
        let mut text = fs::read_to_string(&notes).unwrap_or_default();
        text.push_str(message);
        text.push('\n');
        fs::write(&notes, text).unwrap();
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.head()
    }

    /// Writes `cutover.toml` and commits it; returns the new full sha.
    pub fn commit_config(&self, text: &str, message: &str) -> String {
        fs::write(self.repo.join("cutover.toml"), text).unwrap();
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.head()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(args)
            .current_dir(&self.repo)
            .env_remove("CUTOVER_STATE_DIR")
            .env("CUTOVER_EDGE_DIR", self.edge_dir())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs `cutover ARGS` in the repository and waits (at most [`COMMAND_LIMIT`]).
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// [`Lab::run`] with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let started = Instant::now();
        let child = c.spawn().expect("starting cutover");
        finish(child, args, started)
    }

    /// Starts `cutover ARGS` without waiting; [`wait_run`] collects it.
    pub fn spawn(&self, args: &[&str]) -> (Child, Vec<String>, Instant) {
        self.spawn_env(args, &[])
    }

    /// [`Lab::spawn`] with extra environment variables.
    pub fn spawn_env(&self, args: &[&str], env: &[(&str, &str)]) -> (Child, Vec<String>, Instant) {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().expect("starting cutover");
        (
            child,
            args.iter().map(|s| s.to_string()).collect(),
            Instant::now(),
        )
    }

    pub fn deploy(&self) -> Run {
        self.run(&["deploy", "staging"])
    }

    pub fn status(&self) -> Value {
        self.run(&["status", "--json"]).expect(0).json()
    }

    /// The staging environment of `status --json`.
    pub fn staging(&self) -> Value {
        let status = self.status();
        status["environments"]
            .as_array()
            .expect("environments[]")
            .iter()
            .find(|e| e["name"] == "staging")
            .cloned()
            .unwrap_or_else(|| panic!("no staging in status: {status:#}"))
    }

    pub fn history(&self) -> Vec<Value> {
        self.history_of("staging")
    }

    pub fn history_of(&self, env: &str) -> Vec<Value> {
        let h = self.run(&["history", env, "--json"]).expect(0).json();
        h["releases"].as_array().expect("releases[]").clone()
    }

    /// `(id, state, version)` of each release, newest first: what "nothing changed" compares.
    pub fn ledger_summary(&self) -> Vec<(i64, String, String)> {
        self.history()
            .iter()
            .map(|r| {
                (
                    r["id"].as_i64().unwrap(),
                    r["state"].as_str().unwrap().to_string(),
                    r["version"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// GET `path` through the staging edge proxy.
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.listen, path)
    }

    /// The version the staging proxy serves now (`/health` 200 only).
    pub fn serving(&self) -> Option<String> {
        match self.get("/health") {
            Ok((200, body)) => json_field(&body, "version"),
            _ => None,
        }
    }

    /// Polls until the proxy serves `version` with a 200; panics after `limit`.
    #[track_caller]
    pub fn wait_serving(&self, version: &str, limit: Duration) {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < limit {
            last = self.serving();
            if last.as_deref() == Some(version) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("staging did not serve {version} within {limit:?}; last seen {last:?}");
    }

    /// Asserts that the proxy serves `version` now.
    #[track_caller]
    pub fn assert_serving(&self, version: &str) {
        let got = self.get("/health");
        match got {
            Ok((200, body)) => assert_eq!(
                json_field(&body, "version").as_deref(),
                Some(version),
                "staging serves the wrong version: {body}"
            ),
            other => panic!("staging does not serve {version}: {other:?}"),
        }
    }

    /// Starts a thread that GETs /health through the proxy until stopped.
    pub fn watch(&self) -> Watcher {
        Watcher::start(self.listen)
    }

    /// Pids of every process of this lab named in its state dir and edge dir (server, edge,
    /// supervisors, instances).
    pub fn known_pids(&self) -> Vec<u32> {
        let state = self.state_dir();
        let mut pids = Vec::new();
        let read_pid = |p: &Path| {
            fs::read_to_string(p)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
        };
        pids.extend(read_pid(&state.join("server.pid")));
        pids.extend(read_pid(&self.edge_dir().join("edge.pid")));
        for dir in ["proxy", "instances"] {
            let Ok(entries) = fs::read_dir(state.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                match path.extension().and_then(|x| x.to_str()) {
                    Some("pid") => pids.extend(read_pid(&path)),
                    Some("json") if dir == "instances" => {
                        if let Some(v) = fs::read_to_string(&path)
                            .ok()
                            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                        {
                            for key in ["pid", "supervisor_pid"] {
                                if let Some(p) = v[key].as_u64() {
                                    pids.push(p as u32);
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        pids
    }

    /// Whether `pid` is a live process that belongs to this lab (its command line or working
    /// directory is inside the lab's directory): the guard against killing a reused pid.
    pub fn owns(&self, pid: u32) -> bool {
        let root = self.dir.path().to_string_lossy().to_string();
        let proc = PathBuf::from(format!("/proc/{pid}"));
        if let Ok(stat) = fs::read_to_string(proc.join("stat")) {
            // A zombie is dead for our purposes.
            if stat
                .rsplit(')')
                .next()
                .map(|s| s.trim_start().starts_with('Z'))
                == Some(true)
            {
                return false;
            }
        } else {
            return false;
        }
        let cmdline = fs::read(proc.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cwd = fs::read_link(proc.join("cwd"))
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_default();
        cmdline.contains(&root) || cwd.starts_with(&root)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let pids = self.known_pids();
        if self.state_dir().join("server.pid").exists() {
            if let Ok(mut child) = self.command(&["down"]).spawn() {
                let start = Instant::now();
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) if start.elapsed() > Duration::from_secs(30) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break;
                        }
                        Ok(None) => thread::sleep(Duration::from_millis(50)),
                    }
                }
            }
        }
        let mut pids: Vec<u32> = pids.into_iter().chain(self.known_pids()).collect();
        pids.sort_unstable();
        pids.dedup();
        for pid in pids {
            if self.owns(pid) {
                signal(pid, "KILL");
            }
        }
    }
}

/// Sends a signal with the `kill` command (this crate has no libc dev-dependency).
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether `pid` is alive and not a zombie.
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .map(|s| !s.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `limit`.
#[track_caller]
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for a spawned `cutover` (from [`Lab::spawn`]).
pub fn wait_run((child, args, started): (Child, Vec<String>, Instant)) -> Run {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    finish(child, &args, started)
}

fn finish(mut child: Child, args: &[&str], started: Instant) -> Run {
    // Read both pipes on threads so a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_t = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = loop {
        match child.try_wait().unwrap() {
            Some(status) => break status,
            None if started.elapsed() > COMMAND_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`cutover {}` did not finish within {COMMAND_LIMIT:?}",
                    args.join(" ")
                );
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    let took = started.elapsed();
    let output = Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    };
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
        took,
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

/// One HTTP/1.1 GET over a fresh connection (`Connection: close`): (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_get_as(addr, &addr.to_string(), path)
}

/// [`http_get`] with `Host: host` (as `curl -H Host:` sends it).
pub fn http_get_as(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let (status, head, body) = split_response(&raw)?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((status, if chunked { dechunk(&body) } else { body }))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `"name":"value"` out of a flat JSON body.
pub fn json_field(body: &str, name: &str) -> Option<String> {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v[name].as_str().map(String::from))
}

/// GETs /health through a proxy in a loop on its own thread, recording every answer.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    handle: Option<JoinHandle<Vec<Result<String, String>>>>,
}

impl Watcher {
    fn start(addr: SocketAddr) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let (s, c) = (stop.clone(), count.clone());
        let handle = thread::spawn(move || {
            let mut seen = Vec::new();
            while !s.load(Ordering::SeqCst) {
                let answer = match http_get(addr, "/health") {
                    Ok((200, body)) => {
                        json_field(&body, "version").ok_or_else(|| format!("200 {body}"))
                    }
                    Ok((status, body)) => Err(format!("{status} {body}")),
                    Err(e) => Err(e.to_string()),
                };
                seen.push(answer);
                c.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(10));
            }
            seen
        });
        Watcher {
            stop,
            count,
            handle: Some(handle),
        }
    }

    /// Waits until at least `n` more answers came in (so a check spans some real traffic).
    pub fn wait_for(&self, n: usize) {
        let target = self.count.load(Ordering::SeqCst) + n;
        eventually(
            Duration::from_secs(20),
            "requests through the proxy",
            || (self.count.load(Ordering::SeqCst) >= target).then_some(()),
        );
    }

    /// Stops and returns every answer: `Ok(version)` or `Err(what went wrong)`.
    pub fn stop(mut self) -> Vec<Result<String, String>> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out
}

/// Runs git in `dir` as the given author; panics if it fails. Returns stdout, trimmed.
pub fn git_as(name: &str, email: &str, dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            &format!("user.email={email}"),
            "-c",
            &format!("user.name={name}"),
        ])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A raw HTTP/1.1 response: (status, head, body).
pub fn split_response(raw: &[u8]) -> std::io::Result<(u16, String, String)> {
    let text = String::from_utf8_lossy(raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no complete response: {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head:?}")))?;
    Ok((status, head.to_string(), body.to_string()))
}
