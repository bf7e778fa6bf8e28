//! The git crate against real repositories made in temp dirs.

use cutover_git::{GitError, Repo, Sha};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A real git repository in a temp dir (`<tmp>/repo`), on branch `main`.
struct Fixture {
    tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        fs::create_dir_all(&root).unwrap();
        let f = Fixture { tmp, root };
        f.git(&["init", "-q", "-b", "main"]);
        f
    }

    /// Plain git, as a user runs it (hooks on).
    fn git(&self, args: &[&str]) -> String {
        git_in(&self.root, args)
    }

    fn write(&self, path: &str, content: &str) {
        let path = self.root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&[
            "-c",
            "user.email=dev@example.com",
            "-c",
            "user.name=Dev",
            "commit",
            "-q",
            "-m",
            message,
        ]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn repo(&self) -> Repo {
        Repo::discover(&self.root).unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn repo_helpers() {
    let f = Fixture::new();
    f.write("cutover.toml", "[app]\nname = \"tasks\"\n");
    f.write("sub/dir/file.txt", "x");
    let sha = f.commit("Add the app\n\nbody");
    let repo = Repo::discover(&f.root.join("sub/dir")).unwrap();
    assert_eq!(
        repo.root.canonicalize().unwrap(),
        f.root.canonicalize().unwrap()
    );
    assert_eq!(repo.resolve("HEAD").unwrap(), sha);
    assert_eq!(repo.resolve("main").unwrap(), sha);
    assert_eq!(repo.resolve(&sha[..7]).unwrap(), sha);
    assert_eq!(repo.resolve(&sha.to_uppercase()).unwrap(), sha);
    for bad in ["nope", "--all", ""] {
        let err = repo.resolve(bad).unwrap_err();
        assert!(matches!(err, GitError::UnknownRev { .. }), "{bad}: {err}");
        assert!(err.to_string().contains("hint:"), "{err}");
    }
    assert_eq!(
        repo.show_file(&sha, "sub/dir/file.txt").unwrap().as_deref(),
        Some("x")
    );
    assert_eq!(repo.show_file(&sha, "absent.txt").unwrap(), None);
    assert!(repo.show_file("nope", "cutover.toml").is_err());
    let info = repo.commit_info("HEAD").unwrap();
    assert_eq!(info.sha, sha);
    assert_eq!(info.author_name, "Dev");
    assert_eq!(info.author_email, "dev@example.com");
    assert_eq!(info.author(), "Dev <dev@example.com>");
    assert_eq!(info.subject, "Add the app");
    assert!((chrono::Utc::now() - info.time).num_minutes().abs() < 5);

    assert!(!repo.is_dirty().unwrap());
    fs::create_dir_all(f.root.join(".cutover")).unwrap();
    fs::write(f.root.join(".cutover/ledger.db"), "x").unwrap();
    assert!(!repo.is_dirty().unwrap(), ".cutover/ is never dirty");
    f.write("sub/dir/file.txt", "changed");
    assert_eq!(repo.dirty_paths().unwrap(), ["sub/dir/file.txt"]);
    let hash = repo.dirty_hash().unwrap();
    assert_eq!(hash.len(), 12);
    f.write("sub/dir/file.txt", "changed again");
    assert_ne!(repo.dirty_hash().unwrap(), hash);

    let elsewhere = tempfile::tempdir().unwrap();
    let err = Repo::discover(elsewhere.path()).unwrap_err();
    assert!(matches!(err, GitError::NotARepo { .. }), "{err}");
    assert!(err.to_string().contains("hint:"), "{err}");
    let err = Repo::discover(&elsewhere.path().join("absent")).unwrap_err();
    assert!(matches!(err, GitError::NotARepo { .. }), "{err}");
}

#[test]
fn a_full_sha_is_required_where_asked_and_a_missing_one_says_fetch() {
    let f = Fixture::new();
    f.write("a.txt", "a");
    let sha = f.commit("first");
    let repo = f.repo();
    assert_eq!(repo.resolve_full(&sha).unwrap(), sha);

    let err = repo.resolve_full("HEAD").unwrap_err();
    assert!(matches!(err, GitError::NotFullSha { .. }), "{err:?}");
    assert!(err.to_string().contains(&sha), "{err}");

    let missing = "0123456789abcdef0123456789abcdef01234567";
    let err = repo.resolve_full(missing).unwrap_err();
    assert!(matches!(err, GitError::UnknownCommit { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(missing) && message.contains("git fetch"),
        "{message}"
    );
}

#[test]
fn ancestry_remote_tips_and_fetch() {
    let upstream = Fixture::new();
    upstream.write("a.txt", "a");
    let first = upstream.commit("first");
    let f = Fixture::new();
    let url = upstream.root.to_str().unwrap();
    let repo = f.repo();

    let tip = repo.remote_tip(url, "main").unwrap().unwrap();
    assert_eq!(tip, first);
    assert_eq!(repo.remote_tip(url, "nope").unwrap(), None);
    let err = repo.remote_tip(&f.path("absent").to_string_lossy(), "main");
    assert!(matches!(err, Err(GitError::Failed { .. })), "{err:?}");

    repo.fetch(url, "+refs/heads/main:refs/cutover/watch/main")
        .unwrap();
    assert_eq!(repo.resolve("refs/cutover/watch/main").unwrap(), first);

    upstream.write("a.txt", "b");
    let second = upstream.commit("second");
    repo.fetch(url, "+refs/heads/main:refs/cutover/watch/main")
        .unwrap();
    assert!(repo.is_ancestor(&first, "refs/cutover/watch/main").unwrap());
    assert!(repo
        .is_ancestor(&second, "refs/cutover/watch/main")
        .unwrap());
    assert!(!repo.is_ancestor(&second, &first).unwrap());
    assert!(!repo.is_ancestor(&first, "refs/heads/absent").unwrap());
}

#[test]
fn clean_checkout_keeps_ignored_caches_and_removes_untracked_files() {
    let f = Fixture::new();
    f.write(".gitignore", "target/\n");
    f.write("src.txt", "one");
    let first = Sha::parse(&f.commit("first")).unwrap();
    f.write("src.txt", "two");
    let second = Sha::parse(&f.commit("second")).unwrap();
    let repo = f.repo();
    let tree = f.path("work/checkout");

    repo.clean_checkout(&tree, &first).unwrap();
    assert_eq!(fs::read_to_string(tree.join("src.txt")).unwrap(), "one");
    fs::create_dir_all(tree.join("target")).unwrap();
    fs::write(tree.join("target/cache"), "kept").unwrap();
    fs::write(tree.join("stray.txt"), "gone").unwrap();
    fs::write(tree.join("src.txt"), "edited").unwrap();

    repo.clean_checkout(&tree, &second).unwrap();
    assert_eq!(fs::read_to_string(tree.join("src.txt")).unwrap(), "two");
    assert_eq!(
        fs::read_to_string(tree.join("target/cache")).unwrap(),
        "kept"
    );
    assert!(!tree.join("stray.txt").exists());
    assert_eq!(git_in(&tree, &["rev-parse", "HEAD"]), second.as_str());
    assert_eq!(f.git(&["rev-parse", "--abbrev-ref", "HEAD"]), "main");

    // A checkout that is broken, or of another repository, is made again.
    fs::remove_file(tree.join(".git")).unwrap();
    repo.clean_checkout(&tree, &first).unwrap();
    assert_eq!(fs::read_to_string(tree.join("src.txt")).unwrap(), "one");
    let other = Fixture::new();
    other.write("other.txt", "other");
    let other_sha = Sha::parse(&other.commit("other")).unwrap();
    other.repo().clean_checkout(&tree, &other_sha).unwrap();
    assert!(tree.join("other.txt").exists());
    assert!(!tree.join("src.txt").exists());
}

/// A hook that appends its name to `marker`.
fn write_hook(dir: &Path, name: &str, marker: &Path) {
    fs::create_dir_all(dir).unwrap();
    let hook = dir.join(name);
    fs::write(
        &hook,
        format!("#!/bin/sh\necho {name} >> '{}'\n", marker.display()),
    )
    .unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn checkouts_do_not_run_repository_hooks() {
    let f = Fixture::new();
    f.write("a.txt", "a");
    let sha = Sha::parse(&f.commit("first")).unwrap();
    let marker = f.path("hook-ran");
    let hooks = f.path("hooks");
    for name in ["post-checkout", "reference-transaction"] {
        write_hook(&f.root.join(".git/hooks"), name, &marker);
        write_hook(&hooks, name, &marker);
    }
    // The hooks work: plain git runs them.
    git_in(&f.root, &["checkout", "-q", "--detach", "main"]);
    assert!(marker.exists(), "the test's hooks run under plain git");
    fs::remove_file(&marker).unwrap();
    f.git(&["config", "core.hooksPath", hooks.to_str().unwrap()]);
    git_in(&f.root, &["checkout", "-q", "main"]);
    assert!(
        marker.exists(),
        "core.hooksPath's hooks run under plain git"
    );
    fs::remove_file(&marker).unwrap();

    let repo = f.repo();
    let tree = f.path("work/checkout");
    repo.clean_checkout(&tree, &sha).unwrap();
    repo.clean_checkout(&tree, &sha).unwrap();
    repo.fetch(
        f.root.to_str().unwrap(),
        "+refs/heads/main:refs/cutover/watch/main",
    )
    .unwrap();
    assert!(
        !marker.exists(),
        "a hook ran: {}",
        fs::read_to_string(&marker).unwrap_or_default()
    );
}
