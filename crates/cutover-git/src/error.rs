use std::path::PathBuf;

/// Errors of git. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git: {source}\n  hint: install git and make sure it is on PATH")]
    Missing { source: std::io::Error },
    #[error("{} is not inside a git repository\n  hint: run cutover from your app's git checkout (or `git init` one)", path.display())]
    NotARepo { path: PathBuf },
    #[error("`{rev}` is not a commit of this repository\n  hint: use a branch, a tag or a commit sha (see `git log --oneline`)")]
    UnknownRev { rev: String },
    #[error("commit {sha} is not in the repository at {}\n  hint: fetch it (`git fetch`), or check the sha with `git log --oneline`", repo.display())]
    UnknownCommit { sha: String, repo: PathBuf },
    #[error("{rev:?} is not a full commit sha (it names {sha})\n  hint: resolve the revision first (`git rev-parse {rev}`) and pass the full sha, so results are recorded for the exact commit")]
    NotFullSha { rev: String, sha: String },
    #[error("{value:?} is not a commit sha\n  hint: a commit sha is 40 hexadecimal digits, as `git rev-parse HEAD` prints")]
    NotASha { value: String },
    #[error("`git {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("cannot prepare the clean checkout {}: `git {args}` failed: {stderr}\n  hint: check the repository with `git status` and `git worktree list`; removing {} makes cutover create it again", tree.display(), tree.display())]
    Checkout {
        tree: PathBuf,
        args: String,
        stderr: String,
    },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `Io` with the action and path filled in.
pub(crate) fn io(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> GitError {
    let path = path.into();
    move |source| GitError::Io {
        action,
        path,
        source,
    }
}
