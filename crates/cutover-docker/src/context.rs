//! The build context: a tar of a directory, minus `.git`, `.cutover` and what `.dockerignore`
//! excludes.
//!
//! `.dockerignore` support is the common subset: one glob per line (`*`, `?`, `[…]`, `**`),
//! `#` comments, a leading `/` or `./` ignored, a pattern that matches a directory excludes all
//! under it, and `!pattern` re-includes (last match wins, as in Docker). The Dockerfile and
//! `.dockerignore` themselves are always sent.

use std::path::{Path, PathBuf};

use glob::{MatchOptions, Pattern};

use crate::DockerError;

/// Directories never sent, whatever `.dockerignore` says.
const ALWAYS_SKIPPED: &[&str] = &[".git", ".cutover"];

struct Rule {
    pattern: Pattern,
    include: bool,
}

pub(crate) struct Ignore {
    rules: Vec<Rule>,
}

impl Ignore {
    pub(crate) fn parse(text: &str) -> Ignore {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (include, pat) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let pat = pat.trim_start_matches("./").trim_start_matches('/');
            let pat = pat.trim_end_matches('/');
            if pat.is_empty() {
                continue;
            }
            if let Ok(pattern) = Pattern::new(pat) {
                rules.push(Rule { pattern, include });
            }
        }
        Ignore { rules }
    }

    /// Whether `rel` (a `/`-separated path relative to the context) is excluded: the last rule
    /// matching it or one of its parents decides.
    pub(crate) fn excluded(&self, rel: &str) -> bool {
        let opts = MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        let mut excluded = false;
        for rule in &self.rules {
            let mut prefix = String::new();
            let mut hit = false;
            for part in rel.split('/') {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                if rule.pattern.matches_with(&prefix, opts) {
                    hit = true;
                    break;
                }
            }
            if hit {
                excluded = !rule.include;
            }
        }
        excluded
    }
}

/// Packs `dir` into an uncompressed tar. `dockerfile` (relative) is always included.
pub(crate) fn pack(dir: &Path, dockerfile: &str) -> Result<Vec<u8>, DockerError> {
    let err = |path: &Path, e: std::io::Error| DockerError::Context {
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    let meta = std::fs::metadata(dir).map_err(|e| err(dir, e))?;
    if !meta.is_dir() {
        return Err(DockerError::Context {
            path: dir.display().to_string(),
            detail: "is not a directory".into(),
        });
    }
    let dockerfile_path = dir.join(dockerfile);
    if !dockerfile_path.is_file() {
        return Err(DockerError::Context {
            path: dir.display().to_string(),
            detail: format!(
                "has no {dockerfile}\nhint: set [build] dockerfile to the Dockerfile's path relative to the context"
            ),
        });
    }
    let ignore = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(text) => Ignore::parse(&text),
        Err(_) => Ignore::parse(""),
    };
    let keep = |rel: &str| rel == dockerfile.trim_start_matches("./") || rel == ".dockerignore";

    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let abs = dir.join(&rel_dir);
        let mut entries: Vec<_> = std::fs::read_dir(&abs)
            .map_err(|e| err(&abs, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(&abs, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let rel = rel_dir.join(&name);
            let rel_str = rel.to_string_lossy().replace('\\', "/");
            if rel_dir.as_os_str().is_empty()
                && ALWAYS_SKIPPED.iter().any(|s| name.as_os_str() == *s)
            {
                continue;
            }
            if ignore.excluded(&rel_str) && !keep(&rel_str) {
                // A re-included path under an excluded dir is rare; Docker walks into it, we
                // do the same only when some `!` rule exists.
                let ft = entry.file_type().map_err(|e| err(&entry.path(), e))?;
                if ft.is_dir() && ignore.rules.iter().any(|r| r.include) {
                    stack.push(rel);
                }
                continue;
            }
            let path = entry.path();
            let ft = entry.file_type().map_err(|e| err(&path, e))?;
            if ft.is_dir() {
                builder.append_dir(&rel, &path).map_err(|e| err(&path, e))?;
                stack.push(rel);
            } else {
                builder
                    .append_path_with_name(&path, &rel)
                    .map_err(|e| err(&path, e))?;
            }
        }
    }
    builder.into_inner().map_err(|e| err(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_globs_dirs_and_negation() {
        let ig = Ignore::parse("# comment\ntarget\n*.log\n/secret.txt\n!keep.log\ndocs/**/*.md\n");
        assert!(ig.excluded("target"));
        assert!(ig.excluded("target/release/app"));
        assert!(ig.excluded("a.log"));
        assert!(!ig.excluded("keep.log"));
        assert!(ig.excluded("secret.txt"));
        assert!(!ig.excluded("src/a.log"), "`*` does not cross `/`");
        assert!(ig.excluded("docs/x/y.md"));
        assert!(!ig.excluded("src/main.rs"));
    }

    #[test]
    fn pack_skips_git_cutover_and_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(d.join(".dockerignore"), "*.tmp\nDockerfile\n").unwrap();
        std::fs::create_dir_all(d.join(".git/objects")).unwrap();
        std::fs::write(d.join(".git/HEAD"), "x").unwrap();
        std::fs::create_dir_all(d.join(".cutover")).unwrap();
        std::fs::write(d.join(".cutover/ledger.db"), "x").unwrap();
        std::fs::create_dir_all(d.join("bin")).unwrap();
        std::fs::write(d.join("bin/app"), "x").unwrap();
        std::fs::write(d.join("junk.tmp"), "x").unwrap();
        let tar = pack(d, "Dockerfile").unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, [".dockerignore", "Dockerfile", "bin", "bin/app"]);
    }

    #[test]
    fn pack_names_a_missing_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        let e = pack(dir.path(), "Dockerfile").unwrap_err().to_string();
        assert!(e.contains("has no Dockerfile"), "{e}");
    }
}
