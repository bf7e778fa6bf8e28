//! The instance supervisor role (`cutover supervise`).
//!
//! One small process per instance, like Podman's conmon: it reads the [`Launch`] from its
//! standard input (the spec holds secrets: it is never written to disk, logged or put in argv),
//! starts the instance in its own process group with a minimal environment, pipes its output
//! into the instance's log, restarts it with backoff when it exits, and stops it gracefully on
//! SIGTERM/SIGINT. Every change is published in `<state dir>/instances/<id>.json`.
//!
//! Design: SIGTERM and SIGINT are blocked before any thread starts; one thread `sigwait`s for
//! them, one thread per child waits for its exit, one per child pumps its output into the log.
//! They all report to the main loop over one channel, so no state is shared but the log.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::{log_path, state_path, validate, Launch, StateFile, MAX_EXITS};
use cutover_daemon::log::{LogFile, MAX_LOG_BYTES};
use cutover_runtime::{ExitRecord, InstanceInfo, InstanceState};

/// First restart delay; doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A child that ran this long resets the backoff.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(30);
/// How long to wait for a child to die after SIGKILL before giving up on it.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// The supervisor's own variables that an instance inherits; everything else comes from the spec.
const INHERITED_VARS: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// Reads an instance spec (JSON) from standard input and supervises that instance until it is
/// stopped. Returns the exit code of the supervisor process.
pub fn run(state_dir: &Path) -> i32 {
    let mut input = String::new();
    let read = io::stdin().read_to_string(&mut input);
    cutover_daemon::close_stdin();
    if let Err(e) = read {
        eprintln!("error: could not read the instance spec from standard input: {e}");
        return 1;
    }
    // The error must not quote the input: it holds secret values.
    let spec: Launch = match serde_json::from_str(&input) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!(
                "error: the instance spec on standard input is not valid (line {}, column {})",
                e.line(),
                e.column()
            );
            return 1;
        }
    };
    drop(input);
    if let Err(e) = validate(&spec) {
        eprintln!("error: invalid instance spec: {e}");
        return 1;
    }
    let signals = match block_stop_signals() {
        Ok(set) => set,
        Err(e) => {
            eprintln!("error: could not block signals: {e}");
            return 1;
        }
    };
    let mut supervisor = match Supervisor::new(state_dir, spec.clone()) {
        Ok(s) => s,
        Err(message) => {
            // No log to write to: the state file is where `start` looks for the reason.
            let mut info = initial_info(state_dir, &spec);
            info.state = InstanceState::Stopped;
            let state = StateFile {
                info,
                stop_timeout: spec.stop_timeout,
                error: Some(message.clone()),
            };
            if let Ok(json) = serde_json::to_vec_pretty(&state) {
                let _ = cutover_daemon::write_atomic(&state_path(state_dir, &spec.id), &json);
            }
            eprintln!("error: {message}");
            return 1;
        }
    };
    let tx = supervisor.tx.clone();
    thread::spawn(move || wait_for_stop_signals(signals, tx));
    supervisor.run()
}

enum Event {
    /// The child with this pid exited.
    Exited { pid: u32, status: String },
    /// SIGTERM or SIGINT reached the supervisor.
    Stop,
}

struct Supervisor {
    spec: Launch,
    state_path: PathBuf,
    info: InstanceInfo,
    log: Arc<Mutex<LogFile>>,
    tx: Sender<Event>,
    rx: Receiver<Event>,
}

impl Supervisor {
    fn new(state_dir: &Path, spec: Launch) -> Result<Supervisor, String> {
        let info = initial_info(state_dir, &spec);
        let log_file = log_path(state_dir, &spec.env, &spec.id);
        let log = LogFile::open(&log_file, MAX_LOG_BYTES).map_err(|e| {
            format!(
                "could not open the log {} of instance {}: {e}",
                log_file.display(),
                spec.id
            )
        })?;
        let (tx, rx) = mpsc::channel();
        Ok(Supervisor {
            state_path: state_path(state_dir, &spec.id),
            spec,
            info,
            log: Arc::new(Mutex::new(log)),
            tx,
            rx,
        })
    }

    fn run(&mut self) -> i32 {
        self.publish(None);
        let mut backoff = INITIAL_BACKOFF;
        let mut next_start = Some(Instant::now());
        // The running child: its pid (= its process group) and when it started.
        let mut running: Option<(u32, Instant)> = None;
        let mut first = true;
        loop {
            if let (None, Some(at)) = (running, next_start) {
                if Instant::now() >= at {
                    next_start = None;
                    match self.spawn() {
                        Ok(pid) => {
                            if !first {
                                self.info.restarts += 1;
                            }
                            running = Some((pid, Instant::now()));
                            self.info.pid = Some(pid);
                            self.info.state = InstanceState::Running;
                            self.publish(None);
                        }
                        Err(message) if first => {
                            self.log(&message);
                            self.info.state = InstanceState::Stopped;
                            self.publish(Some(message));
                            return 1;
                        }
                        Err(message) => {
                            self.record_exit(format!("could not start: {message}"));
                            self.log(&format!("{message}; retrying in {backoff:?}"));
                            next_start = Some(Instant::now() + backoff);
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            self.publish(None);
                        }
                    }
                    first = false;
                }
            }
            let event = match next_start.filter(|_| running.is_none()) {
                Some(at) => {
                    match self
                        .rx
                        .recv_timeout(at.saturating_duration_since(Instant::now()))
                    {
                        Ok(event) => event,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => return 1,
                    }
                }
                None => match self.rx.recv() {
                    Ok(event) => event,
                    Err(_) => return 1,
                },
            };
            match event {
                Event::Stop => return self.stop(running.map(|(pid, _)| pid)),
                Event::Exited { pid, status } => {
                    let Some((child, since)) = running else {
                        continue;
                    };
                    if pid != child {
                        continue;
                    }
                    running = None;
                    // Whatever the child left behind in its group must not hold its port.
                    cutover_daemon::signal_group(pid, libc::SIGKILL);
                    if since.elapsed() >= BACKOFF_RESET_AFTER {
                        backoff = INITIAL_BACKOFF;
                    }
                    self.log(&format!("exited with {status}; restarting in {backoff:?}"));
                    self.record_exit(status);
                    self.info.pid = None;
                    self.info.state = InstanceState::Restarting;
                    self.publish(None);
                    next_start = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// SIGTERM to the child's group, wait stop_timeout, SIGKILL; then publish `stopped`.
    fn stop(&mut self, running: Option<u32>) -> i32 {
        self.info.state = InstanceState::Stopping;
        self.publish(None);
        if let Some(pid) = running {
            self.log(&format!("stopping: SIGTERM to process group {pid}"));
            cutover_daemon::signal_group(pid, libc::SIGTERM);
            let status = match self.wait_exit(pid, self.spec.stop_timeout) {
                Some(status) => status,
                None => {
                    self.log(&format!(
                        "still running after {:?}: SIGKILL to process group {pid}",
                        self.spec.stop_timeout
                    ));
                    cutover_daemon::signal_group(pid, libc::SIGKILL);
                    self.wait_exit(pid, KILL_WAIT)
                        .unwrap_or_else(|| "no exit seen after SIGKILL".to_string())
                }
            };
            cutover_daemon::signal_group(pid, libc::SIGKILL);
            self.log(&format!("exited with {status}"));
            self.record_exit(status);
        }
        self.info.pid = None;
        self.info.state = InstanceState::Stopped;
        self.log("stopped");
        self.publish(None);
        0
    }

    /// Waits up to `timeout` for the child `pid` to exit; its status, or None on timeout.
    fn wait_exit(&self, pid: u32, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Event::Exited { pid: p, status }) if p == pid => return Some(status),
                Ok(_) => {} // a repeated stop signal, or an older child
                Err(_) => return None,
            }
        }
    }

    /// Starts the child; an error message that names the command and the instance.
    fn spawn(&self) -> Result<u32, String> {
        let spec = &self.spec;
        let mut env = child_env(&spec.vars);
        // How a runtime recognises its instance's process after the supervisor is gone.
        env.insert("CUTOVER_INSTANCE".into(), spec.id.clone());
        let program = resolve(spec, env.get("PATH").map(String::as_str))?;
        let (read, write) =
            pipe().map_err(|e| format!("could not create a pipe for {}: {e}", spec.id))?;
        let write2 = write
            .try_clone()
            .map_err(|e| format!("could not create a pipe for {}: {e}", spec.id))?;
        let mut command = Command::new(&program);
        command
            .arg0(&spec.argv[0])
            .args(&spec.argv[1..])
            .current_dir(&spec.cwd)
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write))
            .stderr(Stdio::from(write2))
            .process_group(0);
        // The supervisor blocks SIGTERM/SIGINT to wait for them, and Rust ignores SIGPIPE; a
        // child inherits both across exec, so it would never stop on SIGTERM. Undo them.
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| {
            format!(
                "could not start run command `{}` in {} (instance {}): {e}",
                spec.argv[0],
                spec.cwd.display(),
                spec.id
            )
        })?;
        // Our copies of the pipe's write end must go, or the pump never sees EOF.
        drop(command);
        let pid = child.id();
        // Before the pump starts, so that this line precedes the child's output.
        self.log(&format!("started pid {pid}"));
        let log = Arc::clone(&self.log);
        thread::spawn(move || pump(File::from(read), log));
        let tx = self.tx.clone();
        thread::spawn(move || {
            let status = match child.wait() {
                Ok(status) => describe(status),
                Err(e) => format!("unknown status (wait failed: {e})"),
            };
            let _ = tx.send(Event::Exited { pid, status });
        });
        Ok(pid)
    }

    fn record_exit(&mut self, status: String) {
        self.info.exits.push(ExitRecord {
            at: Utc::now(),
            status,
        });
        let extra = self.info.exits.len().saturating_sub(MAX_EXITS);
        self.info.exits.drain(..extra);
    }

    fn log(&self, message: &str) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .line(message);
    }

    /// Writes the state file (never the spec's vars).
    fn publish(&self, error: Option<String>) {
        let state = StateFile {
            info: self.info.clone(),
            stop_timeout: self.spec.stop_timeout,
            error,
        };
        let result = serde_json::to_vec_pretty(&state)
            .map_err(io::Error::other)
            .and_then(|json| cutover_daemon::write_atomic(&self.state_path, &json));
        if let Err(e) = result {
            self.log(&format!(
                "could not write {}: {e}",
                self.state_path.display()
            ));
        }
    }
}

fn initial_info(state_dir: &Path, spec: &Launch) -> InstanceInfo {
    InstanceInfo {
        id: spec.id.clone(),
        app: spec.app.clone(),
        env: spec.env.clone(),
        release: spec.release,
        version: spec.version.clone(),
        port: spec.port,
        address: SocketAddr::from((Ipv4Addr::LOCALHOST, spec.port)),
        supervisor_pid: Some(std::process::id()),
        pid: None,
        state: InstanceState::Starting,
        started_at: Utc::now(),
        restarts: 0,
        exits: Vec::new(),
        log_file: Some(log_path(state_dir, &spec.env, &spec.id)),
        node: None,
    }
}

/// The instance's environment: a few of the supervisor's variables, then the spec's.
fn child_env(vars: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = INHERITED_VARS
        .iter()
        .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
        .collect();
    env.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Finds the program of `argv[0]`: relative to the cwd if it contains a `/`, else on `PATH`.
fn resolve(spec: &Launch, path_var: Option<&str>) -> Result<PathBuf, String> {
    let name = &spec.argv[0];
    if name.contains('/') {
        let program = std::path::absolute(spec.cwd.join(name))
            .map_err(|e| format!("run command `{name}` (instance {}): {e}", spec.id))?;
        return match fs::metadata(&program) {
            Err(_) => Err(format!(
                "run command `{name}` not found in {} (instance {})",
                spec.cwd.display(),
                spec.id
            )),
            Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 == 0 => Err(format!(
                "run command `{name}` in {} is not an executable file (instance {}); \
                 check its mode (chmod +x)",
                spec.cwd.display(),
                spec.id
            )),
            Ok(_) => Ok(program),
        };
    }
    let path_var = path_var.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path_var
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| spec.cwd.join(dir).join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or_else(|| {
            format!(
                "run command `{name}` not found on PATH ({path_var}) (instance {})",
                spec.id
            )
        })
}

/// "exit status 1", "killed by signal 9".
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) if status.core_dumped() => {
            format!("killed by signal {sig} (core dumped)")
        }
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => status.to_string(),
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fresh descriptors that we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptors were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Copies a child's output into the log, whole lines at a time so that the supervisor's own
/// lines never land in the middle of one.
fn pump(mut reader: File, log: Arc<Mutex<LogFile>>) {
    const CHUNK: usize = 8192;
    let mut buf = [0u8; CHUNK];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        let cut = match pending.iter().rposition(|&b| b == b'\n') {
            Some(pos) => pos + 1,
            None if pending.len() >= CHUNK => pending.len(),
            None => continue,
        };
        let rest = pending.split_off(cut);
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(&pending);
        pending = rest;
    }
    if !pending.is_empty() {
        pending.push(b'\n');
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(&pending);
    }
}

/// Blocks SIGTERM and SIGINT in this (still single-threaded) process, so that every thread
/// started later inherits the mask and only [`wait_for_stop_signals`] receives them. Children
/// get a clean mask: std resets it between fork and exec.
fn block_stop_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; the calls only fill and apply it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        match libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) {
            0 => Ok(set),
            rc => Err(io::Error::from_raw_os_error(rc)),
        }
    }
}

fn wait_for_stop_signals(set: libc::sigset_t, tx: Sender<Event>) {
    loop {
        let mut signal = 0;
        // SAFETY: sigwait on a set of signals blocked in every thread.
        if unsafe { libc::sigwait(&set, &mut signal) } == 0 && tx.send(Event::Stop).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str], cwd: &Path) -> Launch {
        Launch {
            id: "staging-r7-1".into(),
            app: "app".into(),
            env: "staging".into(),
            release: 7,
            version: "abc".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: cwd.to_path_buf(),
            vars: BTreeMap::new(),
            port: 1234,
            stop_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn resolve_names_the_command_the_dir_and_the_instance() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(&spec(&["./nope"], dir.path()), None).unwrap_err();
        assert_eq!(
            err,
            format!(
                "run command `./nope` not found in {} (instance staging-r7-1)",
                dir.path().display()
            )
        );
        fs::write(dir.path().join("app"), "#!/bin/sh\n").unwrap();
        let err = resolve(&spec(&["./app"], dir.path()), None).unwrap_err();
        assert!(err.contains("not an executable file"), "{err}");
        fs::set_permissions(dir.path().join("app"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            resolve(&spec(&["./app"], dir.path()), None).unwrap(),
            dir.path().join("./app")
        );
        let err = resolve(&spec(&["no-such-cmd-xyz"], dir.path()), Some("/bin")).unwrap_err();
        assert!(err.contains("not found on PATH (/bin)"), "{err}");
        assert_eq!(
            resolve(&spec(&["sh"], dir.path()), Some("/nonexistent:/bin")).unwrap(),
            PathBuf::from("/bin/sh")
        );
    }

    #[test]
    fn child_env_is_minimal_plus_the_spec() {
        let mut vars = BTreeMap::new();
        vars.insert("PORT".to_string(), "8080".to_string());
        vars.insert("PATH".to_string(), "/custom".to_string());
        let env = child_env(&vars);
        assert_eq!(env["PORT"], "8080");
        assert_eq!(env["PATH"], "/custom");
        assert!(env
            .keys()
            .all(|k| INHERITED_VARS.contains(&k.as_str()) || k == "PORT"));
    }

    #[test]
    fn exit_statuses_read_like_a_shell() {
        assert_eq!(describe(ExitStatus::from_raw(1 << 8)), "exit status 1");
        assert_eq!(describe(ExitStatus::from_raw(9)), "killed by signal 9");
    }
}
