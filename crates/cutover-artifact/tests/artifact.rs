use cutover_artifact::*;
use cutover_git::Repo;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

/// A real git repository in a temp dir, its state dir at `.cutover/`.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

fn config(command: &str, files: &str) -> String {
    format!(
        "[app]\nname = \"tasks\"\n\n[build]\ncommand = {command:?}\nfiles = {files}\n\n[run]\ncommand = [\"python3\", \"serve.py\"]\n\n[environments.staging]\nlisten = \"127.0.0.1:8001\"\n"
    )
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        fs::create_dir_all(&root).unwrap();
        let f = Fixture { _tmp: tmp, root };
        f.git(&["init", "-q", "-b", "main"]);
        f
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(&self.root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn write(&self, path: &str, content: &str) {
        let path = self.root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn symlink(&self, path: &str, target: &str) {
        let path = self.root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, path).unwrap();
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

    fn state(&self) -> PathBuf {
        self.root.join(".cutover")
    }

    fn repo(&self) -> Repo {
        Repo::discover(&self.root).unwrap()
    }

    fn store(&self) -> ArtifactStore {
        ArtifactStore::open(&self.state().join("artifacts")).unwrap()
    }

    fn build(
        &self,
        rev: &str,
        allow_dirty: bool,
    ) -> (Result<Artifact, ArtifactError>, Vec<BuildEvent>) {
        let repo = self.repo();
        let store = self.store();
        let work_dir = self.state().join("build");
        let mut events = Vec::new();
        let result = build(
            BuildRequest {
                repo: &repo,
                store: &store,
                work_dir: &work_dir,
                rev,
                allow_dirty,
                image_builder: None,
            },
            &mut |e| events.push(e),
        );
        (result, events)
    }

    fn unpack(&self, artifact: &Artifact) -> PathBuf {
        let dest = self
            ._tmp
            .path()
            .join(format!("unpacked-{}", &artifact.version[..12]));
        self.store().unpack(artifact, &dest).unwrap();
        dest
    }
}

fn output_lines(events: &[BuildEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Output(line) => Some(line.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn build_then_reuse_without_running_the_command_again() {
    let f = Fixture::new();
    let counter = f._tmp.path().join("counter");
    let command = format!(
        "echo ran >> {}; echo hello; mkdir -p dist; echo $CUTOVER_VERSION > dist/version.txt",
        counter.display()
    );
    f.write("cutover.toml", &config(&command, r#"["serve.py", "dist"]"#));
    f.write("serve.py", "print('hi')\n");
    let sha = f.commit("first");

    let (artifact, events) = f.build("HEAD", false);
    let artifact = artifact.unwrap();
    assert_eq!(artifact.version, sha);
    assert_eq!(artifact.commit, sha);
    assert_eq!(artifact.app, "tasks");
    assert!(artifact.digest.starts_with("sha256:"));
    assert!(artifact.config_text.contains("echo hello"));
    assert!(matches!(&events[0], BuildEvent::Started { version } if *version == sha));
    assert_eq!(output_lines(&events), ["hello"]);
    assert!(matches!(
        events[events.len() - 2],
        BuildEvent::Collected { files: 2, .. }
    ));
    assert!(matches!(events.last(), Some(BuildEvent::Stored { .. })));
    let paths: Vec<&str> = artifact.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["dist/version.txt", "serve.py"]);
    assert_eq!(fs::read_to_string(&counter).unwrap().lines().count(), 1);

    let (again, events) = f.build(&sha[..8], false);
    assert_eq!(again.unwrap(), artifact);
    assert!(matches!(&events[..], [BuildEvent::Reused { .. }]));
    assert_eq!(fs::read_to_string(&counter).unwrap().lines().count(), 1);

    let dest = f.unpack(&artifact);
    assert_eq!(
        fs::read_to_string(dest.join("dist/version.txt"))
            .unwrap()
            .trim(),
        sha
    );
    // The state dir never makes the tree dirty.
    assert!(!f.repo().is_dirty().unwrap());
}

#[test]
fn failed_build_command_shows_its_output() {
    let f = Fixture::new();
    f.write(
        "cutover.toml",
        &config("echo step one; echo oops >&2; exit 7", r#"["serve.py"]"#),
    );
    f.write("serve.py", "x");
    f.commit("first");
    let (result, events) = f.build("HEAD", false);
    let err = result.unwrap_err();
    assert!(matches!(err, ArtifactError::BuildFailed { .. }));
    let shown = err.to_string();
    assert!(shown.contains("exit status: 7"), "{shown}");
    assert!(
        shown.contains("step one") && shown.contains("oops"),
        "{shown}"
    );
    assert!(output_lines(&events).contains(&"oops".to_string()));
    assert!(f.store().list("tasks").unwrap().is_empty());
}

#[test]
fn failed_build_keeps_only_the_last_20_lines() {
    let f = Fixture::new();
    f.write(
        "cutover.toml",
        &config(
            "for i in $(seq 1 30); do echo line$i; done; false",
            r#"["serve.py"]"#,
        ),
    );
    f.write("serve.py", "x");
    f.commit("first");
    let ArtifactError::BuildFailed { lines, .. } = f.build("HEAD", false).0.unwrap_err() else {
        panic!("expected BuildFailed");
    };
    assert_eq!(lines.len(), 20);
    assert_eq!(lines[0], "line11");
    assert_eq!(lines[19], "line30");
}

#[test]
fn a_pattern_matching_nothing_is_named() {
    let f = Fixture::new();
    f.write(
        "cutover.toml",
        &config("true", r#"["serve.py", "static/*.js"]"#),
    );
    f.write("serve.py", "x");
    f.commit("first");
    let err = f.build("HEAD", false).0.unwrap_err();
    assert!(
        matches!(&err, ArtifactError::NoMatch { pattern } if pattern == "static/*.js"),
        "{err}"
    );
    assert!(
        err.to_string().contains("\"static/*.js\" matches nothing"),
        "{err}"
    );

    let f2 = Fixture::new();
    f2.write("cutover.toml", &config("true", r#"["../etc/passwd"]"#));
    f2.commit("first");
    assert!(matches!(
        f2.build("HEAD", false).0.unwrap_err(),
        ArtifactError::BadPattern { .. }
    ));
}

#[test]
fn dirty_tree_is_refused_then_allowed_with_a_dirty_tag() {
    let f = Fixture::new();
    f.write(
        "cutover.toml",
        &config("true", r#"["serve.py", "extra.txt"]"#),
    );
    f.write("serve.py", "committed");
    f.write("extra.txt", "committed");
    let first = f.commit("first");
    f.write("serve.py", "committed v2");
    let sha = f.commit("second");
    f.write("serve.py", "work in progress");
    f.write("new-file.txt", "untracked");

    let err = f.build("HEAD", false).0.unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, ArtifactError::Dirty { .. }));
    assert!(
        shown.contains("uncommitted changes") && shown.contains("serve.py"),
        "{shown}"
    );
    assert!(
        shown.contains("new-file.txt") && shown.contains("--allow-dirty"),
        "{shown}"
    );

    let artifact = f.build("HEAD", true).0.unwrap();
    let prefix = format!("{sha}-dirty-");
    assert!(
        artifact.version.starts_with(&prefix),
        "{}",
        artifact.version
    );
    let hash = &artifact.version[prefix.len()..];
    assert_eq!(hash.len(), 12);
    assert_eq!(hash, f.repo().dirty_hash().unwrap());
    assert_eq!(artifact.commit, sha);
    let dest = f.unpack(&artifact);
    assert_eq!(
        fs::read_to_string(dest.join("serve.py")).unwrap(),
        "work in progress"
    );

    // The same dirty state is the same artifact; another state is another one.
    assert!(matches!(
        f.build("HEAD", true).1[..],
        [BuildEvent::Reused { .. }]
    ));
    f.write("serve.py", "more work");
    assert_ne!(f.build("HEAD", true).0.unwrap().version, artifact.version);

    // A rev other than HEAD is never dirty.
    let old = f.build(&first, false).0.unwrap();
    assert_eq!(old.version, first);
    assert_eq!(
        fs::read_to_string(f.unpack(&old).join("serve.py")).unwrap(),
        "committed"
    );
}

#[test]
fn more_than_five_dirty_paths_are_counted() {
    let f = Fixture::new();
    f.write("cutover.toml", &config("true", r#"["cutover.toml"]"#));
    f.commit("first");
    for i in 0..7 {
        f.write(&format!("f{i}.txt"), "x");
    }
    let ArtifactError::Dirty { paths, more } = f.build("HEAD", false).0.unwrap_err() else {
        panic!("expected Dirty");
    };
    assert_eq!((paths.len(), more), (5, 2));
}

#[test]
fn an_older_commit_builds_with_its_own_files_and_config() {
    let f = Fixture::new();
    f.write(
        "cutover.toml",
        &config("echo v1 > out.txt", r#"["out.txt", "serve.py"]"#),
    );
    f.write("serve.py", "serve v1");
    let first = f.commit("v1");
    f.write(
        "cutover.toml",
        &config("echo v2 > out.txt", r#"["out.txt", "serve.py"]"#),
    );
    f.write("serve.py", "serve v2");
    let second = f.commit("v2");

    let old = f.build(&first, false).0.unwrap();
    assert!(old.config_text.contains("echo v1"));
    let dest = f.unpack(&old);
    assert_eq!(fs::read_to_string(dest.join("out.txt")).unwrap(), "v1\n");
    assert_eq!(
        fs::read_to_string(dest.join("serve.py")).unwrap(),
        "serve v1"
    );

    // The worktree is reused and moved to the newer commit.
    let new = f.build(&second, false).0.unwrap();
    let dest = f.unpack(&new);
    assert_eq!(fs::read_to_string(dest.join("out.txt")).unwrap(), "v2\n");
    assert_eq!(
        fs::read_to_string(dest.join("serve.py")).unwrap(),
        "serve v2"
    );
    assert_eq!(f.store().list("tasks").unwrap().len(), 2);
}

#[test]
fn ignored_build_caches_survive_between_builds_untracked_files_do_not() {
    let f = Fixture::new();
    let command =
        "if [ -f cache/x ]; then echo warm; else echo cold; fi; mkdir -p cache; touch cache/x; \
                   if [ -f stray.txt ]; then echo stray; fi; touch stray.txt";
    f.write(".gitignore", "cache/\n");
    f.write("cutover.toml", &config(command, r#"["serve.py"]"#));
    f.write("serve.py", "1");
    f.commit("first");
    assert_eq!(output_lines(&f.build("HEAD", false).1), ["cold"]);
    f.write("serve.py", "2");
    f.commit("second");
    assert_eq!(output_lines(&f.build("HEAD", false).1), ["warm"]);
}

#[test]
fn unpack_restores_content_and_exec_bit() {
    let f = Fixture::new();
    f.write("cutover.toml", &config("true", r#"["bin", "serve.py"]"#));
    f.write("serve.py", "print(1)\n");
    f.write("bin/start.sh", "#!/bin/sh\necho start\n");
    fs::set_permissions(
        f.root.join("bin/start.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    f.commit("first");
    let artifact = f.build("HEAD", false).0.unwrap();
    let script = artifact
        .files
        .iter()
        .find(|e| e.path == "bin/start.sh")
        .unwrap();
    assert!(script.executable);
    assert_eq!(script.size, 21);

    let dest = f.unpack(&artifact);
    assert_eq!(
        fs::read_to_string(dest.join("serve.py")).unwrap(),
        "print(1)\n"
    );
    let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().permissions().mode();
    assert_ne!(mode("bin/start.sh") & 0o111, 0);
    assert_eq!(mode("serve.py") & 0o111, 0);
    let out = Command::new(dest.join("bin/start.sh")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "start\n");

    // Not into a directory that has files in it.
    let err = f.store().unpack(&artifact, &dest).unwrap_err();
    assert!(
        matches!(err, ArtifactError::DestinationExists { .. }),
        "{err}"
    );
}

#[test]
fn identical_content_in_two_commits_has_one_digest() {
    let f = Fixture::new();
    f.write("cutover.toml", &config("true", r#"["serve.py"]"#));
    f.write("serve.py", "same");
    f.write("README.md", "one");
    let first = f.commit("first");
    f.write("README.md", "two");
    let second = f.commit("second");
    let a = f.build(&first, false).0.unwrap();
    let b = f.build(&second, false).0.unwrap();
    assert_ne!(a.version, b.version);
    assert_eq!(a.digest, b.digest);
    assert_eq!(manifest_digest(&a.files, &a.symlinks), a.digest);
}

#[test]
fn tampered_blob_is_detected_at_unpack() {
    let f = Fixture::new();
    f.write("cutover.toml", &config("true", r#"["serve.py"]"#));
    f.write("serve.py", "genuine");
    f.commit("first");
    let artifact = f.build("HEAD", false).0.unwrap();
    let hex = artifact.files[0].digest.strip_prefix("sha256:").unwrap();
    let blob = f.state().join("artifacts/blobs/sha256").join(hex);
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&blob, "evil!!!").unwrap();

    let dest = f._tmp.path().join("tampered");
    let err = f.store().unpack(&artifact, &dest).unwrap_err();
    assert!(matches!(err, ArtifactError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("serve.py"), "{err}");
    assert!(!dest.exists(), "a failed unpack leaves nothing behind");

    // A manifest whose file list was edited is refused too.
    let mut edited = artifact.clone();
    edited.files[0].executable = true;
    assert!(matches!(
        f.store()
            .unpack(&edited, &f._tmp.path().join("edited"))
            .unwrap_err(),
        ArtifactError::Corrupt { .. }
    ));
}

#[test]
fn store_lookups() {
    let f = Fixture::new();
    f.write("cutover.toml", &config("true", r#"["serve.py"]"#));
    f.write("serve.py", "1");
    let first = f.commit("first");
    f.write("serve.py", "2");
    let second = f.commit("second");
    f.build(&first, false).0.unwrap();
    f.build(&second, false).0.unwrap();
    let store = f.store();
    assert_eq!(store.get("tasks", &first).unwrap().unwrap().version, first);
    assert!(store.get("tasks", "0000").unwrap().is_none());
    assert!(store.get("tasks", "../../etc").unwrap().is_none());
    assert!(store.get("other", &first).unwrap().is_none());
    let found = store.find_by_prefix("tasks", &second[..7]).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].version, second);
    let all = store.list("tasks").unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].version, second, "newest first");
    assert!(store.list("nobody").unwrap().is_empty());
}

#[test]
fn commit_without_config_or_with_a_bad_one() {
    let f = Fixture::new();
    f.write("serve.py", "x");
    f.commit("no config");
    let err = f.build("HEAD", false).0.unwrap_err();
    assert!(matches!(err, ArtifactError::NoConfig { .. }), "{err}");
    assert!(err.to_string().contains("cutover init"), "{err}");

    f.write("cutover.toml", "[app]\nname = \"Bad Name\"\n");
    let sha = f.commit("bad config");
    let err = f.build("HEAD", false).0.unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("{}:cutover.toml:2:8: [app] name", &sha[..12])),
        "{shown}"
    );
}

/// A virtualenv-like tree: a directory symlink, an absolute link out of the tree, a library
/// version link, and a link back up that would loop if followed.
fn fake_venv(f: &Fixture) {
    f.write(".venv/lib/python3/site-packages/app.py", "print('app')\n");
    f.write(".venv/lib/libfoo.so.1", "ELF");
    f.symlink(".venv/lib/libfoo.so", "libfoo.so.1");
    f.symlink(".venv/lib64", "lib");
    f.symlink(".venv/bin/python", "/usr/bin/python3");
    f.symlink(".venv/lib/python3/up", "..");
}

#[test]
fn bundle_keeps_symlinks_as_symlinks() {
    let f = Fixture::new();
    f.write(
        "cutover.toml",
        &config("true", r#"[".venv/**", "serve.py"]"#),
    );
    f.write("serve.py", "print(1)\n");
    fake_venv(&f);
    f.commit("a venv");

    let (artifact, events) = f.build("HEAD", false);
    let artifact = artifact.unwrap();
    // The directory behind `lib64` and `up` is in the bundle once, under its own name.
    let files: Vec<&str> = artifact.files.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        files,
        [
            ".venv/lib/libfoo.so.1",
            ".venv/lib/python3/site-packages/app.py",
            "serve.py"
        ]
    );
    let links: Vec<(&str, &str)> = artifact
        .symlinks
        .iter()
        .map(|l| (l.path.as_str(), l.target.as_str()))
        .collect();
    assert_eq!(
        links,
        [
            (".venv/bin/python", "/usr/bin/python3"),
            (".venv/lib/libfoo.so", "libfoo.so.1"),
            (".venv/lib/python3/up", ".."),
            (".venv/lib64", "lib"),
        ]
    );
    assert!(matches!(
        events[events.len() - 2],
        BuildEvent::Collected { files: 7, .. }
    ));
    // The digest covers the links and their targets.
    assert_eq!(
        manifest_digest(&artifact.files, &artifact.symlinks),
        artifact.digest
    );
    assert_ne!(manifest_digest(&artifact.files, &[]), artifact.digest);
    let manifest = fs::read_to_string(f.store().manifest_path("tasks", &artifact.version)).unwrap();
    assert!(
        manifest.contains("\"target\": \"/usr/bin/python3\""),
        "{manifest}"
    );
    assert_eq!(
        f.store().get("tasks", &artifact.version).unwrap().unwrap(),
        artifact
    );

    let dest = f.unpack(&artifact);
    let link = |p: &str| fs::read_link(dest.join(p)).unwrap();
    assert_eq!(link(".venv/lib64"), PathBuf::from("lib"));
    assert_eq!(link(".venv/bin/python"), PathBuf::from("/usr/bin/python3"));
    assert_eq!(link(".venv/lib/libfoo.so"), PathBuf::from("libfoo.so.1"));
    assert_eq!(
        fs::read_to_string(dest.join(".venv/lib64/python3/site-packages/app.py")).unwrap(),
        "print('app')\n"
    );
    assert_eq!(
        fs::read_to_string(dest.join(".venv/lib/libfoo.so")).unwrap(),
        "ELF"
    );
    assert!(fs::symlink_metadata(dest.join(".venv/lib"))
        .unwrap()
        .file_type()
        .is_dir());

    // A manifest whose link was redirected is refused at unpack.
    let mut edited = artifact.clone();
    edited.symlinks[0].target = "/bin/sh".to_string();
    let err = f
        .store()
        .unpack(&edited, &f._tmp.path().join("edited"))
        .unwrap_err();
    assert!(matches!(err, ArtifactError::Corrupt { .. }), "{err}");
    // So is one that would write a file through a link, even with a matching digest.
    let mut through = artifact.clone();
    through.files[1].path = ".venv/lib64/python3/site-packages/app.py".to_string();
    through.digest = manifest_digest(&through.files, &through.symlinks);
    let err = f
        .store()
        .unpack(&through, &f._tmp.path().join("through"))
        .unwrap_err();
    assert!(
        err.to_string().contains("under the symlink .venv/lib64"),
        "{err}"
    );

    // Naming the link itself, or the directory holding it, keeps it a link too.
    f.write(
        "cutover.toml",
        &config("true", r#"[".venv/lib64", ".venv/bin"]"#),
    );
    f.commit("only the links");
    let only = f.build("HEAD", false).0.unwrap();
    assert!(only.files.is_empty());
    let links: Vec<&str> = only.symlinks.iter().map(|l| l.path.as_str()).collect();
    assert_eq!(links, [".venv/bin/python", ".venv/lib64"]);
}

#[test]
fn symlink_escaping_the_bundle_is_refused_by_name() {
    let f = Fixture::new();
    f.write("cutover.toml", &config("true", r#"[".venv"]"#));
    fake_venv(&f);
    f.symlink(".venv/lib/shared", "../../../common/lib");
    f.commit("a venv linking out");
    let err = f.build("HEAD", false).0.unwrap_err();
    assert!(matches!(err, ArtifactError::SymlinkEscapes { .. }), "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains(
            "\".venv/lib/shared\" is a symlink to \"../../../common/lib\", outside the bundle"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("hint: ") && shown.contains("absolute target"),
        "{shown}"
    );
    assert!(f.store().list("tasks").unwrap().is_empty());

    // A pattern that goes through a directory link is named with the link.
    let f = Fixture::new();
    f.write(
        "cutover.toml",
        &config("true", r#"[".venv/lib64/python3/**"]"#),
    );
    fake_venv(&f);
    f.commit("a pattern through a link");
    let err = f.build("HEAD", false).0.unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("goes through the symlink \".venv/lib64\"") && shown.contains("hint: "),
        "{shown}"
    );
}

#[test]
fn bundle_without_symlinks_keeps_its_digest() {
    let f = Fixture::new();
    f.write("cutover.toml", &config("true", r#"["bin", "*.py"]"#));
    f.write("serve.py", "print(1)\n");
    f.write("bin/start.sh", "#!/bin/sh\necho start\n");
    fs::set_permissions(
        f.root.join("bin/start.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    f.commit("first");
    let artifact = f.build("HEAD", false).0.unwrap();
    assert!(artifact.symlinks.is_empty());
    // sha256 over "bin/start.sh\0sha256:<content>\0x\n" "serve.py\0sha256:<content>\0-\n", the
    // digest these files had before symlinks were kept.
    assert_eq!(
        artifact.digest,
        "sha256:eded1cb128a8e6131439c316691dd0f02d80cd7e5451f2dc8dbfee704425c36c"
    );
    let manifest = fs::read_to_string(f.store().manifest_path("tasks", &artifact.version)).unwrap();
    assert!(!manifest.contains("symlinks"), "{manifest}");
}

/// Issue 10 (artifacts shipped by digest): another store takes a bundle blob by blob, only the
/// blobs it lacks, each verified against its digest on arrival, and then its manifest, which
/// must hash to its digest with every blob present. What it unpacks is what was built.
#[test]
fn a_bundle_shipped_blob_by_blob_arrives_whole_or_not_at_all() {
    let f = Fixture::new();
    f.write("cutover.toml", &config("true", r#"["bin", "serve.py"]"#));
    f.write("serve.py", "print(1)\n");
    f.write("bin/start.sh", "#!/bin/sh\necho start\n");
    f.symlink("bin/run", "start.sh");
    f.commit("first");
    let artifact = f.build("HEAD", false).0.unwrap();
    let source = f.store();
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        fs::read(source.dir().join("blobs/sha256").join(hex)).unwrap()
    };
    let there = tempfile::tempdir().unwrap();
    let target = ArtifactStore::open(there.path()).unwrap();

    // The manifest first: refused, nothing is there yet.
    let err = target.import(&artifact).unwrap_err();
    assert!(
        matches!(err, ArtifactError::MissingBlobs { count: 2, .. }),
        "{err}"
    );
    assert!(target.get("tasks", &artifact.version).unwrap().is_none());

    // A truncated blob and a corrupted one are refused and store nothing.
    let first = &artifact.files[0];
    let whole = blob(&first.digest);
    let cut = &whole[..whole.len() - 1];
    let err = target.put_blob(&first.digest, &mut &cut[..]).unwrap_err();
    assert!(matches!(err, ArtifactError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&first.digest), "{err}");
    let mut bad = whole.clone();
    bad[0] ^= 1;
    assert!(target.put_blob(&first.digest, &mut &bad[..]).is_err());
    assert!(target
        .put_blob("sha256:../../etc", &mut &whole[..])
        .is_err());
    let wanted: Vec<&str> = artifact.files.iter().map(|e| e.digest.as_str()).collect();
    assert_eq!(target.missing_blobs(wanted.iter().copied()).len(), 2);

    // The right bytes: stored; only what is missing is asked for.
    target.put_blob(&first.digest, &mut &whole[..]).unwrap();
    assert_eq!(
        target.missing_blobs(wanted.iter().copied()),
        vec![artifact.files[1].digest.clone()]
    );
    let second = &artifact.files[1];
    target
        .put_blob(&second.digest, &mut &blob(&second.digest)[..])
        .unwrap();

    // A manifest whose entries do not hash to its digest, or that writes outside the bundle.
    let mut lying = artifact.clone();
    lying.files[0].executable = !lying.files[0].executable;
    assert!(matches!(
        target.import(&lying),
        Err(ArtifactError::Corrupt { .. })
    ));
    let mut escaping = artifact.clone();
    escaping.files[0].path = "../outside".into();
    escaping.digest = manifest_digest(&escaping.files, &escaping.symlinks);
    let err = target.import(&escaping).unwrap_err();
    assert!(err.to_string().contains("plain relative path"), "{err}");

    target.import(&artifact).unwrap();
    target.import(&artifact).unwrap(); // again: the same digest is fine
    let mut other = artifact.clone();
    other.files.pop();
    other.digest = manifest_digest(&other.files, &other.symlinks);
    let err = target.import(&other).unwrap_err();
    assert!(err.to_string().contains("already has it"), "{err}");

    let dest = there.path().join("unpacked");
    target.unpack(&artifact, &dest).unwrap();
    assert_eq!(
        fs::read_to_string(dest.join("serve.py")).unwrap(),
        "print(1)\n"
    );
    assert_eq!(
        fs::read_link(dest.join("bin/run")).unwrap(),
        PathBuf::from("start.sh")
    );
}
