use std::path::{Path, PathBuf};

/// Why the checks could not run at all. A check that fails is not an error: it is a
/// [`crate::CheckResult`] with status `failed`.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot run git: {source}\n  hint: install git and make sure it is on PATH")]
    GitMissing { source: std::io::Error },
    #[error("{} is not a git repository\n  hint: run the pipeline from your app's git checkout (or `git init` one)", path.display())]
    NotARepo { path: PathBuf },
    #[error("commit {sha} is not in the repository at {}\n  hint: fetch it (`git fetch`), or check the sha with `git log --oneline`", repo.display())]
    UnknownCommit { sha: String, repo: PathBuf },
    #[error("{rev:?} is not a full commit sha (it names {sha})\n  hint: resolve the revision first (`git rev-parse {rev}`) and pass the full sha, so results are recorded for the exact commit")]
    NotFullSha { rev: String, sha: String },
    #[error("git {args} failed: {stderr}\n  hint: check the repository with `git status` and `git worktree list`; removing the checks checkout makes cutover create it again")]
    Git { args: String, stderr: String },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("[pipeline] checks: {0}\n  hint: check names must be unique, `needs` must name declared checks and must not form a cycle")]
    InvalidChecks(String),
}

/// `map_err` helper: an io error while doing `action` on `path`.
pub(crate) fn io(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> PipelineError {
    let path = path.to_path_buf();
    move |source| PipelineError::Io {
        action,
        path,
        source,
    }
}
