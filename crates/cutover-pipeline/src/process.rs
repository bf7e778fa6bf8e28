//! Running one check: `sh -c` in its own process group, output through one pipe (stdout and
//! stderr interleaved as written), into the log file and as events; the group killed at the
//! timeout.

use crate::{CheckEvent, CheckResult, CheckStatus};
use cutover_config::Check;
use std::fs::File;
use std::io::{LineWriter, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// How often the runner looks at the process while no output comes.
const POLL: Duration = Duration::from_millis(10);
/// After SIGTERM at the timeout, how long the group has to exit before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// After the group is killed, how long to wait for the last output (a process that left the
/// group may hold the pipe open forever).
const DRAIN: Duration = Duration::from_secs(1);

/// What one check needs to run.
pub(crate) struct CheckRun<'a> {
    pub check: &'a Check,
    pub checkout: &'a Path,
    pub sha: &'a str,
    pub log_file: PathBuf,
}

/// Runs the check, sending `Started`, `Output`* and `Finished` to `events`.
pub(crate) fn run_check(run: CheckRun<'_>, events: &Sender<CheckEvent>) {
    let name = run.check.name.clone();
    let _ = events.send(CheckEvent::Started {
        check: name.clone(),
    });
    let start = Instant::now();
    let (status, exit) = match execute(&run, events) {
        Ok(outcome) => outcome,
        Err(message) => {
            // Could not even start: say so in the log too, where people look first.
            if let Ok(mut log) = File::create(&run.log_file) {
                let _ = writeln!(log, "cutover: {message}");
            }
            (CheckStatus::Failed, Some(message))
        }
    };
    let result = CheckResult {
        name,
        status,
        duration_ms: start.elapsed().as_millis() as u64,
        exit,
        log_file: run.log_file,
    };
    let _ = events.send(CheckEvent::Finished { result });
}

/// A pipe for the child's stdout and stderr: (read end, write end), both close-on-exec.
fn pipe() -> std::io::Result<(File, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both descriptors on success; we own them from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors from pipe2, owned by nothing else.
    unsafe { Ok((File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))) }
}

fn execute(
    run: &CheckRun<'_>,
    events: &Sender<CheckEvent>,
) -> Result<(CheckStatus, Option<String>), String> {
    let log = File::create(&run.log_file)
        .map_err(|e| format!("cannot write the log {}: {e}", run.log_file.display()))?;
    let mut log = LineWriter::new(log);
    let (read_end, write_end) = pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let write_err = write_end
        .try_clone()
        .map_err(|e| format!("cannot create a pipe: {e}"))?;

    let mut command = Command::new("sh");
    cutover_git::scrub_env(&mut command)
        .arg("-c")
        .arg(&run.check.run)
        .current_dir(run.checkout)
        .env("CUTOVER_VERSION", run.sha)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::from(write_err))
        .process_group(0);
    let spawned = command.spawn();
    // Our copies of the write end must go, or the pipe never reports the end of output.
    drop(command);
    let mut child =
        spawned.map_err(|e| format!("cannot run `sh -c` in {}: {e}", run.checkout.display()))?;
    let pgid = child.id();

    let (line_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || cutover_daemon::send_lines(read_end, line_tx));
    let mut forward = |line: String| {
        let _ = writeln!(log, "{line}");
        let _ = events.send(CheckEvent::Output {
            check: run.check.name.clone(),
            line,
        });
    };

    let deadline = Instant::now() + run.check.timeout;
    let mut open = true;
    let timed_out = loop {
        open = pump(&lines, open, POLL, &mut forward);
        if has_exited(&child) {
            break false;
        }
        if Instant::now() >= deadline {
            break true;
        }
    };
    if timed_out {
        cutover_daemon::signal_group(pgid, libc::SIGTERM);
        // The pipe closes once every process of the group is gone.
        let grace = Instant::now() + TERM_GRACE;
        while open && Instant::now() < grace {
            open = pump(&lines, open, POLL, &mut forward);
        }
    }
    // The leader is not reaped yet, so the group id cannot have been reused: whatever is
    // left of the group (a timed-out check, or processes a finished one left behind) goes.
    cutover_daemon::signal_group(pgid, libc::SIGKILL);
    let drain = Instant::now() + DRAIN;
    while open && Instant::now() < drain {
        open = pump(&lines, open, POLL, &mut forward);
    }
    // SIGKILL is delivered at once but a process takes a moment to die: when a check is
    // reported finished, nothing of it still touches the checkout.
    while group_alive(pgid) && Instant::now() < drain {
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for the check: {e}"))?;
    let _ = log.flush();
    if timed_out {
        let limit = cutover_config::format_duration(run.check.timeout);
        Ok((
            CheckStatus::TimedOut,
            Some(format!("killed after timeout {limit}")),
        ))
    } else if status.success() {
        Ok((CheckStatus::Passed, None))
    } else {
        Ok((CheckStatus::Failed, Some(describe(status))))
    }
}

/// Forwards the lines that arrive within `wait`; false once the pipe is closed and drained.
fn pump(
    lines: &Receiver<String>,
    open: bool,
    wait: Duration,
    forward: &mut impl FnMut(String),
) -> bool {
    if !open {
        std::thread::sleep(wait);
        return false;
    }
    match lines.recv_timeout(wait) {
        Ok(line) => {
            forward(line);
            // Whatever else is already there, without waiting.
            loop {
                match lines.try_recv() {
                    Ok(line) => forward(line),
                    Err(mpsc::TryRecvError::Empty) => return true,
                    Err(mpsc::TryRecvError::Disconnected) => return false,
                }
            }
        }
        Err(RecvTimeoutError::Timeout) => true,
        Err(RecvTimeoutError::Disconnected) => false,
    }
}

/// Whether the child has exited, without reaping it (so its pid, the group id, stays taken).
fn has_exited(child: &Child) -> bool {
    // SAFETY: zeroed siginfo is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child; WNOWAIT leaves it waitable.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            child.id() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // An error (ECHILD) means there is nothing left to wait for.
    // SAFETY: si_pid is set by a successful waitid (0 when nothing changed).
    rc != 0 || unsafe { info.si_pid() } != 0
}

/// Whether a live (not zombie) process is in the process group `pgid`.
fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let pgrp = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
        pgrp == Some(pgid) && !matches!(state, "Z" | "X" | "x")
    })
}

/// "exit status 1", "killed by signal 9 (SIGKILL)".
fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(signal) => match signal_name(signal) {
            Some(name) => format!("killed by signal {signal} ({name})"),
            None => format!("killed by signal {signal}"),
        },
        None => status.to_string(),
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}
