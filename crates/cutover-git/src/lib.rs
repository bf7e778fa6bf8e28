//! Git for cutover: every call runs the `git` binary, the same way.
//!
//! Repository hooks never run (`-c core.hooksPath=/dev/null`), and no `GIT_*` variable of the
//! caller's environment reaches git: a `GIT_DIR` or `GIT_INDEX_FILE` left by a git hook, a
//! shell or a CI job would point git at another repository than the one meant. The same
//! [`scrub_env`] is applied to the commands cutover runs in its checkouts (build commands,
//! checks).

mod error;
mod repo;
mod run;
mod sha;

pub use error::GitError;
pub use repo::{CommitInfo, Repo};
pub use run::{git, scrub_env};
pub use sha::{short, Sha, SHORT_LEN};
