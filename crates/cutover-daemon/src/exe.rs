//! Which file a process runs, and whether the file at the path it was started from is still
//! that one: how the edge and the server tell that the cutover binary was replaced on disk (an
//! installer writes the new binary beside the old one and renames it over; the running process
//! keeps the old file, which no path names any more).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A file as the kernel knows it: (device, inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The file at `path` now (symlinks followed); `None` when there is none.
    pub fn of(path: &Path) -> Option<FileId> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// The file this process runs, whatever became of the path it was started from.
    pub fn running() -> Option<FileId> {
        FileId::of(Path::new("/proc/self/exe"))
    }
}

/// This process's executable as it started: the path it was started from and the file it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exe {
    pub path: PathBuf,
    pub file: FileId,
}

impl Exe {
    /// Whether the path now holds another file than the one this process runs, or none.
    pub fn replaced(&self) -> bool {
        FileId::of(&self.path) != Some(self.file)
    }
}

static STARTED: OnceLock<Option<Exe>> = OnceLock::new();

/// This process's executable, recorded at the first call: a long-lived role calls it first
/// thing, before anyone could replace the binary. `None` when it cannot be known (no `/proc`).
pub fn started_exe() -> Option<&'static Exe> {
    STARTED
        .get_or_init(|| {
            let file = FileId::running()?;
            let path = std::env::current_exe().ok()?;
            Some(Exe { path, file })
        })
        .as_ref()
}

/// Whether `path` holds the very file this process runs (false when either is unknown).
pub fn runs(path: &Path) -> bool {
    FileId::running().is_some_and(|me| FileId::of(path) == Some(me))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_renamed_over_the_path_is_a_replacement_and_a_removed_one_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cutover");
        std::fs::write(&path, "old").unwrap();
        let exe = Exe {
            path: path.clone(),
            file: FileId::of(&path).unwrap(),
        };
        assert!(!exe.replaced());
        // Rewritten in place: the same file.
        std::fs::write(&path, "old, patched").unwrap();
        assert!(!exe.replaced());
        // Written beside it and renamed over it, as an installer does.
        let beside = dir.path().join(".cutover.new");
        std::fs::write(&beside, "new").unwrap();
        std::fs::rename(&beside, &path).unwrap();
        assert!(exe.replaced());
        std::fs::remove_file(&path).unwrap();
        assert!(exe.replaced());
    }

    #[test]
    fn this_process_runs_its_own_executable() {
        let exe = started_exe().expect("/proc/self/exe");
        assert!(!exe.replaced());
        assert!(runs(&exe.path));
        assert!(!runs(Path::new("/")));
    }
}
