use crate::GitError;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Removes every `GIT_*` variable of this process's environment from `command`: variables
/// such as `GIT_DIR`, `GIT_WORK_TREE`, `GIT_INDEX_FILE` or `GIT_OBJECT_DIRECTORY` (set by git
/// for its hooks, or left in a shell) would make git work on another repository than the one
/// in the command's directory. Variables set on `command` afterwards are kept, and so are the
/// ones that only say how to reach a remote (`GIT_SSH_COMMAND`, `GIT_ASKPASS`, `GIT_SSL_*`,
/// `GIT_PROXY_COMMAND` …): CI runners set them for `cutover watch` and for checks that fetch.
pub fn scrub_env(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        let bytes = name.as_bytes();
        if bytes.starts_with(b"GIT_") && !is_transport(bytes) {
            command.env_remove(name);
        }
    }
    command
}

/// Variables that say how git reaches a remote, never which repository it works on.
fn is_transport(name: &[u8]) -> bool {
    const KEPT: &[&[u8]] = &[
        b"GIT_SSH",
        b"GIT_SSH_COMMAND",
        b"GIT_SSH_VARIANT",
        b"GIT_ASKPASS",
        b"GIT_PROXY_COMMAND",
        b"GIT_HTTP_USER_AGENT",
    ];
    KEPT.contains(&name) || name.starts_with(b"GIT_SSL_") || name.starts_with(b"GIT_HTTP_")
}

/// `git <args>` in `dir`, as every git call of cutover runs: hooks off, no `GIT_*` variable
/// from the caller, never a prompt, untranslated messages.
fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("git");
    scrub_env(&mut command);
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
    command
}

/// Runs `git <args>` in `dir`, whatever its exit status.
pub(crate) fn output(dir: &Path, args: &[&str]) -> Result<Output, GitError> {
    command(dir, args)
        .output()
        .map_err(|source| GitError::Missing { source })
}

/// Runs `git <args>` in `dir` and returns its stdout; a failure carries git's stderr.
pub(crate) fn bytes(dir: &Path, args: &[&str]) -> Result<Vec<u8>, GitError> {
    let out = output(dir, args)?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(GitError::Failed {
            args: args.join(" "),
            stderr: text(out.stderr),
        })
    }
}

/// Runs `git <args>` in `dir` (hooks off, the caller's `GIT_*` variables removed) and returns
/// its stdout, trimmed; a failure carries git's stderr.
pub fn git(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    bytes(dir, args).map(text)
}

pub(crate) fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::is_transport;

    #[test]
    fn only_how_to_reach_a_remote_passes_the_scrub() {
        for kept in [
            "GIT_SSH_COMMAND",
            "GIT_ASKPASS",
            "GIT_SSL_CAINFO",
            "GIT_HTTP_PROXY_SSL",
        ] {
            assert!(is_transport(kept.as_bytes()), "{kept}");
        }
        for removed in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_CONFIG_GLOBAL",
        ] {
            assert!(!is_transport(removed.as_bytes()), "{removed}");
        }
    }
}
