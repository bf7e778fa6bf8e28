//! The checks runner: `[[pipeline.check]]` commands run in a clean checkout of one commit,
//! in the order their `needs` give, independent ones in parallel, each with a timeout, their
//! output kept per check and streamed as events.

mod error;
mod process;

pub use error::PipelineError;

use cutover_config::Check;
use error::io;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// What to check.
pub struct ChecksRequest<'a> {
    /// The git repository.
    pub repo_root: &'a Path,
    /// The exact commit, as a full sha.
    pub sha: &'a str,
    /// The checks, as parsed and validated from `[pipeline]`.
    pub checks: &'a [Check],
    /// `<state>/pipeline`: holds the checkout (`checkout/`) and its lock (`checks.lock`).
    pub work_dir: &'a Path,
    /// Each check's output goes to `<log_dir>/<check name>.log` (replaced on every run).
    pub log_dir: &'a Path,
    /// How many checks run at once (0 counts as 1).
    pub max_parallel: usize,
}

/// Progress of a run. Per check, in order: `Started`, `Output`*, `Finished`; or `Finished`
/// alone for a skipped check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CheckEvent {
    Started {
        check: String,
    },
    /// One line of the check's stdout or stderr (interleaved as written), without the newline.
    Output {
        check: String,
        line: String,
    },
    Finished {
        result: CheckResult,
    },
}

/// How one check went.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckResult {
    pub name: String,
    pub status: CheckStatus,
    /// From start to the end of the process (0 for a skipped check).
    pub duration_ms: u64,
    /// Why it did not pass: "exit status 1", "killed by signal 9 (SIGKILL)",
    /// "killed after timeout 10m", "cannot run …"; `None` when it passed or was skipped.
    pub exit: Option<String>,
    /// `<log_dir>/<name>.log`: the whole output (for a skipped check: why it was skipped).
    pub log_file: PathBuf,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CheckStatus {
    Passed,
    Failed,
    TimedOut,
    /// Not run: a check it needs did not pass.
    Skipped,
}

impl CheckStatus {
    /// "passed", "failed", "timed out", "skipped".
    pub fn describe(self) -> &'static str {
        match self {
            CheckStatus::Passed => "passed",
            CheckStatus::Failed => "failed",
            CheckStatus::TimedOut => "timed out",
            CheckStatus::Skipped => "skipped",
        }
    }
}

/// The result of every check.
#[derive(Debug, Clone, PartialEq)]
pub struct ChecksOutcome {
    /// In the config's order.
    pub results: Vec<CheckResult>,
    /// Every check passed.
    pub passed: bool,
}

/// Runs every check in a clean checkout of `sha` (never the working tree).
///
/// A check runs once every check it `needs` passed; independent checks run in parallel, up to
/// `max_parallel`, in the config's order. Each runs with `sh -c` in the checkout, in its own
/// process group, with `CUTOVER_VERSION=<sha>`; at its timeout the whole group gets SIGTERM,
/// then SIGKILL 2s later; processes a check leaves behind when it ends are killed too. A
/// failed or timed-out check skips the checks that need it (transitively); the others still
/// run. Events go to `on_event` from the calling thread only.
///
/// The checkout is `<work_dir>/checkout`, a git worktree of `repo_root` reused between runs
/// ([`cutover_git::Repo::clean_checkout`]: repository hooks off, ignored caches such as
/// `target/` kept). `<work_dir>/checks.lock` keeps two runs from sharing it (a second run
/// waits). The checks of one run share the checkout, like CI jobs in one workspace. Checks
/// run without the caller's `GIT_*` variables.
pub fn run_checks(
    req: ChecksRequest,
    on_event: &mut (dyn FnMut(CheckEvent) + Send),
) -> Result<ChecksOutcome, PipelineError> {
    let needs = validate(req.checks)?;
    let repo = cutover_git::Repo::discover(req.repo_root)?;
    let sha = repo.resolve_full(req.sha)?;
    if req.checks.is_empty() {
        return Ok(ChecksOutcome {
            results: Vec::new(),
            passed: true,
        });
    }
    std::fs::create_dir_all(req.log_dir).map_err(io("create the log dir", req.log_dir))?;
    let lock_path = req.work_dir.join("checks.lock");
    let _lock = cutover_daemon::FileLock::acquire(&lock_path).map_err(io("lock", &lock_path))?;
    let checkout = req.work_dir.join("checkout");
    repo.clean_checkout(&checkout, &sha)?;

    let n = req.checks.len();
    let max_parallel = req.max_parallel.max(1);
    let mut results: Vec<Option<CheckResult>> = vec![None; n];
    let mut started = vec![false; n];
    let mut running = 0;
    let log_file = |i: usize| req.log_dir.join(format!("{}.log", req.checks[i].name));
    let index: HashMap<&str, usize> = req
        .checks
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();

    std::thread::scope(|scope| -> Result<(), PipelineError> {
        let (tx, rx) = mpsc::channel::<CheckEvent>();
        loop {
            // Skips cascade and may free slots for nothing; starts follow the config's order.
            let mut changed = true;
            while changed {
                changed = false;
                for i in 0..n {
                    if started[i] || results[i].is_some() {
                        continue;
                    }
                    let blocker = needs[i].iter().find_map(|&d| {
                        results[d]
                            .as_ref()
                            .filter(|r| r.status != CheckStatus::Passed)
                            .map(|r| (d, r.status))
                    });
                    if let Some((dep, status)) = blocker {
                        let result =
                            skip(&req.checks[dep].name, status, log_file(i), &req.checks[i]);
                        results[i] = Some(result.clone());
                        on_event(CheckEvent::Finished { result });
                        changed = true;
                        continue;
                    }
                    let ready = needs[i].iter().all(|&d| {
                        results[d]
                            .as_ref()
                            .is_some_and(|r| r.status == CheckStatus::Passed)
                    });
                    if ready && running < max_parallel {
                        started[i] = true;
                        running += 1;
                        let tx = tx.clone();
                        let run = process::CheckRun {
                            check: &req.checks[i],
                            checkout: &checkout,
                            sha: &sha,
                            log_file: log_file(i),
                        };
                        scope.spawn(move || {
                            let name = run.check.name.clone();
                            let log_file = run.log_file.clone();
                            let ran =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    process::run_check(run, &tx)
                                }));
                            if ran.is_err() {
                                // Never leave the scheduler waiting for an end that won't come.
                                let result = CheckResult {
                                    name,
                                    status: CheckStatus::Failed,
                                    duration_ms: 0,
                                    exit: Some("cutover's check runner crashed".to_string()),
                                    log_file,
                                };
                                let _ = tx.send(CheckEvent::Finished { result });
                            }
                        });
                    }
                }
            }
            if results.iter().all(Option::is_some) {
                return Ok(());
            }
            if running == 0 {
                // `validate` rules this out; never wait for nothing.
                return Err(PipelineError::InvalidChecks(
                    "some checks can never start".to_string(),
                ));
            }
            let event = rx.recv().expect("a running check always reports its end");
            if let CheckEvent::Finished { result } = &event {
                let i = index[result.name.as_str()];
                results[i] = Some(result.clone());
                running -= 1;
            }
            on_event(event);
        }
    })?;

    let results: Vec<CheckResult> = results.into_iter().flatten().collect();
    let passed = results.iter().all(|r| r.status == CheckStatus::Passed);
    Ok(ChecksOutcome { results, passed })
}

/// The result of a check not run because `dep` did not pass; its log says so.
fn skip(dep: &str, status: CheckStatus, log_file: PathBuf, check: &Check) -> CheckResult {
    if let Ok(mut log) = std::fs::File::create(&log_file) {
        let _ = writeln!(
            log,
            "cutover: {} was not run: it needs {dep}, which {}",
            check.name,
            match status {
                CheckStatus::Skipped => "was skipped".to_string(),
                other => other.describe().to_string(),
            }
        );
    }
    CheckResult {
        name: check.name.clone(),
        status: CheckStatus::Skipped,
        duration_ms: 0,
        exit: None,
        log_file,
    }
}

/// Each check's `needs` as indices; refuses what would make the run hang or lie (duplicate
/// names, unknown needs, cycles), though config parsing already rules these out.
fn validate(checks: &[Check]) -> Result<Vec<Vec<usize>>, PipelineError> {
    let mut index = HashMap::new();
    for (i, check) in checks.iter().enumerate() {
        if check.name.is_empty()
            || !check
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            return Err(PipelineError::InvalidChecks(format!(
                "{:?} is not a check name",
                check.name
            )));
        }
        if index.insert(check.name.as_str(), i).is_some() {
            return Err(PipelineError::InvalidChecks(format!(
                "two checks are named {:?}",
                check.name
            )));
        }
    }
    let mut needs = Vec::with_capacity(checks.len());
    for check in checks {
        let mut deps = Vec::new();
        for need in &check.needs {
            let Some(&d) = index.get(need.as_str()) else {
                return Err(PipelineError::InvalidChecks(format!(
                    "{} needs {need:?}, which is not a check",
                    check.name
                )));
            };
            deps.push(d);
        }
        needs.push(deps);
    }
    // Kahn: whatever is never freed is on a cycle.
    let mut waiting: Vec<usize> = needs.iter().map(Vec::len).collect();
    let mut ready: Vec<usize> = (0..checks.len()).filter(|&i| waiting[i] == 0).collect();
    let mut done = 0;
    while let Some(d) = ready.pop() {
        done += 1;
        for (i, deps) in needs.iter().enumerate() {
            for _ in deps.iter().filter(|&&x| x == d) {
                waiting[i] -= 1;
                if waiting[i] == 0 {
                    ready.push(i);
                }
            }
        }
    }
    if done < checks.len() {
        let stuck: Vec<&str> = (0..checks.len())
            .filter(|&i| waiting[i] > 0)
            .map(|i| checks[i].name.as_str())
            .collect();
        return Err(PipelineError::InvalidChecks(format!(
            "`needs` form a cycle through {}",
            stuck.join(", ")
        )));
    }
    Ok(needs)
}
