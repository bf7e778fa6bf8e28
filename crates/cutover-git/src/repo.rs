use crate::error::io;
use crate::run::{bytes, git, output, text};
use crate::{short, GitError, Sha};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The state dir, never counted as a change of the working tree.
const STATE_DIR: &str = ".cutover/";

/// A git working tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    /// Its top level.
    pub root: PathBuf,
}

/// Who made a commit, what it says and when it was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub sha: Sha,
    pub author_name: String,
    pub author_email: String,
    pub subject: String,
    /// Committer time.
    pub time: DateTime<Utc>,
}

impl CommitInfo {
    /// "Name <email>" of the author.
    pub fn author(&self) -> String {
        format!("{} <{}>", self.author_name, self.author_email)
    }
}

impl Repo {
    /// The repository that contains `start`.
    pub fn discover(start: &Path) -> Result<Repo, GitError> {
        let not_a_repo = || GitError::NotARepo {
            path: start.to_path_buf(),
        };
        if !start.is_dir() {
            return Err(not_a_repo());
        }
        let out = output(start, &["rev-parse", "--show-toplevel"])?;
        if !out.status.success() {
            return Err(not_a_repo());
        }
        Ok(Repo {
            root: PathBuf::from(text(out.stdout)),
        })
    }

    fn git(&self, args: &[&str]) -> Result<String, GitError> {
        git(&self.root, args)
    }

    /// The commit `rev` names (`HEAD`, a branch, a tag, a short or full sha).
    pub fn resolve(&self, rev: &str) -> Result<Sha, GitError> {
        let unknown = || {
            if Sha::parse(rev).is_ok() {
                GitError::UnknownCommit {
                    sha: rev.to_string(),
                    repo: self.root.clone(),
                }
            } else {
                GitError::UnknownRev {
                    rev: rev.to_string(),
                }
            }
        };
        if rev.is_empty() || rev.starts_with('-') {
            return Err(unknown());
        }
        let spec = format!("{rev}^{{commit}}");
        let out = output(&self.root, &["rev-parse", "--verify", "--quiet", &spec])?;
        if !out.status.success() {
            return Err(unknown());
        }
        Sha::parse(&text(out.stdout))
    }

    /// The commit `sha` names, which must be given in full (results are recorded for the
    /// exact commit, never for whatever a branch or a prefix names at the time).
    pub fn resolve_full(&self, sha: &str) -> Result<Sha, GitError> {
        let full = self.resolve(sha)?;
        if !full.eq_ignore_ascii_case(sha) {
            return Err(GitError::NotFullSha {
                rev: sha.to_string(),
                sha: full.into_string(),
            });
        }
        Ok(full)
    }

    /// Changed tracked files and untracked, non-ignored files (the state dir excluded).
    pub fn dirty_paths(&self) -> Result<Vec<String>, GitError> {
        let out = bytes(
            &self.root,
            &["status", "--porcelain=v1", "-z", "--untracked-files=all"],
        )?;
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
    pub fn is_dirty(&self) -> Result<bool, GitError> {
        Ok(!self.dirty_paths()?.is_empty())
    }

    /// 12 hex digits naming the uncommitted state: sha256 of `git diff HEAD --binary` and of
    /// the names and contents of untracked files.
    pub fn dirty_hash(&self) -> Result<String, GitError> {
        let mut hasher = Sha256::new();
        hasher.update(bytes(&self.root, &["diff", "HEAD", "--binary"])?);
        let untracked = bytes(
            &self.root,
            &["ls-files", "--others", "--exclude-standard", "-z"],
        )?;
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
        Ok(short(&hex::encode(hasher.finalize())).to_string())
    }

    /// The content of `path` in the commit `rev` names; `None` if the commit has no such file.
    pub fn show_file(&self, rev: &str, path: &str) -> Result<Option<String>, GitError> {
        let commit = self.resolve(rev)?;
        let object = format!("{commit}:{path}");
        let exists = output(&self.root, &["cat-file", "-e", &object])?;
        if !exists.status.success() {
            return Ok(None);
        }
        let content = bytes(&self.root, &["cat-file", "blob", &object])?;
        String::from_utf8(content)
            .map(Some)
            .map_err(|_| GitError::Failed {
                args: format!("cat-file blob {object}"),
                stderr: format!("{path} is not UTF-8 text"),
            })
    }

    /// Author, subject and time of the commit `rev` names.
    pub fn commit_info(&self, rev: &str) -> Result<CommitInfo, GitError> {
        let commit = self.resolve(rev)?;
        let out = self.git(&["show", "-s", "--format=%an%x00%ae%x00%cI%x00%s", &commit])?;
        let bad = || GitError::Failed {
            args: format!("show -s {commit}"),
            stderr: format!("unexpected output {out:?}"),
        };
        let fields: Vec<&str> = out.splitn(4, '\0').collect();
        let [name, email, time, subject] = fields[..] else {
            return Err(bad());
        };
        let time = DateTime::parse_from_rfc3339(time).map_err(|_| bad())?;
        Ok(CommitInfo {
            author_name: name.to_string(),
            author_email: email.to_string(),
            subject: subject.to_string(),
            time: time.with_timezone(&Utc),
            sha: commit,
        })
    }

    /// Whether `commit` is `reference` or one of its ancestors; `false` when `reference` does
    /// not exist.
    pub fn is_ancestor(&self, commit: &str, reference: &str) -> Result<bool, GitError> {
        let args = ["merge-base", "--is-ancestor", commit, reference];
        let out = output(&self.root, &args)?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            // An unknown reference: git says so on stderr, and it has no ancestors.
            _ if self.resolve(reference).is_err() => Ok(false),
            _ => Err(GitError::Failed {
                args: args.join(" "),
                stderr: text(out.stderr),
            }),
        }
    }

    /// The commit `branch` points at on `remote` (a remote's name, a URL or a path); `None`
    /// when the remote has no such branch.
    pub fn remote_tip(&self, remote: &str, branch: &str) -> Result<Option<Sha>, GitError> {
        let listing = self.git(&["ls-remote", remote, &format!("refs/heads/{branch}")])?;
        listing
            .split_whitespace()
            .next()
            .map(Sha::parse)
            .transpose()
    }

    /// `git fetch --quiet <remote> <refspec>`.
    pub fn fetch(&self, remote: &str, refspec: &str) -> Result<(), GitError> {
        self.git(&["fetch", "--quiet", remote, refspec]).map(|_| ())
    }

    /// Makes `tree` a worktree of this repository checked out clean at `commit`: tracked
    /// files as in the commit, untracked files removed, ignored files (caches such as
    /// `target/` or `node_modules/`) kept, so that what runs there stays incremental. `tree`
    /// is reused between calls; one that is missing, broken or of another repository is
    /// made again.
    pub fn clean_checkout(&self, tree: &Path, commit: &Sha) -> Result<(), GitError> {
        let in_tree = |args: &[&str]| git(tree, args).map_err(|e| checkout_error(tree, args, e));
        let reusable = tree.join(".git").is_file()
            && common_dir(tree).is_some()
            && common_dir(tree) == common_dir(&self.root)
            && in_tree(&["checkout", "--force", "--detach", commit]).is_ok();
        if !reusable {
            let in_repo = |args: &[&str]| self.git(args).map_err(|e| checkout_error(tree, args, e));
            in_repo(&["worktree", "prune"])?;
            if tree.exists() {
                std::fs::remove_dir_all(tree).map_err(io("remove the stale checkout", tree))?;
            }
            if let Some(parent) = tree.parent() {
                std::fs::create_dir_all(parent).map_err(io("create", parent))?;
            }
            let tree_arg = tree.to_string_lossy();
            in_repo(&["worktree", "add", "--force", "--detach", &tree_arg, commit])?;
        }
        // Untracked files go; ignored ones (build caches) stay.
        in_tree(&["clean", "-ffd"])?;
        Ok(())
    }
}

/// A failed git command while preparing the checkout `tree`, with the hint to remove it.
fn checkout_error(tree: &Path, args: &[&str], error: GitError) -> GitError {
    match error {
        GitError::Failed { stderr, .. } => GitError::Checkout {
            tree: tree.to_path_buf(),
            args: args.join(" "),
            stderr,
        },
        other => other,
    }
}

/// The repository's common git dir (shared by all its worktrees), canonical.
fn common_dir(dir: &Path) -> Option<PathBuf> {
    let raw = git(dir, &["rev-parse", "--git-common-dir"]).ok()?;
    dir.join(raw).canonicalize().ok()
}
