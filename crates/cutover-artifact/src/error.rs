use std::path::PathBuf;

/// Errors of git, the artifact store and builds. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Git(#[from] cutover_git::GitError),
    #[error("the working tree has uncommitted changes: {}{}\n  hint: commit them, or pass --allow-dirty to build the working tree as <sha>-dirty-<hash>", paths.join(", "), more_suffix(*more))]
    Dirty {
        /// Up to 5 changed paths.
        paths: Vec<String>,
        /// How many more there are.
        more: usize,
    },
    #[error(
        "{what} has no cutover.toml\n  hint: `cutover init` writes one; commit it and build again"
    )]
    NoConfig { what: String },
    #[error(transparent)]
    Config(#[from] cutover_config::ConfigError),
    #[error("the image build failed: {0}")]
    ImageBuild(String),
    #[error("the build command failed ({status}); its last lines of output:\n{}\n  hint: fix the build and commit; it ran with `sh -c` in {}", indent(lines), dir.display())]
    BuildFailed {
        status: String,
        /// The last (up to 20) lines of stdout and stderr.
        lines: Vec<String>,
        dir: PathBuf,
    },
    #[error("[build] files: {pattern:?} matches nothing in the build checkout\n  hint: fix the pattern, or make the build command produce it (patterns are relative to the repository root)")]
    NoMatch { pattern: String },
    #[error("[build] files: {pattern:?} {reason}\n  hint: use a path or glob relative to the repository root, e.g. \"dist/**\"")]
    BadPattern { pattern: String, reason: String },
    #[error("[build] files: {path:?} is a symlink to {target:?}, outside the bundle\n  hint: the bundle is unpacked elsewhere, where that target is not; add what it points to to [build] files and link to it inside the bundle, or use an absolute target that exists on every machine")]
    SymlinkEscapes { path: String, target: String },
    #[error("[build] files: {pattern:?} goes through the symlink {link:?}, which the bundle keeps as a link\n  hint: name the symlink itself (\"{link}\"), or the directory it points to")]
    ThroughSymlink { pattern: String, link: String },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest {} is unreadable: {source}\n  hint: remove it and build that version again", path.display())]
    BadManifest {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("artifact {artifact}: {what}\n  hint: the artifact store is damaged; remove {} and build that version again", manifest.display())]
    Corrupt {
        artifact: String,
        what: String,
        manifest: PathBuf,
    },
    #[error("{} already exists and is not empty\n  hint: unpack into a fresh directory", path.display())]
    DestinationExists { path: PathBuf },
    #[error("the upload is not the blob it claims to be: {expected} was announced, {got} ({size} bytes) arrived\n  hint: a truncated or corrupted upload stores nothing; send it again")]
    DigestMismatch {
        expected: String,
        got: String,
        size: u64,
    },
    #[error("artifact {artifact}: {count} of its blobs are not here (first: {first})\n  hint: upload the blobs before the manifest")]
    MissingBlobs {
        artifact: String,
        count: usize,
        first: String,
    },
    #[error("{what} {value:?} cannot name an artifact\n  hint: app names use [a-z0-9-]; versions are commit shas")]
    BadName { what: &'static str, value: String },
}

fn more_suffix(more: usize) -> String {
    if more == 0 {
        String::new()
    } else {
        format!(" and {more} more")
    }
}

fn indent(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `Io` with the action and path filled in.
pub(crate) fn io(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> ArtifactError {
    let path = path.into();
    move |source| ArtifactError::Io {
        action,
        path,
        source,
    }
}
