//! The files of a state dir that the CLI and the server both need to find.

use std::path::{Path, PathBuf};

/// A state dir (`.cutover/` beside `cutover.toml`, or `--state-dir`) and the paths of the
/// server's files in it: its socket, pid file, locks and log.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub path: PathBuf,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> StateDir {
        StateDir { path: path.into() }
    }

    /// The server's unix socket (outside the state dir: see [`crate::socket_path`]).
    pub fn socket(&self) -> PathBuf {
        crate::socket_path(&self.path, "server")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.path.join("server.pid")
    }

    /// Held by the running server for its whole life.
    pub fn run_lock(&self) -> PathBuf {
        self.path.join("server.lock")
    }

    /// Held by a CLI while it starts a server, so that two CLIs do not start two.
    pub fn start_lock(&self) -> PathBuf {
        self.path.join("server.start.lock")
    }

    pub fn log_file(&self) -> PathBuf {
        self.path.join("logs").join("server.log")
    }

    /// The access log of the edge of `env`: one JSON line per request, rotated by size.
    pub fn access_log(&self, env: &str) -> PathBuf {
        self.path.join("logs").join(format!("access-{env}.log"))
    }

    /// The content-addressed artifact store.
    pub fn artifacts(&self) -> PathBuf {
        self.path.join("artifacts")
    }

    /// The repository the state dir belongs to (its parent).
    pub fn repo_root(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// Creates the state dir with a `.gitignore` of `*`, so it never dirties the repo.
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.path)?;
        let ignore = self.path.join(".gitignore");
        if !ignore.exists() {
            std::fs::write(ignore, "*\n")?;
        }
        Ok(())
    }
}
