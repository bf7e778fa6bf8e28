//! The content-addressed artifact store: `blobs/sha256/<hex>` (shared, read-only) and
//! `manifests/<app>/<version>.json`.

use crate::error::{io, ArtifactError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A built bundle: what was built, from which commit, and its files.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    pub app: String,
    /// The full commit sha, or `<sha>-dirty-<hash>` for a build of uncommitted changes.
    pub version: String,
    pub commit: String,
    /// `sha256:<hex>` over the sorted (path, digest, executable) list, then the sorted
    /// (path, target) list of symlinks: identical bytes give an identical digest whatever the
    /// version (see [`manifest_digest`]).
    pub digest: String,
    pub created_at: DateTime<Utc>,
    pub files: Vec<FileEntry>,
    /// Symbolic links, kept as links (absent from manifests of bundles without any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symlinks: Vec<SymlinkEntry>,
    /// `cutover.toml` as committed in that version (the working tree's for a dirty build).
    pub config_text: String,
    /// The OCI image built from this version, when its config has `[build] dockerfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageArtifact>,
}

/// An image artifact: built once, tagged `<repository>:<version>`, published by digest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ImageArtifact {
    /// The image name without tag, e.g. "127.0.0.1:5000/tasks-app" (or "tasks-app" when no
    /// registry is configured).
    pub repository: String,
    /// The local image id (`sha256:` of its config).
    pub id: String,
    /// Moving tags it was also given ("latest"); never what gets deployed.
    #[serde(default)]
    pub moving_tags: Vec<String>,
    /// The registry's manifest digest, once published: what deploys pull (`repository@digest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_digest: Option<String>,
}

impl Artifact {
    /// `<app>:<first 12 of the version>`, for messages.
    pub fn short_name(&self) -> String {
        format!("{}:{}", self.app, cutover_git::short(&self.version))
    }
}

/// One file of an artifact.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative, `/`-separated.
    pub path: String,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    pub size: u64,
    pub executable: bool,
}

/// One symbolic link of an artifact, kept as a link (as tar and OCI layers do).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SymlinkEntry {
    /// Relative, `/`-separated.
    pub path: String,
    /// The link's target text, verbatim: absolute, or relative to the link's directory and
    /// then inside the bundle.
    pub target: String,
}

/// The digest of a bundle: sha256 over `path \0 digest \0 x|- \n` lines of its files sorted
/// by path, then `path \0 symlink:target \0 l \n` lines of its symlinks sorted by path. A
/// bundle without symlinks hashes its file lines only, as before symlinks were kept.
pub fn manifest_digest(files: &[FileEntry], symlinks: &[SymlinkEntry]) -> String {
    let mut sorted: Vec<&FileEntry> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut hasher = Sha256::new();
    for f in sorted {
        let exec = if f.executable { "x" } else { "-" };
        hasher.update(format!("{}\0{}\0{exec}\n", f.path, f.digest));
    }
    let mut links: Vec<&SymlinkEntry> = symlinks.iter().collect();
    links.sort_by(|a, b| a.path.cmp(&b.path));
    for l in links {
        hasher.update(format!("{}\0symlink:{}\0l\n", l.path, l.target));
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// Whether the relative target of the symlink at `path` (both inside the bundle, `/`-separated)
/// leads out of the bundle, judged on the text alone. Absolute targets are kept verbatim and
/// never escape.
pub(crate) fn escapes(path: &str, target: &str) -> bool {
    let target = Path::new(target);
    if target.is_absolute() {
        return false;
    }
    let mut depth = Path::new(path).components().count().saturating_sub(1);
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::ParentDir if depth == 0 => return true,
            Component::ParentDir => depth -= 1,
            _ => {}
        }
    }
    false
}

/// A relative path made of plain components only (no `..`, no leading `/`).
fn is_safe_path(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// The artifact store in `<state dir>/artifacts`.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Copies `reader` to `writer` (if any), returning the sha256 hex and byte count.
fn copy_hashing(
    reader: &mut impl Read,
    mut writer: Option<&mut File>,
) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(w) = writer.as_mut() {
            w.write_all(&buf[..n])?;
        }
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// A path component that is safe to use as a file name.
fn check_name(what: &'static str, value: &str) -> Result<(), ArtifactError> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !value.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ArtifactError::BadName {
            what,
            value: value.to_string(),
        })
    }
}

impl ArtifactStore {
    /// Opens (creating it if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<ArtifactStore, ArtifactError> {
        for sub in ["blobs/sha256", "manifests", "tmp"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(io("create", &path))?;
        }
        Ok(ArtifactStore {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        let valid = hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit());
        valid.then(|| self.dir.join("blobs/sha256").join(hex))
    }

    /// Where the manifest of `<app>:<version>` lives.
    pub fn manifest_path(&self, app: &str, version: &str) -> PathBuf {
        self.dir
            .join("manifests")
            .join(app)
            .join(format!("{version}.json"))
    }

    fn temp_path(&self) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()))
    }

    /// Stores the content of `source` as a blob (written to a temp file, then renamed; kept
    /// as is if already present) and returns its digest and size.
    pub(crate) fn put_file(&self, source: &Path) -> Result<(String, u64), ArtifactError> {
        let mut input = File::open(source).map_err(io("read", source))?;
        self.put_reader(&mut input, source, None)
    }

    /// Stores a blob that arrives from elsewhere (an upload), refusing it unless its content
    /// has the digest it claims: a truncated or corrupted upload stores nothing.
    pub fn put_blob(&self, expected: &str, reader: &mut impl Read) -> Result<u64, ArtifactError> {
        if self.blob_path(expected).is_none() {
            return Err(ArtifactError::BadName {
                what: "blob digest",
                value: expected.to_string(),
            });
        }
        let from = Path::new("the upload");
        self.put_reader(reader, from, Some(expected))
            .map(|(_, size)| size)
    }

    fn put_reader(
        &self,
        input: &mut impl Read,
        source: &Path,
        expected: Option<&str>,
    ) -> Result<(String, u64), ArtifactError> {
        let temp = self.temp_path();
        let mut output = File::create(&temp).map_err(io("write", &temp))?;
        let result = copy_hashing(input, Some(&mut output)).map_err(io("copy", source));
        drop(output);
        let (hex, size) = match result {
            Ok(done) => done,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
        };
        let digest = format!("sha256:{hex}");
        if let Some(expected) = expected.filter(|e| *e != digest) {
            let _ = fs::remove_file(&temp);
            return Err(ArtifactError::DigestMismatch {
                expected: expected.to_string(),
                got: digest,
                size,
            });
        }
        let blob = self.dir.join("blobs/sha256").join(&hex);
        if blob.exists() {
            let _ = fs::remove_file(&temp);
        } else {
            fs::set_permissions(&temp, fs::Permissions::from_mode(0o444))
                .map_err(io("set permissions of", &temp))?;
            fs::rename(&temp, &blob).map_err(io("store", &blob))?;
        }
        Ok((digest, size))
    }

    /// Which of `digests` this store does not have (or cannot name).
    /// A stored blob, to read (what a promotion across servers fetches); `None` if the digest
    /// is not a sha256 digest or the blob is not here.
    pub fn open_blob(&self, digest: &str) -> Option<(File, u64)> {
        let path = self.blob_path(digest)?;
        let file = File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        Some((file, len))
    }

    pub fn missing_blobs<'a>(&self, digests: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        digests
            .into_iter()
            .filter(|d| !self.blob_path(d).is_some_and(|p| p.is_file()))
            .map(str::to_string)
            .collect()
    }

    /// Takes in an artifact built elsewhere, whose blobs were uploaded first: every blob must
    /// be here and the manifest's digest must be what its entries hash to, so that what is
    /// deployed is exactly what was built. A version this store already has is kept as it is
    /// when its digest is the same, and refused when it differs.
    pub fn import(&self, artifact: &Artifact) -> Result<(), ArtifactError> {
        check_name("app", &artifact.app)?;
        check_name("version", &artifact.version)?;
        let name = artifact.short_name();
        let corrupt = |what: String| ArtifactError::Corrupt {
            artifact: name.clone(),
            what,
            manifest: self.manifest_path(&artifact.app, &artifact.version),
        };
        let computed = manifest_digest(&artifact.files, &artifact.symlinks);
        if computed != artifact.digest {
            return Err(corrupt(format!(
                "its manifest says {} but its entries hash to {computed}",
                artifact.digest
            )));
        }
        let paths = artifact.files.iter().map(|f| &f.path);
        if let Some(bad) = paths
            .chain(artifact.symlinks.iter().map(|l| &l.path))
            .find(|p| !is_safe_path(p))
        {
            return Err(corrupt(format!("{bad:?} is not a plain relative path")));
        }
        if let Some(link) = artifact
            .symlinks
            .iter()
            .find(|l| escapes(&l.path, &l.target))
        {
            return Err(corrupt(format!(
                "the symlink {:?} leads out of the bundle ({:?})",
                link.path, link.target
            )));
        }
        let missing = self.missing_blobs(artifact.files.iter().map(|f| f.digest.as_str()));
        if !missing.is_empty() {
            return Err(ArtifactError::MissingBlobs {
                artifact: name,
                count: missing.len(),
                first: missing[0].clone(),
            });
        }
        if let Some(have) = self.get(&artifact.app, &artifact.version)? {
            if have.digest == artifact.digest {
                return Ok(());
            }
            return Err(corrupt(format!(
                "this server already has it with the digest {}, not {}",
                have.digest, artifact.digest
            )));
        }
        self.put_manifest(artifact)
    }

    /// Writes the manifest atomically (temp file + rename).
    /// Writes (or rewrites, e.g. to record where it was published) an artifact's manifest.
    pub fn put_manifest(&self, artifact: &Artifact) -> Result<(), ArtifactError> {
        check_name("app", &artifact.app)?;
        check_name("version", &artifact.version)?;
        let path = self.manifest_path(&artifact.app, &artifact.version);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        let json =
            serde_json::to_vec_pretty(artifact).map_err(|source| ArtifactError::BadManifest {
                path: path.clone(),
                source,
            })?;
        let temp = self.temp_path();
        let write = File::create(&temp)
            .and_then(|mut f| f.write_all(&json).and_then(|()| f.sync_all()))
            .map_err(io("write", &temp));
        if let Err(e) = write {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        fs::rename(&temp, &path).map_err(io("write", &path))
    }

    fn read_manifest(path: &Path) -> Result<Artifact, ArtifactError> {
        let bytes = fs::read(path).map_err(io("read", path))?;
        serde_json::from_slice(&bytes).map_err(|source| ArtifactError::BadManifest {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The artifact `<app>:<version>`, if it was built.
    pub fn get(&self, app: &str, version: &str) -> Result<Option<Artifact>, ArtifactError> {
        if check_name("app", app).is_err() || check_name("version", version).is_err() {
            return Ok(None);
        }
        let path = self.manifest_path(app, version);
        if !path.exists() {
            return Ok(None);
        }
        Self::read_manifest(&path).map(Some)
    }

    /// Every artifact of `app`, newest first.
    /// Forgets an artifact (its manifest); its blobs go with the next [`ArtifactStore::collect_garbage`].
    pub fn remove(&self, app: &str, version: &str) -> Result<(), ArtifactError> {
        check_name("app", app)?;
        check_name("version", version)?;
        let path = self.manifest_path(app, version);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Removes blobs no manifest of any app refers to; returns how many bytes it freed.
    pub fn collect_garbage(&self) -> Result<u64, ArtifactError> {
        let mut referenced = std::collections::HashSet::new();
        let manifests = self.dir.join("manifests");
        for app in std::fs::read_dir(&manifests)
            .map_err(io("read", &manifests))?
            .flatten()
        {
            let name = app.file_name().to_string_lossy().to_string();
            for artifact in self.list(&name)? {
                referenced.extend(
                    artifact
                        .files
                        .iter()
                        .map(|f| f.digest.trim_start_matches("sha256:").to_string()),
                );
            }
        }
        let blobs = self.dir.join("blobs/sha256");
        let mut freed = 0;
        for blob in std::fs::read_dir(&blobs)
            .map_err(io("read", &blobs))?
            .flatten()
        {
            let hex = blob.file_name().to_string_lossy().to_string();
            if !referenced.contains(&hex) {
                freed += blob.metadata().map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(blob.path()).map_err(io("remove", &blob.path()))?;
            }
        }
        Ok(freed)
    }

    pub fn list(&self, app: &str) -> Result<Vec<Artifact>, ArtifactError> {
        if check_name("app", app).is_err() {
            return Ok(Vec::new());
        }
        let dir = self.dir.join("manifests").join(app);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("list", &dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(io("list", &dir))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                out.push(Self::read_manifest(&path)?);
            }
        }
        out.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then(a.version.cmp(&b.version))
        });
        Ok(out)
    }

    /// Artifacts of `app` whose version starts with `prefix` (a short sha), newest first.
    pub fn find_by_prefix(&self, app: &str, prefix: &str) -> Result<Vec<Artifact>, ArtifactError> {
        let prefix = prefix.to_ascii_lowercase();
        Ok(self
            .list(app)?
            .into_iter()
            .filter(|a| a.version.starts_with(&prefix))
            .collect())
    }

    /// Copies the files of `artifact` into `dest` (absent or empty), with their exec bits,
    /// verifying every blob's digest on the way, then makes its symlinks. On error `dest` is removed again.
    pub fn unpack(&self, artifact: &Artifact, dest: &Path) -> Result<(), ArtifactError> {
        let non_empty = fs::read_dir(dest)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if non_empty {
            return Err(ArtifactError::DestinationExists {
                path: dest.to_path_buf(),
            });
        }
        fs::create_dir_all(dest).map_err(io("create", dest))?;
        let result = self.unpack_into(artifact, dest);
        if result.is_err() {
            let _ = fs::remove_dir_all(dest);
        }
        result
    }

    fn unpack_into(&self, artifact: &Artifact, dest: &Path) -> Result<(), ArtifactError> {
        let corrupt = |what: String| ArtifactError::Corrupt {
            artifact: artifact.short_name(),
            what,
            manifest: self.manifest_path(&artifact.app, &artifact.version),
        };
        if manifest_digest(&artifact.files, &artifact.symlinks) != artifact.digest {
            return Err(corrupt(format!(
                "its file list does not match its digest {}",
                artifact.digest
            )));
        }
        // Nothing may be written through a link: no entry lies under a symlink's path, and the
        // links are made after every file.
        let links: std::collections::HashSet<&Path> = artifact
            .symlinks
            .iter()
            .map(|l| Path::new(&l.path))
            .collect();
        let paths = artifact.files.iter().map(|f| &f.path);
        for path in paths.chain(artifact.symlinks.iter().map(|l| &l.path)) {
            if !is_safe_path(path) {
                return Err(corrupt(format!("unsafe path {path:?}")));
            }
            if let Some(link) = Path::new(path)
                .ancestors()
                .skip(1)
                .find(|a| links.contains(a))
            {
                return Err(corrupt(format!(
                    "{path} lies under the symlink {}",
                    link.display()
                )));
            }
        }
        for file in &artifact.files {
            let relative = Path::new(&file.path);
            let blob = self.blob_path(&file.digest).ok_or_else(|| {
                corrupt(format!("bad digest {:?} for {}", file.digest, file.path))
            })?;
            let target = dest.join(relative);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(io("create", parent))?;
            }
            let mut input = File::open(&blob)
                .map_err(|e| corrupt(format!("blob of {} is unreadable: {e}", file.path)))?;
            let mut output = File::create(&target).map_err(io("write", &target))?;
            let (hex, size) =
                copy_hashing(&mut input, Some(&mut output)).map_err(io("write", &target))?;
            if format!("sha256:{hex}") != file.digest || size != file.size {
                return Err(corrupt(format!(
                    "blob of {} has digest sha256:{hex} ({size} bytes), expected {} ({} bytes)",
                    file.path, file.digest, file.size
                )));
            }
            let mode = if file.executable { 0o755 } else { 0o644 };
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .map_err(io("set permissions of", &target))?;
        }
        for link in &artifact.symlinks {
            if escapes(&link.path, &link.target) {
                return Err(corrupt(format!(
                    "the symlink {} -> {} leads out of the bundle",
                    link.path, link.target
                )));
            }
            let path = dest.join(&link.path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io("create", parent))?;
            }
            std::os::unix::fs::symlink(&link.target, &path)
                .map_err(io("create the symlink", &path))?;
        }
        Ok(())
    }
}
