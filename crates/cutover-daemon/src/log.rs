//! A log file rotated at a size limit, read back by [`tail`]: an instance's (appended to by
//! its supervisor) and an edge's access log.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Rotate the log when it would grow past this.
pub const MAX_LOG_BYTES: u64 = 8 * 1024 * 1024;
/// How many rotated files (`.1`, `.2`) are kept.
const KEEP: u32 = 2;

/// An append-only log file that rotates to `<path>.1`, `<path>.2` at `max_bytes`.
pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
}

impl LogFile {
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<LogFile> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
        })
    }

    /// Appends `bytes`, rotating first if they would not fit. Best effort: a supervisor has
    /// nowhere else to report a failing log, and must keep its instance running regardless.
    pub fn write(&mut self, bytes: &[u8]) {
        if self.size > 0 && self.size + bytes.len() as u64 > self.max_bytes {
            if let Err(e) = self.rotate() {
                let _ = writeln!(self.file, "[cutover] could not rotate the log: {e}");
            }
        }
        if self.file.write_all(bytes).is_ok() {
            self.size += bytes.len() as u64;
        }
    }

    /// Writes one line of the supervisor's own, prefixed `[cutover] `.
    pub fn line(&mut self, message: &str) {
        self.write(format!("[cutover] {message}\n").as_bytes());
    }

    fn rotate(&mut self) -> io::Result<()> {
        for n in (1..KEEP).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                fs::rename(&from, rotated(&self.path, n + 1))?;
            }
        }
        fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// `<path>.<n>`.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The last `lines` lines of the log at `path` and its rotated files, oldest first.
pub fn tail(path: &Path, lines: usize) -> io::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let files = std::iter::once(path.to_path_buf()).chain((1..=KEEP).map(|n| rotated(path, n)));
    for file in files {
        if out.len() >= lines {
            break;
        }
        let bytes = match fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut older: Vec<String> = text
            .lines()
            .rev()
            .take(lines - out.len())
            .map(str::to_owned)
            .collect();
        older.reverse();
        older.append(&mut out);
        out = older;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_keeps_two_and_tail_reads_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/staging/a.log");
        let mut log = LogFile::open(&path, 40).unwrap();
        for i in 0..20 {
            log.write(format!("line {i:02}\n").as_bytes()); // 8 bytes each: 5 per file
        }
        log.line("done");
        assert!(rotated(&path, 1).exists());
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        assert!(fs::metadata(&path).unwrap().len() <= 40);

        let last = tail(&path, 7).unwrap();
        assert_eq!(last.last().unwrap(), "[cutover] done");
        assert_eq!(last.len(), 7);
        assert_eq!(last[0], "line 14");
        // Asking for more than is kept returns what is kept, in order.
        let all = tail(&path, 1000).unwrap();
        assert!(all.windows(2).all(|w| w[0] < w[1] || w[1].starts_with('[')));
        assert_eq!(all.len(), 11);
    }

    #[test]
    fn tail_of_a_missing_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(tail(&dir.path().join("none.log"), 5).unwrap().is_empty());
    }
}
