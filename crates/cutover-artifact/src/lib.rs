//! Build-once artifacts for the process runtime: git helpers, the build, and the
//! content-addressed artifact store in `<state dir>/artifacts/`.

mod build;
mod error;
mod git;
mod store;

pub use build::{build, BuildEvent, BuildRequest, ImageBuildInput, ImageBuilder};
pub use error::ArtifactError;
pub use git::{CommitInfo, Repo};
pub use store::{manifest_digest, Artifact, ArtifactStore, FileEntry, ImageArtifact, SymlinkEntry};
