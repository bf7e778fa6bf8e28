//! Delivery ids already seen, kept on disk so a restarted server still refuses a replay.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// How many delivery ids [`ReplayGuard::open`] remembers.
pub const DEFAULT_REPLAY_CAPACITY: usize = 10_000;

/// The longest delivery id accepted (forges send UUIDs: 36 characters).
const MAX_ID_LEN: usize = 256;

/// Remembers the last N delivery ids, one per line in an append-only file that is compacted
/// when it grows past twice the capacity.
///
/// Not synchronized: the server keeps it behind a mutex. One guard per file.
#[derive(Debug)]
pub struct ReplayGuard {
    path: PathBuf,
    file: File,
    order: VecDeque<String>,
    seen: HashSet<String>,
    capacity: usize,
    lines_in_file: usize,
}

impl ReplayGuard {
    /// Opens (or creates, with its parent directories) the file at `path`, remembering the last
    /// [`DEFAULT_REPLAY_CAPACITY`] ids.
    pub fn open(path: &Path) -> io::Result<ReplayGuard> {
        ReplayGuard::with_capacity(path, DEFAULT_REPLAY_CAPACITY)
    }

    /// Like [`ReplayGuard::open`], remembering the last `capacity` ids (at least 1).
    pub fn with_capacity(path: &Path, capacity: usize) -> io::Result<ReplayGuard> {
        let capacity = capacity.max(1);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        let content = match fs::read(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut guard = ReplayGuard {
            path: path.to_path_buf(),
            file: append(path)?,
            order: VecDeque::new(),
            seen: HashSet::new(),
            capacity,
            lines_in_file: 0,
        };
        for line in content.lines().map(str::trim).filter(|l| !l.is_empty()) {
            guard.remember(line);
            guard.lines_in_file += 1;
        }
        if guard.lines_in_file > capacity {
            guard.compact()?;
        }
        Ok(guard)
    }

    /// Records `delivery_id`; `false` when it was seen before (a replay or a redelivery).
    ///
    /// The id is on disk before `true` is returned. An empty id, one longer than 256 bytes or
    /// one with control characters is an `InvalidInput` error.
    pub fn first_time(&mut self, delivery_id: &str) -> io::Result<bool> {
        let id = delivery_id.trim();
        if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a delivery id must be 1 to 256 bytes without control characters",
            ));
        }
        if self.seen.contains(id) {
            return Ok(false);
        }
        self.file.write_all(format!("{id}\n").as_bytes())?;
        self.remember(id);
        self.lines_in_file += 1;
        if self.lines_in_file >= self.capacity.saturating_mul(2) {
            self.compact()?;
        }
        Ok(true)
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn remember(&mut self, id: &str) {
        if self.seen.insert(id.to_string()) {
            self.order.push_back(id.to_string());
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }

    /// Rewrites the file with only the remembered ids (write a temp file, sync, rename).
    fn compact(&mut self) -> io::Result<()> {
        let mut tmp_name = self.path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        {
            let mut f = File::create(&tmp)?;
            let mut text = String::new();
            for id in &self.order {
                text.push_str(id);
                text.push('\n');
            }
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        self.file = append(&self.path)?;
        self.lines_in_file = self.order.len();
        Ok(())
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_and_compacts_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/deliveries");
        let mut g = ReplayGuard::with_capacity(&path, 3).unwrap();
        for i in 0..10 {
            assert!(g.first_time(&format!("id-{i}")).unwrap());
        }
        assert_eq!(g.len(), 3);
        assert!(!g.first_time("id-9").unwrap());
        assert!(g.first_time("id-0").unwrap(), "evicted ids are forgotten");
        let lines = fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 6, "file compacted, has {lines} lines");
        drop(g);
        let mut g = ReplayGuard::with_capacity(&path, 3).unwrap();
        assert_eq!(g.len(), 3);
        assert!(!g.first_time("id-0").unwrap());
        assert!(!g.first_time("id-9").unwrap());
        assert!(g.first_time("id-5").unwrap());
    }

    #[test]
    fn refuses_ids_that_would_corrupt_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = ReplayGuard::open(&dir.path().join("d")).unwrap();
        for bad in ["", "  ", "a\nb", &"x".repeat(300)] {
            let e = g.first_time(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        assert!(g.is_empty());
    }
}
