//! The checks runner against real git repositories made in temp dirs.

use cutover_config::Check;
use cutover_git::GitError;
use cutover_pipeline::{
    run_checks, CheckEvent, CheckResult, CheckStatus, ChecksOutcome, ChecksRequest, PipelineError,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A temp dir holding `repo/` (one commit of `files`), `state/` and `marks/` (for checks to
/// write what they observe, outside the checkout).
struct Fixture {
    dir: tempfile::TempDir,
    sha: String,
}

impl Fixture {
    fn new(files: &[(&str, &str)]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::create_dir_all(dir.path().join("marks")).unwrap();
        git(&repo, &["init", "-q"]);
        let mut fixture = Fixture {
            dir,
            sha: String::new(),
        };
        fixture.commit(files, "first");
        fixture
    }

    fn commit(&mut self, files: &[(&str, &str)], message: &str) -> String {
        for (path, text) in files {
            let path = self.repo().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        git(&self.repo(), &["add", "-A"]);
        git(&self.repo(), &["commit", "-q", "-m", message]);
        self.sha = git(&self.repo(), &["rev-parse", "HEAD"]);
        self.sha.clone()
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    fn work_dir(&self) -> PathBuf {
        self.dir.path().join("state/pipeline")
    }
    fn log_dir(&self) -> PathBuf {
        self.dir.path().join("state/logs")
    }
    fn marks(&self) -> PathBuf {
        self.dir.path().join("marks")
    }
    fn mark(&self, name: &str) -> String {
        std::fs::read_to_string(self.marks().join(name))
            .unwrap_or_else(|e| panic!("mark {name}: {e}"))
            .trim()
            .to_string()
    }

    fn run(&self, checks: &[Check], max_parallel: usize) -> (ChecksOutcome, Vec<CheckEvent>) {
        let (outcome, events) = self.try_run(&self.sha, checks, max_parallel);
        (outcome.expect("the checks run"), events)
    }

    fn try_run(
        &self,
        sha: &str,
        checks: &[Check],
        max_parallel: usize,
    ) -> (Result<ChecksOutcome, PipelineError>, Vec<CheckEvent>) {
        let repo = self.repo();
        let work_dir = self.work_dir();
        let log_dir = self.log_dir();
        let mut events = Vec::new();
        let outcome = run_checks(
            ChecksRequest {
                repo_root: &repo,
                sha,
                checks,
                work_dir: &work_dir,
                log_dir: &log_dir,
                max_parallel,
            },
            &mut |event| events.push(event),
        );
        (outcome, events)
    }
}

fn check(name: &str, run: &str, needs: &[&str]) -> Check {
    Check {
        name: name.to_string(),
        run: run.to_string(),
        needs: needs.iter().map(|n| n.to_string()).collect(),
        timeout: Duration::from_secs(60),
    }
}

fn result<'a>(outcome: &'a ChecksOutcome, name: &str) -> &'a CheckResult {
    outcome
        .results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no result for {name}"))
}

fn output_of(events: &[CheckEvent], name: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            CheckEvent::Output { check, line } if check == name => Some(line.clone()),
            _ => None,
        })
        .collect()
}

/// Nanoseconds since the epoch, as `date +%s%N` writes them.
fn nanos(text: &str) -> u128 {
    text.parse()
        .unwrap_or_else(|_| panic!("not a timestamp: {text:?}"))
}

#[test]
fn a_dag_runs_independent_checks_in_parallel_and_dependents_after() {
    let fx = Fixture::new(&[("README", "hello\n")]);
    let marks = fx.marks().display().to_string();
    let timed = |name: &str| {
        format!("date +%s%N > {marks}/{name}.start; sleep 0.5; date +%s%N > {marks}/{name}.end")
    };
    // `scan` is listed first: the order of the config is not the order of the DAG.
    let checks = [
        check("scan", &timed("scan"), &["lint"]),
        check("lint", &timed("lint"), &[]),
        check("test", &timed("test"), &[]),
    ];
    let started = Instant::now();
    let (outcome, events) = fx.run(&checks, 2);
    let elapsed = started.elapsed();

    assert!(outcome.passed, "{outcome:?}");
    let names: Vec<&str> = outcome.results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["scan", "lint", "test"],
        "results in the config's order"
    );
    for r in &outcome.results {
        assert_eq!(r.status, CheckStatus::Passed);
        assert_eq!(r.exit, None);
        assert!(r.duration_ms >= 500, "{r:?}");
        assert_eq!(r.log_file, fx.log_dir().join(format!("{}.log", r.name)));
        assert!(r.log_file.is_file());
    }

    let t = |name: &str, end: &str| nanos(&fx.mark(&format!("{name}.{end}")));
    // lint and test overlap in time.
    assert!(t("lint", "start") < t("test", "end") && t("test", "start") < t("lint", "end"));
    // scan starts only after lint ended.
    assert!(t("scan", "start") >= t("lint", "end"));
    // Three checks of 0.5s each, in about two rounds.
    assert!(
        elapsed < Duration::from_millis(1500),
        "took {elapsed:?}, not less than the sum of the checks"
    );

    let position = |wanted: &CheckEvent| events.iter().position(|e| e == wanted).unwrap();
    let lint_finished = events
        .iter()
        .position(|e| matches!(e, CheckEvent::Finished { result } if result.name == "lint"))
        .unwrap();
    assert!(
        position(&CheckEvent::Started {
            check: "scan".into()
        }) > lint_finished
    );
    eprintln!("dag: 3 checks of 0.5s in {elapsed:?}");
}

#[test]
fn max_parallel_one_runs_checks_one_at_a_time() {
    let fx = Fixture::new(&[("README", "hello\n")]);
    let marks = fx.marks().display().to_string();
    let timed = |name: &str| {
        format!("date +%s%N > {marks}/{name}.start; sleep 0.2; date +%s%N > {marks}/{name}.end")
    };
    let checks = [check("a", &timed("a"), &[]), check("b", &timed("b"), &[])];
    let (outcome, _) = fx.run(&checks, 1);
    assert!(outcome.passed);
    let t = |name: &str| nanos(&fx.mark(name));
    assert!(
        t("b.start") >= t("a.end"),
        "a runs first (config order), then b"
    );
}

#[test]
fn a_failing_check_skips_its_dependents_and_the_others_still_run() {
    let fx = Fixture::new(&[("README", "hello\n")]);
    let marks = fx.marks().display().to_string();
    let checks = [
        check(
            "lint",
            "echo 'src/main.rs:1: warning'; echo 'lint failed' >&2; exit 1",
            &[],
        ),
        check("test", &format!("touch {marks}/test-ran; echo ok"), &[]),
        check("scan", &format!("touch {marks}/scan-ran"), &["lint"]),
        check(
            "report",
            &format!("touch {marks}/report-ran"),
            &["scan", "test"],
        ),
    ];
    let (outcome, events) = fx.run(&checks, 2);

    assert!(!outcome.passed);
    let lint = result(&outcome, "lint");
    assert_eq!(lint.status, CheckStatus::Failed);
    assert_eq!(lint.exit.as_deref(), Some("exit status 1"));
    let log = std::fs::read_to_string(&lint.log_file).unwrap();
    assert_eq!(log, "src/main.rs:1: warning\nlint failed\n");

    assert_eq!(result(&outcome, "test").status, CheckStatus::Passed);
    assert!(fx.marks().join("test-ran").exists());

    for skipped in ["scan", "report"] {
        let r = result(&outcome, skipped);
        assert_eq!(r.status, CheckStatus::Skipped, "{skipped}");
        assert_eq!(r.exit, None);
        assert!(!fx.marks().join(format!("{skipped}-ran")).exists());
        assert!(!events.contains(&CheckEvent::Started {
            check: skipped.into()
        }));
    }
    let scan_log = std::fs::read_to_string(&result(&outcome, "scan").log_file).unwrap();
    assert!(scan_log.contains("needs lint, which failed"), "{scan_log}");
    let report_log = std::fs::read_to_string(&result(&outcome, "report").log_file).unwrap();
    assert!(
        report_log.contains("needs scan, which was skipped"),
        "{report_log}"
    );
}

#[test]
fn a_check_past_its_timeout_is_killed_with_its_whole_process_group() {
    let fx = Fixture::new(&[("README", "hello\n")]);
    let marks = fx.marks().display().to_string();
    // The shell waits for a background sleep: both must die.
    let mut slow = check(
        "slow",
        &format!(
            "echo $$ > {marks}/sh.pid; sleep 30 & echo $! > {marks}/sleep.pid; echo waiting; wait"
        ),
        &[],
    );
    slow.timeout = Duration::from_millis(300);
    let checks = [
        slow,
        check("after", "true", &["slow"]),
        check("other", "true", &[]),
    ];
    let started = Instant::now();
    let (outcome, events) = fx.run(&checks, 2);
    let elapsed = started.elapsed();

    let r = result(&outcome, "slow");
    assert_eq!(r.status, CheckStatus::TimedOut);
    assert_eq!(r.exit.as_deref(), Some("killed after timeout 300ms"));
    assert!(r.duration_ms >= 300 && r.duration_ms < 3000, "{r:?}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert_eq!(result(&outcome, "after").status, CheckStatus::Skipped);
    assert_eq!(result(&outcome, "other").status, CheckStatus::Passed);
    assert!(!outcome.passed);
    assert_eq!(output_of(&events, "slow"), ["waiting"]);

    for pidfile in ["sh.pid", "sleep.pid"] {
        let pid: u32 = fx.mark(pidfile).parse().unwrap();
        assert!(
            !cutover_daemon::pid_alive(pid),
            "{pidfile}: process {pid} survived the timeout: {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
        );
    }
    eprintln!("timeout: a 300ms timeout ended the run in {elapsed:?}");
}

#[test]
fn a_term_ignoring_check_is_killed_after_the_grace() {
    let fx = Fixture::new(&[("README", "hello\n")]);
    let marks = fx.marks().display().to_string();
    let mut stubborn = check(
        "stubborn",
        &format!("trap '' TERM; echo $$ > {marks}/sh.pid; while :; do sleep 0.05; done"),
        &[],
    );
    stubborn.timeout = Duration::from_millis(200);
    let started = Instant::now();
    let (outcome, _) = fx.run(&[stubborn], 1);
    let elapsed = started.elapsed();
    assert_eq!(result(&outcome, "stubborn").status, CheckStatus::TimedOut);
    assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");
    let pid: u32 = fx.mark("sh.pid").parse().unwrap();
    assert!(!cutover_daemon::pid_alive(pid));
}

#[test]
fn processes_a_finished_check_leaves_behind_are_killed() {
    let fx = Fixture::new(&[("README", "hello\n")]);
    let marks = fx.marks().display().to_string();
    let checks = [check(
        "leaky",
        &format!("sleep 30 >/dev/null 2>&1 & echo $! > {marks}/bg.pid; echo done"),
        &[],
    )];
    let started = Instant::now();
    let (outcome, _) = fx.run(&checks, 1);
    assert!(outcome.passed);
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid: u32 = fx.mark("bg.pid").parse().unwrap();
    assert!(
        !cutover_daemon::pid_alive(pid),
        "background process {pid} survived"
    );
}

#[test]
fn checks_see_the_commit_not_the_working_tree() {
    let mut fx = Fixture::new(&[("file.txt", "first\n")]);
    let sha = fx.commit(&[("file.txt", "committed\n")], "second");
    // Uncommitted edits and an untracked file in the repository's working tree.
    std::fs::write(fx.repo().join("file.txt"), "uncommitted edit\n").unwrap();
    std::fs::write(fx.repo().join("untracked.txt"), "nope\n").unwrap();

    let checks = [check(
        "look",
        "cat file.txt; test ! -e untracked.txt && echo no-untracked; echo \"version=$CUTOVER_VERSION\"; pwd",
        &[],
    )];
    let (outcome, events) = fx.run(&checks, 1);
    assert!(outcome.passed, "{outcome:?}");
    let lines = output_of(&events, "look");
    assert_eq!(
        lines[..3],
        ["committed", "no-untracked", &format!("version={sha}")]
    );
    let pwd = PathBuf::from(&lines[3]).canonicalize().unwrap();
    assert_eq!(pwd, fx.work_dir().join("checkout").canonicalize().unwrap());

    // The working tree is untouched, and so is the branch.
    assert_eq!(
        std::fs::read_to_string(fx.repo().join("file.txt")).unwrap(),
        "uncommitted edit\n"
    );
    assert_eq!(git(&fx.repo(), &["rev-parse", "HEAD"]), sha);

    // An older commit checks out its own files in the same checkout.
    let first = git(&fx.repo(), &["rev-parse", "HEAD~1"]);
    let (outcome, events) = fx.try_run(&first, &checks, 1);
    assert!(outcome.unwrap().passed);
    assert_eq!(output_of(&events, "look")[0], "first");
}

#[test]
fn ignored_caches_survive_between_runs_and_untracked_files_do_not() {
    let mut fx = Fixture::new(&[(".gitignore", "cache/\n"), ("src.txt", "v1\n")]);
    let checks = [check(
        "build",
        "if [ -f cache/warm ]; then echo cache-hit; else echo cache-miss; fi; \
         if [ -e stray.txt ]; then echo stray-present; else echo stray-absent; fi; \
         mkdir -p cache && touch cache/warm stray.txt; echo dirty >> src.txt",
        &[],
    )];
    let (outcome, events) = fx.run(&checks, 1);
    assert!(outcome.passed);
    assert_eq!(output_of(&events, "build"), ["cache-miss", "stray-absent"]);

    // Same commit again, then a new commit: the cache is warm, the stray file and the edit gone.
    let (outcome, events) = fx.run(&checks, 1);
    assert!(outcome.passed);
    assert_eq!(output_of(&events, "build"), ["cache-hit", "stray-absent"]);
    let checkout = fx.work_dir().join("checkout");
    assert_eq!(
        std::fs::read_to_string(checkout.join("src.txt")).unwrap(),
        "v1\ndirty\n"
    );

    fx.commit(&[("src.txt", "v2\n")], "second");
    let (outcome, events) = fx.run(&checks, 1);
    assert!(outcome.passed);
    assert_eq!(output_of(&events, "build"), ["cache-hit", "stray-absent"]);
    assert_eq!(
        std::fs::read_to_string(checkout.join("src.txt")).unwrap(),
        "v2\ndirty\n"
    );
}

#[test]
fn a_deleted_checkout_is_created_again() {
    let fx = Fixture::new(&[("a.txt", "a\n")]);
    let checks = [check("cat", "cat a.txt", &[])];
    assert!(fx.run(&checks, 1).0.passed);
    std::fs::remove_dir_all(fx.work_dir().join("checkout")).unwrap();
    let (outcome, events) = fx.run(&checks, 1);
    assert!(outcome.passed, "{outcome:?}");
    assert_eq!(output_of(&events, "cat"), ["a"]);
}

#[test]
fn an_unknown_commit_or_a_non_repository_is_a_clear_error() {
    let fx = Fixture::new(&[("a.txt", "a\n")]);
    let checks = [check("t", "true", &[])];
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let (outcome, events) = fx.try_run(missing, &checks, 1);
    let err = outcome.unwrap_err();
    assert!(
        matches!(err, PipelineError::Git(GitError::UnknownCommit { .. })),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(missing) && message.contains("hint:"),
        "{message}"
    );
    assert!(events.is_empty());
    assert!(
        !fx.work_dir().join("checkout").exists(),
        "nothing checked out"
    );

    let (outcome, _) = fx.try_run("HEAD", &checks, 1);
    let err = outcome.unwrap_err();
    assert!(
        matches!(err, PipelineError::Git(GitError::NotFullSha { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains(&fx.sha));

    let not_repo = tempfile::tempdir().unwrap();
    let work_dir = fx.work_dir();
    let log_dir = fx.log_dir();
    let err = run_checks(
        ChecksRequest {
            repo_root: not_repo.path(),
            sha: &fx.sha,
            checks: &checks,
            work_dir: &work_dir,
            log_dir: &log_dir,
            max_parallel: 1,
        },
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, PipelineError::Git(GitError::NotARepo { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("not inside a git repository"),
        "{err}"
    );
}

#[test]
fn a_cycle_or_unknown_need_is_refused_before_anything_runs() {
    let fx = Fixture::new(&[("a.txt", "a\n")]);
    let cycle = [check("a", "true", &["b"]), check("b", "true", &["a"])];
    let (outcome, events) = fx.try_run(&fx.sha, &cycle, 1);
    let err = outcome.unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
    assert!(events.is_empty());
    let unknown = [check("a", "true", &["nope"])];
    let err = fx.try_run(&fx.sha, &unknown, 1).0.unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn output_streams_in_order_per_check_and_matches_the_log() {
    let fx = Fixture::new(&[("a.txt", "a\n")]);
    let noisy = |tag: &str| {
        format!("for i in $(seq 1 300); do echo \"{tag} out $i\"; echo \"{tag} err $i\" >&2; done")
    };
    let checks = [
        check("one", &noisy("one"), &[]),
        check("two", &noisy("two"), &[]),
    ];
    let (outcome, events) = fx.run(&checks, 2);
    assert!(outcome.passed);
    for name in ["one", "two"] {
        let expected: Vec<String> = (1..=300)
            .flat_map(|i| [format!("{name} out {i}"), format!("{name} err {i}")])
            .collect();
        assert_eq!(
            output_of(&events, name),
            expected,
            "stdout and stderr as written"
        );
        let log = std::fs::read_to_string(fx.log_dir().join(format!("{name}.log"))).unwrap();
        assert_eq!(log, expected.join("\n") + "\n");

        // Started first, Finished last.
        let mine: Vec<&CheckEvent> = events
            .iter()
            .filter(|e| match e {
                CheckEvent::Started { check } | CheckEvent::Output { check, .. } => check == name,
                CheckEvent::Finished { result } => result.name == name,
            })
            .collect();
        assert_eq!(
            mine.first(),
            Some(&&CheckEvent::Started { check: name.into() })
        );
        assert!(matches!(mine.last(), Some(CheckEvent::Finished { .. })));
    }
}

#[test]
fn a_second_run_waits_for_the_checkout_lock() {
    let fx = Fixture::new(&[("a.txt", "a\n")]);
    let lock = fx.work_dir().join("checks.lock");
    let seen = Arc::new(Mutex::new(None));
    let seen_in = seen.clone();
    let repo = fx.repo();
    let work_dir = fx.work_dir();
    let log_dir = fx.log_dir();
    let checks = [check("t", "sleep 0.1", &[])];
    run_checks(
        ChecksRequest {
            repo_root: &repo,
            sha: &fx.sha,
            checks: &checks,
            work_dir: &work_dir,
            log_dir: &log_dir,
            max_parallel: 1,
        },
        &mut move |event| {
            if matches!(event, CheckEvent::Started { .. }) {
                let free = cutover_daemon::FileLock::try_acquire(&lock)
                    .unwrap()
                    .is_some();
                *seen_in.lock().unwrap() = Some(free);
            }
        },
    )
    .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        Some(false),
        "the lock is held during a run"
    );
    let after = cutover_daemon::FileLock::try_acquire(&fx.work_dir().join("checks.lock")).unwrap();
    assert!(after.is_some(), "and released after it");
}

#[test]
fn no_checks_pass_without_a_checkout() {
    let fx = Fixture::new(&[("a.txt", "a\n")]);
    let (outcome, events) = fx.run(&[], 2);
    assert!(outcome.passed && outcome.results.is_empty());
    assert!(events.is_empty());
    assert!(!fx.work_dir().join("checkout").exists());
}

#[test]
fn a_command_killed_by_a_signal_says_so() {
    let fx = Fixture::new(&[("a.txt", "a\n")]);
    let (outcome, _) = fx.run(&[check("crash", "kill -SEGV $$", &[])], 1);
    let r = result(&outcome, "crash");
    assert_eq!(r.status, CheckStatus::Failed);
    assert_eq!(r.exit.as_deref(), Some("killed by signal 11 (SIGSEGV)"));
}

#[test]
fn events_serialize_as_tagged_json() {
    let event = CheckEvent::Finished {
        result: CheckResult {
            name: "lint".into(),
            status: CheckStatus::TimedOut,
            duration_ms: 300,
            exit: Some("killed after timeout 300ms".into()),
            log_file: PathBuf::from("/s/logs/lint.log"),
        },
    };
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "type": "finished",
            "result": {
                "name": "lint", "status": "timed-out", "duration_ms": 300,
                "exit": "killed after timeout 300ms", "log_file": "/s/logs/lint.log"
            }
        })
    );
    assert_eq!(serde_json::from_value::<CheckEvent>(json).unwrap(), event);
    let output = CheckEvent::Output {
        check: "lint".into(),
        line: "x".into(),
    };
    assert_eq!(
        serde_json::to_string(&output).unwrap(),
        r#"{"type":"output","check":"lint","line":"x"}"#
    );
}
