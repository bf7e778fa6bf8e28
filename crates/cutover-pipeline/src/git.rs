//! The checks checkout: one persistent git worktree per pipeline work dir.

use crate::error::{io, PipelineError};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Variables that would point git (and the checks) at another repository than the one meant.
pub(crate) const GIT_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_CEILING_DIRECTORIES",
];

fn git_output(dir: &Path, args: &[&str]) -> Result<Output, PipelineError> {
    let mut command = Command::new("git");
    // Hooks of the repository never run on cutover's own checkouts.
    command
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    for var in GIT_ENV {
        command.env_remove(var);
    }
    command
        .output()
        .map_err(|source| PipelineError::GitMissing { source })
}

fn git(dir: &Path, args: &[&str]) -> Result<String, PipelineError> {
    let out = git_output(dir, args)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(PipelineError::Git {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The repository's common git dir (shared by all its worktrees), canonical.
fn common_dir(dir: &Path) -> Option<PathBuf> {
    let out = git_output(dir, &["rev-parse", "--git-common-dir"]).ok()?;
    if !out.status.success() {
        return None;
    }
    let raw = String::from_utf8_lossy(&out.stdout).trim().to_string();
    dir.join(raw).canonicalize().ok()
}

/// Checks that `repo_root` is a repository holding the commit `sha`, given in full.
pub(crate) fn verify_commit(repo_root: &Path, sha: &str) -> Result<(), PipelineError> {
    if !repo_root.is_dir() || common_dir(repo_root).is_none() {
        return Err(PipelineError::NotARepo {
            path: repo_root.to_path_buf(),
        });
    }
    let unknown = || PipelineError::UnknownCommit {
        sha: sha.to_string(),
        repo: repo_root.to_path_buf(),
    };
    if sha.is_empty() || sha.starts_with('-') {
        return Err(unknown());
    }
    let spec = format!("{sha}^{{commit}}");
    let out = git_output(repo_root, &["rev-parse", "--verify", "--quiet", &spec])?;
    if !out.status.success() {
        return Err(unknown());
    }
    let full = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !full.eq_ignore_ascii_case(sha) {
        return Err(PipelineError::NotFullSha {
            rev: sha.to_string(),
            sha: full,
        });
    }
    Ok(())
}

/// `<work_dir>/checkout`, checked out clean at `sha`: tracked files as in the commit,
/// untracked files removed, ignored files (caches such as `target/`) kept.
pub(crate) fn prepare_checkout(
    repo_root: &Path,
    work_dir: &Path,
    sha: &str,
) -> Result<PathBuf, PipelineError> {
    let tree = work_dir.join("checkout");
    let reusable = tree.join(".git").is_file()
        && common_dir(&tree).is_some()
        && common_dir(&tree) == common_dir(repo_root)
        && git(&tree, &["checkout", "--force", "--detach", sha]).is_ok();
    if !reusable {
        // A checkout from another repository, a deleted one, or a broken one: start over.
        git(repo_root, &["worktree", "prune"])?;
        if tree.exists() {
            std::fs::remove_dir_all(&tree).map_err(io("remove the stale checkout", &tree))?;
        }
        std::fs::create_dir_all(work_dir).map_err(io("create", work_dir))?;
        let tree_arg = tree.to_string_lossy().to_string();
        git(
            repo_root,
            &["worktree", "add", "--force", "--detach", &tree_arg, sha],
        )?;
    }
    git(&tree, &["clean", "-ffd"])?;
    Ok(tree)
}
