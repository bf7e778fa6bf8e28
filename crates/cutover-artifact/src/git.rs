//! Git helpers: every call runs the `git` binary.

use crate::error::ArtifactError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The state dir, never counted as a change of the working tree.
const STATE_DIR: &str = ".cutover/";

/// A git working tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    pub root: PathBuf,
}

/// Who made a commit, what it says and when it was committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub sha: String,
    pub author_name: String,
    pub author_email: String,
    pub subject: String,
    /// Committer time.
    pub time: DateTime<Utc>,
}

/// Runs `git <args>` in `dir`.
pub(crate) fn git_output(dir: &Path, args: &[&str]) -> Result<Output, ArtifactError> {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ArtifactError::GitMissing { source })
}

/// Runs `git <args>` in `dir` and returns its stdout; a failure carries git's stderr.
pub(crate) fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, ArtifactError> {
    let out = git_output(dir, args)?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(ArtifactError::Git {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).trim().to_string()
}

impl Repo {
    /// The repository that contains `start`.
    pub fn discover(start: &Path) -> Result<Repo, ArtifactError> {
        let out = git_output(start, &["rev-parse", "--show-toplevel"])?;
        if !out.status.success() {
            return Err(ArtifactError::NotARepo {
                path: start.to_path_buf(),
            });
        }
        Ok(Repo {
            root: PathBuf::from(text(out.stdout)),
        })
    }

    fn git(&self, args: &[&str]) -> Result<Vec<u8>, ArtifactError> {
        git(&self.root, args)
    }

    /// The full sha of the commit `rev` names (`HEAD`, a branch, a tag, a short sha).
    pub fn resolve(&self, rev: &str) -> Result<String, ArtifactError> {
        let unknown = || ArtifactError::UnknownRev {
            rev: rev.to_string(),
        };
        if rev.is_empty() || rev.starts_with('-') {
            return Err(unknown());
        }
        let spec = format!("{rev}^{{commit}}");
        let out = git_output(&self.root, &["rev-parse", "--verify", "--quiet", &spec])?;
        if !out.status.success() {
            return Err(unknown());
        }
        Ok(text(out.stdout))
    }

    /// Changed tracked files and untracked, non-ignored files (the state dir excluded).
    pub fn dirty_paths(&self) -> Result<Vec<String>, ArtifactError> {
        let out = self.git(&["status", "--porcelain=v1", "-z", "--untracked-files=all"])?;
        let mut paths = Vec::new();
        let mut entries = out.split(|b| *b == 0).filter(|e| !e.is_empty());
        while let Some(entry) = entries.next() {
            let entry = String::from_utf8_lossy(entry);
            let (status, path) = entry.split_at(entry.len().min(3));
            if status.starts_with('R') || status.starts_with('C') {
                entries.next(); // the original path of a rename or copy
            }
            if !path.starts_with(STATE_DIR) {
                paths.push(path.to_string());
            }
        }
        Ok(paths)
    }

    /// Whether the working tree differs from `HEAD` (see [`Repo::dirty_paths`]).
    pub fn is_dirty(&self) -> Result<bool, ArtifactError> {
        Ok(!self.dirty_paths()?.is_empty())
    }

    /// 12 hex digits naming the uncommitted state: sha256 of `git diff HEAD --binary` and of
    /// the names and contents of untracked files.
    pub fn dirty_hash(&self) -> Result<String, ArtifactError> {
        let mut hasher = Sha256::new();
        hasher.update(self.git(&["diff", "HEAD", "--binary"])?);
        let untracked = self.git(&["ls-files", "--others", "--exclude-standard", "-z"])?;
        for name in untracked.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            if name.starts_with(STATE_DIR.as_bytes()) {
                continue;
            }
            let path = self.root.join(String::from_utf8_lossy(name).as_ref());
            hasher.update(name);
            hasher.update([0]);
            // A file that vanished or is a socket still changes the hash by its name.
            if let Ok(content) = std::fs::read(&path) {
                hasher.update(content);
            }
            hasher.update([0]);
        }
        Ok(hex::encode(hasher.finalize())[..12].to_string())
    }

    /// The content of `path` in commit `sha`; `None` if the commit has no such file.
    pub fn show_file(&self, sha: &str, path: &str) -> Result<Option<String>, ArtifactError> {
        let commit = self.resolve(sha)?;
        let object = format!("{commit}:{path}");
        let exists = git_output(&self.root, &["cat-file", "-e", &object])?;
        if !exists.status.success() {
            return Ok(None);
        }
        let bytes = self.git(&["cat-file", "blob", &object])?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ArtifactError::Git {
                args: format!("cat-file blob {object}"),
                stderr: format!("{path} is not UTF-8 text"),
            })
    }

    /// Author, subject and time of a commit.
    pub fn commit_info(&self, sha: &str) -> Result<CommitInfo, ArtifactError> {
        let commit = self.resolve(sha)?;
        let out = self.git(&[
            "show",
            "-s",
            "--format=%H%x00%an%x00%ae%x00%cI%x00%s",
            &commit,
        ])?;
        let out = String::from_utf8_lossy(&out);
        let fields: Vec<&str> = out.trim_end_matches('\n').splitn(5, '\0').collect();
        let bad = || ArtifactError::Git {
            args: format!("show -s {commit}"),
            stderr: format!("unexpected output {out:?}"),
        };
        let [sha, name, email, time, subject] = fields[..] else {
            return Err(bad());
        };
        let time = DateTime::parse_from_rfc3339(time).map_err(|_| bad())?;
        Ok(CommitInfo {
            sha: sha.to_string(),
            author_name: name.to_string(),
            author_email: email.to_string(),
            subject: subject.to_string(),
            time: time.with_timezone(&Utc),
        })
    }
}
