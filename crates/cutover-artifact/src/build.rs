//! Build once: check out a commit, run `[build] command`, collect `[build] files` into the store.

use crate::error::{io, ArtifactError};
use crate::store::{
    manifest_digest, Artifact, ArtifactStore, FileEntry, ImageArtifact, SymlinkEntry,
};
use cutover_config::{Config, CONFIG_FILE};
use cutover_git::Repo;
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

/// What to build.
pub struct BuildRequest<'a> {
    pub repo: &'a Repo,
    pub store: &'a ArtifactStore,
    /// `<state dir>/build`: holds the build worktree and `build.lock`.
    pub work_dir: &'a Path,
    pub rev: &'a str,
    /// Build uncommitted changes (only when `rev` is `HEAD`) as `<sha>-dirty-<hash>`.
    pub allow_dirty: bool,
    /// Builds the OCI image of a commit whose config has `[build] dockerfile`, in the checkout
    /// after the build command ran. `None`: such a commit cannot be built here.
    pub image_builder: Option<&'a mut ImageBuilder<'a>>,
}

/// What an image build gets: the checkout (after `[build] command`), the commit's config and
/// the version being built.
pub struct ImageBuildInput<'a> {
    pub checkout: &'a Path,
    pub config: &'a Config,
    pub version: &'a str,
}

/// Builds an image; the error is shown as is.
pub type ImageBuilder<'a> = dyn FnMut(ImageBuildInput<'_>) -> Result<ImageArtifact, String> + 'a;

/// Progress of a build, in order: `Started`, `Output`*, `Collected`, `Stored`; or `Reused`
/// alone when the artifact already exists.
#[derive(Debug, Clone)]
pub enum BuildEvent {
    Started {
        version: String,
    },
    Reused {
        artifact: Artifact,
    },
    /// One line of the build command's stdout or stderr.
    Output(String),
    Collected {
        /// Regular files and symlinks.
        files: usize,
        bytes: u64,
    },
    Stored {
        artifact: Artifact,
    },
}

/// How many lines of output a failed build shows.
const FAILED_OUTPUT_LINES: usize = 20;
/// How many changed paths a dirty-tree refusal lists.
const DIRTY_PATHS_SHOWN: usize = 5;

/// Builds `rev` into the store, or returns the artifact already built for it.
///
/// A clean build runs in a persistent worktree at `<work_dir>/worktree` ([`Repo::clean_checkout`]:
/// reset to the commit, repository hooks off). Ignored files (`target/`, `node_modules/`, …)
/// survive between builds, so builds stay incremental; only what is in the commit and the
/// declared `files` reach the artifact. The build command runs without the caller's `GIT_*`
/// variables. The build uses `cutover.toml` as
/// committed in that commit. A dirty build (`allow_dirty`, `rev` = HEAD) runs in the
/// repository itself with the working tree's `cutover.toml`.
pub fn build(
    req: BuildRequest,
    on_event: &mut dyn FnMut(BuildEvent),
) -> Result<Artifact, ArtifactError> {
    let lock_path = req.work_dir.join("build.lock");
    let _lock = cutover_daemon::FileLock::acquire(&lock_path).map_err(io("lock", &lock_path))?;

    let sha = req.repo.resolve(req.rev)?;
    let head = req.repo.resolve("HEAD")?;
    let dirty = sha == head && req.repo.is_dirty()?;
    if dirty && !req.allow_dirty {
        let paths = req.repo.dirty_paths()?;
        let more = paths.len().saturating_sub(DIRTY_PATHS_SHOWN);
        return Err(ArtifactError::Dirty {
            paths: paths.into_iter().take(DIRTY_PATHS_SHOWN).collect(),
            more,
        });
    }

    let (config_text, origin, version) = if dirty {
        let path = req.repo.root.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|_| ArtifactError::NoConfig {
            what: "the working tree".to_string(),
        })?;
        let version = format!("{sha}-dirty-{}", req.repo.dirty_hash()?);
        (text, path.display().to_string(), version)
    } else {
        let text =
            req.repo
                .show_file(&sha, CONFIG_FILE)?
                .ok_or_else(|| ArtifactError::NoConfig {
                    what: format!("commit {}", sha.short()),
                })?;
        (
            text,
            cutover_config::committed_origin(&sha),
            sha.to_string(),
        )
    };
    let config = Config::parse(&config_text, &origin)?;
    let app = config.app.name.to_string();

    if let Some(artifact) = req.store.get(&app, &version)? {
        on_event(BuildEvent::Reused {
            artifact: artifact.clone(),
        });
        return Ok(artifact);
    }
    on_event(BuildEvent::Started {
        version: version.clone(),
    });

    let checkout = if dirty {
        req.repo.root.clone()
    } else {
        let tree = req.work_dir.join("worktree");
        req.repo.clean_checkout(&tree, &sha)?;
        tree
    };
    if let Some(command) = &config.build.command {
        run_build_command(command, &checkout, &version, on_event)?;
    }

    let image = match (&config.build.dockerfile, req.image_builder) {
        (None, _) => None,
        (Some(_), None) => return Err(ArtifactError::ImageBuild("this commit builds an image ([build] dockerfile), but no container engine was given to build it".into())),
        (Some(_), Some(builder)) => Some(
            builder(ImageBuildInput { checkout: &checkout, config: &config, version: &version })
                .map_err(ArtifactError::ImageBuild)?,
        ),
    };
    let found = collect(&checkout, &config.build.files)?;
    let mut files = Vec::with_capacity(found.len());
    let mut symlinks = Vec::new();
    let mut bytes = 0;
    for (path, item) in found {
        match item {
            Found::File(source) => {
                let meta = std::fs::metadata(&source).map_err(io("read", &source))?;
                let (digest, size) = req.store.put_file(&source)?;
                bytes += size;
                files.push(FileEntry {
                    path,
                    digest,
                    size,
                    executable: meta.permissions().mode() & 0o111 != 0,
                });
            }
            Found::Symlink(target) => symlinks.push(SymlinkEntry { path, target }),
        }
    }
    on_event(BuildEvent::Collected {
        files: files.len() + symlinks.len(),
        bytes,
    });

    let artifact = Artifact {
        app,
        version,
        commit: sha.into_string(),
        // An image-only artifact is identified by its image; a bundle by its files.
        digest: match &image {
            Some(image) if files.is_empty() && symlinks.is_empty() => image.id.clone(),
            _ => manifest_digest(&files, &symlinks),
        },
        created_at: chrono::Utc::now(),
        files,
        symlinks,
        config_text,
        image,
    };
    req.store.put_manifest(&artifact)?;
    on_event(BuildEvent::Stored {
        artifact: artifact.clone(),
    });
    Ok(artifact)
}

/// Runs `command` with `sh -c` in `dir`, sending each line of stdout and stderr as `Output`.
fn run_build_command(
    command: &str,
    dir: &Path,
    version: &str,
    on_event: &mut dyn FnMut(BuildEvent),
) -> Result<(), ArtifactError> {
    let mut child = cutover_git::scrub_env(&mut Command::new("sh"))
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .env("CUTOVER_VERSION", version)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("run the build command in", dir))?;
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(forward_lines(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(forward_lines(err, tx.clone()));
    }
    drop(tx);
    let mut last = VecDeque::with_capacity(FAILED_OUTPUT_LINES);
    for line in rx {
        if last.len() == FAILED_OUTPUT_LINES {
            last.pop_front();
        }
        last.push_back(line.clone());
        on_event(BuildEvent::Output(line));
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child
        .wait()
        .map_err(io("wait for the build command in", dir))?;
    if status.success() {
        Ok(())
    } else {
        Err(ArtifactError::BuildFailed {
            status: status.to_string(),
            lines: last.into(),
            dir: dir.to_path_buf(),
        })
    }
}

fn forward_lines(
    stream: impl Read + Send + 'static,
    tx: mpsc::Sender<String>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || cutover_daemon::send_lines(stream, tx))
}

/// Never part of an artifact.
fn excluded(relative: &Path) -> bool {
    relative.components().any(|c| c.as_os_str() == ".git") || relative.starts_with(".cutover")
}

/// What a path of the bundle is in the build checkout.
enum Found {
    /// A regular file, stored as a blob.
    File(PathBuf),
    /// A symbolic link, kept as a link: its target text.
    Symlink(String),
}

/// How patterns match: `*` stays within one path component, as in a shell; `**` crosses them.
const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// What `patterns` match under `root`: relative `/`-path → file or symlink. A matched
/// directory brings everything under it. Symlinks are never followed (a link to a directory
/// is one entry, not a copy of the directory), so a link loop cannot loop.
fn collect(root: &Path, patterns: &[String]) -> Result<BTreeMap<String, Found>, ArtifactError> {
    let mut found = BTreeMap::new();
    for pattern in patterns {
        let bad = |reason: String| ArtifactError::BadPattern {
            pattern: pattern.clone(),
            reason,
        };
        let mut parts = Vec::new();
        for component in Path::new(pattern).components() {
            match component {
                Component::Normal(part) => parts.push(part.to_string_lossy().to_string()),
                Component::CurDir => {}
                _ => return Err(bad("leaves the repository".to_string())),
            }
        }
        let matcher = glob::Pattern::new(&parts.join("/"))
            .map_err(|e| bad(format!("is not a valid glob: {}", e.msg)))?;
        // The walk starts at the longest leading part without glob characters.
        let literal = parts
            .iter()
            .take_while(|p| !p.contains(['*', '?', '[']))
            .count();
        let mut base = PathBuf::new();
        for (i, part) in parts[..literal].iter().enumerate() {
            base.push(part);
            // The pattern itself may name a symlink; a path through one would copy what the
            // link points to under the link's name, beside the link.
            let whole = i + 1 == parts.len();
            if !whole && is_symlink(&root.join(&base)) {
                return Err(ArtifactError::ThroughSymlink {
                    pattern: pattern.clone(),
                    link: base.to_string_lossy().to_string(),
                });
            }
        }
        let max_depth = if parts.iter().any(|p| p.contains("**")) {
            usize::MAX
        } else {
            parts.len() - literal
        };
        let mut matched = 0;
        let mut walk = walkdir::WalkDir::new(root.join(&base))
            .follow_links(false)
            .follow_root_links(false)
            .max_depth(max_depth)
            .into_iter();
        while let Some(entry) = walk.next() {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e)
                    if e.depth() == 0
                        && e.io_error()
                            .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
                {
                    break
                }
                Err(e) => return Err(walk_error(e)),
            };
            let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
            if excluded(relative) {
                if entry.file_type().is_dir() {
                    walk.skip_current_dir();
                }
                continue;
            }
            if !matcher.matches_path_with(relative, MATCH) {
                continue;
            }
            if entry.file_type().is_dir() {
                matched += add_tree(root, entry.path(), &mut found)?;
                walk.skip_current_dir();
            } else {
                matched += add_entry(root, &entry, &mut found)?;
            }
        }
        if matched == 0 {
            return Err(ArtifactError::NoMatch {
                pattern: pattern.clone(),
            });
        }
    }
    Ok(found)
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn walk_error(e: walkdir::Error) -> ArtifactError {
    let path = e.path().map(Path::to_path_buf).unwrap_or_default();
    let source = e
        .into_io_error()
        .unwrap_or_else(|| std::io::Error::other("a filesystem loop"));
    ArtifactError::Io {
        action: "read",
        path,
        source,
    }
}

/// Adds everything under the directory `dir`; returns how many entries it added.
fn add_tree(
    root: &Path,
    dir: &Path,
    found: &mut BTreeMap<String, Found>,
) -> Result<usize, ArtifactError> {
    let mut seen = 0;
    let mut walk = walkdir::WalkDir::new(dir).follow_links(false).into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.map_err(walk_error)?;
        let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
        if excluded(relative) {
            if entry.file_type().is_dir() {
                walk.skip_current_dir();
            }
            continue;
        }
        seen += add_entry(root, &entry, found)?;
    }
    Ok(seen)
}

/// Adds a regular file or a symlink (anything else is skipped); returns how many it added.
fn add_entry(
    root: &Path,
    entry: &walkdir::DirEntry,
    found: &mut BTreeMap<String, Found>,
) -> Result<usize, ArtifactError> {
    let path = entry.path();
    let relative = path.strip_prefix(root).unwrap_or(path);
    let not_utf8 = |what: &str| ArtifactError::BadPattern {
        pattern: relative.to_string_lossy().to_string(),
        reason: format!("{what} not UTF-8"),
    };
    let Some(name) = relative.to_str() else {
        return Err(not_utf8("is"));
    };
    let kind = entry.file_type();
    let item = if kind.is_symlink() {
        let target = std::fs::read_link(path).map_err(io("read the symlink", path))?;
        let Some(target) = target.to_str() else {
            return Err(not_utf8("is a symlink whose target is"));
        };
        if crate::store::escapes(name, target) {
            return Err(ArtifactError::SymlinkEscapes {
                path: name.to_string(),
                target: target.to_string(),
            });
        }
        Found::Symlink(target.to_string())
    } else if kind.is_file() {
        Found::File(path.to_path_buf())
    } else {
        return Ok(0);
    };
    found.insert(name.to_string(), item);
    Ok(1)
}
