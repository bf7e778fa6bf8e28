use std::path::{Path, PathBuf};

/// Why the checks could not run at all. A check that fails is not an error: it is a
/// [`crate::CheckResult`] with status `failed`.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Git(#[from] cutover_git::GitError),
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
