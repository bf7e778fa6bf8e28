//! Git as cutover runs it: the repository's hooks never run, and `GIT_*` variables of the
//! caller's environment (as git sets them for its hooks) never point it at another repository.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::{git_as, Lab};

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
fn build_does_not_run_repository_hooks() {
    let lab = Lab::new();
    let outside = lab.repo.parent().unwrap();
    let marker = outside.join("hook-ran");
    let hooks = outside.join("hooks");
    write_hook(&lab.repo.join(".git/hooks"), "post-checkout", &marker);
    write_hook(&hooks, "post-checkout", &marker);
    // The hooks work: git run by hand runs them, from .git/hooks and from core.hooksPath.
    lab.git(&["checkout", "-q", "--detach", "main"]);
    assert!(marker.exists(), "git runs .git/hooks/post-checkout");
    fs::remove_file(&marker).unwrap();
    lab.git(&["config", "core.hooksPath", hooks.to_str().unwrap()]);
    lab.git(&["checkout", "-q", "main"]);
    assert!(marker.exists(), "git runs core.hooksPath's post-checkout");
    fs::remove_file(&marker).unwrap();

    // The first build adds the build worktree; the second checks the new commit out in it.
    let v1 = lab.head();
    let run = lab.run(&["build"]).expect(0);
    assert!(run.stdout.starts_with(&format!("lab:{v1} ")), "{run:?}");
    let v2 = lab.commit("second");
    let run = lab.run(&["build"]).expect(0);
    assert!(run.stdout.starts_with(&format!("lab:{v2} ")), "{run:?}");
    assert!(
        !marker.exists(),
        "a repository hook ran during `cutover build`: {}",
        fs::read_to_string(&marker).unwrap_or_default()
    );
}

#[test]
fn a_git_dir_in_the_environment_does_not_redirect_the_build() {
    let lab = Lab::new();
    let head = lab.head();
    // Another repository, with a cutover.toml of its own, that GIT_DIR points at.
    let other = lab.repo.parent().unwrap().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(
        other.join("cutover.toml"),
        "[app]\nname = \"other\"\n\n[build]\nfiles = [\"other.txt\"]\n\n[run]\ncommand = [\"true\"]\n\n[environments.staging]\nlisten = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    fs::write(other.join("other.txt"), "other\n").unwrap();
    let git = |args: &[&str]| git_as("Other", "other@example.com", &other, args);
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "other"]);
    let other_head = git(&["rev-parse", "HEAD"]);
    let other_git_dir = other.join(".git");

    let run = lab
        .run_env(&["build"], &[("GIT_DIR", other_git_dir.to_str().unwrap())])
        .expect(0);
    assert!(run.stdout.starts_with(&format!("lab:{head} ")), "{run:?}");
    assert!(!run.stdout.contains(&other_head), "{run:?}");
    assert_eq!(
        git(&["worktree", "list", "--porcelain"])
            .lines()
            .filter(|l| l.starts_with("worktree "))
            .count(),
        1,
        "no worktree was added to the other repository"
    );
}
