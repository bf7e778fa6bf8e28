//! Process plumbing shared by every long-lived role of the `cutover` binary (server, edge proxy,
//! instance supervisor): detaching from the caller, pid files, liveness checks, lock files,
//! atomic writes, socket paths, whether the binary a process runs was replaced on disk
//! ([`started_exe`]) and the state dir's well-known files ([`StateDir`]).
//!
//! Architecture invariant: a detached role is never the child of the process that asked for it.
//! [`spawn_detached`] runs `<exe> <args> --detach`; the role calls [`detach`] before it starts any
//! thread, forks, and the intermediate process exits at once, so the role is re-parented to init
//! (or the nearest subreaper) and survives its caller being killed with `kill -9`.

mod exe;
pub mod log;
mod state_dir;

pub use exe::{runs, started_exe, Exe, FileId};
pub use state_dir::StateDir;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

/// Starts `command` (which must accept `--detach` and call [`detach`]) so that it outlives the
/// caller. `stdin_payload` is written to its standard input (used to hand secrets to a
/// supervisor without touching the disk). Returns the pid of the detached process.
pub fn spawn_detached(mut command: Command, stdin_payload: Option<&[u8]>) -> io::Result<u32> {
    command.arg("--detach");
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        if let Some(payload) = stdin_payload {
            stdin.write_all(payload)?;
        }
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut out)?;
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut err)?;
    let status = child.wait()?;
    match out.trim().parse::<u32>() {
        Ok(pid) if status.success() => Ok(pid),
        _ => Err(io::Error::other(format!(
            "could not start {:?}: {}{}",
            command.get_program(),
            err.trim(),
            if err.trim().is_empty() {
                format!("exit status {status}")
            } else {
                String::new()
            }
        ))),
    }
}

/// The detaching half of [`spawn_detached`]. Call it first thing in a role's `main`, before any
/// thread exists. Standard input is left open for the role to read its payload; standard output
/// and error are pointed at `log` (or /dev/null). Returns in the detached grandchild only.
pub fn detach(log: Option<&Path>) -> io::Result<()> {
    // SAFETY: called while the process is single-threaded, so fork is sound.
    match unsafe { libc::fork() } {
        -1 => return Err(io::Error::last_os_error()),
        0 => {}
        child => {
            println!("{child}");
            let _ = io::stdout().flush();
            // SAFETY: _exit skips atexit handlers and destructors, which belong to the child now.
            unsafe { libc::_exit(0) };
        }
    }
    // SAFETY: plain syscalls in the single-threaded child.
    unsafe { libc::setsid() };
    let target = match log {
        Some(path) => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            OpenOptions::new().create(true).append(true).open(path)?
        }
        None => OpenOptions::new().write(true).open("/dev/null")?,
    };
    // SAFETY: dup2 onto the standard descriptors of this process.
    unsafe {
        libc::dup2(target.as_raw_fd(), 1);
        libc::dup2(target.as_raw_fd(), 2);
    }
    Ok(())
}

/// Points standard input at /dev/null once a detached role has read its payload.
pub fn close_stdin() {
    if let Ok(null) = File::open("/dev/null") {
        // SAFETY: dup2 onto fd 0 of this process.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
}

/// Whether a process with this pid exists (it may be a zombie).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as i32, 0) };
    if rc == 0 {
        // A zombie still answers kill(0); treat it as gone.
        return !is_zombie(pid);
    }
    io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Whether `pid` is alive and its command line contains every one of `needles`: guards
/// against a pid that was reused by an unrelated process after ours died.
pub fn pid_runs(pid: u32, needles: &[&str]) -> bool {
    if !pid_alive(pid) {
        return false;
    }
    let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
    needles.iter().all(|n| cmdline.contains(n))
}

/// Sends `signal` to `pid`; false if the process is gone.
pub fn signal(pid: u32, signal: i32) -> bool {
    // SAFETY: plain kill(2).
    pid > 0 && unsafe { libc::kill(pid as i32, signal) } == 0
}

/// Sends `signal` to the process group `pgid`.
pub fn signal_group(pgid: u32, signal: i32) -> bool {
    // SAFETY: plain kill(2) with a negative pid addresses the group.
    pgid > 1 && unsafe { libc::kill(-(pgid as i32), signal) } == 0
}

/// Writes `bytes` to `path` so that readers see the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with_mode(path, bytes, 0o644)
}

/// [`write_atomic`] for what only the user may read (keys, tokens): the file is mode 0600
/// from its first byte, and a folder it creates is 0700.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    write_with_mode(path, bytes, 0o600)
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// An exclusive advisory lock (flock) held until dropped. The kernel releases it when the
/// holder dies, so a Ctrl-C or `kill -9` never leaves a stale lock behind.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock, waiting for it.
    pub fn acquire(path: &Path) -> io::Result<FileLock> {
        Self::lock(path, libc::LOCK_EX)
    }

    /// Takes the lock if it is free; `Ok(None)` if another process holds it.
    pub fn try_acquire(path: &Path) -> io::Result<Option<FileLock>> {
        match Self::lock(path, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(lock) => Ok(Some(lock)),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn lock(path: &Path, op: i32) -> io::Result<FileLock> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), op) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FileLock { _file: file })
    }
}

/// Where the unix socket called `name` of the state dir `state_dir` lives. Socket paths are
/// limited to 108 bytes, so sockets live under `$XDG_RUNTIME_DIR` (or `/tmp`) in a folder
/// named by a hash of the state dir, not inside the state dir itself.
pub fn socket_path(state_dir: &Path, name: &str) -> PathBuf {
    let id = state_id(state_dir);
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    base.join(format!("cutover-{uid}-{id}"))
        .join(format!("{name}.sock"))
}

/// A short, stable name of a state dir (16 hex characters of the hash of its canonical
/// path): names its socket folder and labels its containers.
pub fn state_id(state_dir: &Path) -> String {
    let canonical = state_dir
        .canonicalize()
        .unwrap_or_else(|_| state_dir.to_path_buf());
    hex::encode(Sha256::digest(canonical.as_os_str().as_encoded_bytes()))[..16].to_string()
}

/// Creates the folder of a socket path, readable by its owner only.
pub fn prepare_socket_dir(socket: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = socket.parent() {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    if socket.exists() {
        fs::remove_file(socket)?;
    }
    Ok(())
}

/// Sends each line of `stream` (without its line ending; invalid UTF-8 replaced) to `tx`
/// until the stream ends or nobody listens. For pumping a child's output.
pub fn send_lines(stream: impl io::Read, tx: std::sync::mpsc::Sender<String>) {
    use io::BufRead;
    let mut reader = io::BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                if tx
                    .send(line.trim_end_matches(['\n', '\r']).to_string())
                    .is_err()
                {
                    break;
                }
            }
        }
    }
}

/// Reads a pid file; `None` if it is missing or not a number.
pub fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The name of the person or account running this process, for the ledger's "who asked".
pub fn current_user() -> String {
    std::env::var("CUTOVER_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid cannot fail; getpwuid returns NULL or a pointer to a static entry
            // whose name we copy at once.
            unsafe {
                let uid = libc::getuid();
                let entry = libc::getpwuid(uid);
                if entry.is_null() || (*entry).pw_name.is_null() {
                    format!("uid-{uid}")
                } else {
                    std::ffi::CStr::from_ptr((*entry).pw_name)
                        .to_string_lossy()
                        .into_owned()
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_fit_the_unix_limit_and_differ_per_state_dir() {
        let a = socket_path(
            Path::new("/some/very/long/path/that/goes/on/and/on/.cutover"),
            "proxy-staging",
        );
        let b = socket_path(Path::new("/another/.cutover"), "proxy-staging");
        assert!(a.as_os_str().len() < 108, "{a:?}");
        assert_ne!(a, b);
    }

    #[test]
    fn a_second_try_lock_fails_while_the_first_is_held() {
        let dir = std::env::temp_dir().join(format!("cutover-lock-test-{}", std::process::id()));
        let path = dir.join("x.lock");
        let first = FileLock::try_acquire(&path).unwrap();
        assert!(first.is_some());
        // flock locks are per open file description, so a second open conflicts.
        assert!(FileLock::try_acquire(&path).unwrap().is_none());
        drop(first);
        assert!(FileLock::try_acquire(&path).unwrap().is_some());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn own_pid_is_alive_and_pid_zero_is_not() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
    }
}
