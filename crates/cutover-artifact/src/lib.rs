//! Build-once artifacts for the process runtime: the build (git through `cutover-git`), and
//! the content-addressed artifact store in `<state dir>/artifacts/`.

mod build;
mod error;
mod store;

pub use build::{build, BuildEvent, BuildRequest, ImageBuildInput, ImageBuilder};
pub use error::ArtifactError;
pub use store::{manifest_digest, Artifact, ArtifactStore, FileEntry, ImageArtifact, SymlinkEntry};
