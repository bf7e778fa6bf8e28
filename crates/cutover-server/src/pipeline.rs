//! A pipeline run: checks (in a clean checkout of the exact commit) → build → publish → each
//! environment in the order `requires` gives, waiting out each monitor window, stopping at a
//! manual gate. Started by `cutover pipeline run`, a push webhook or `cutover watch`.
//!
//! Exit codes: 0 every stage it may run succeeded (parking at a manual gate
//! included), 1 a check failed or a stage was refused, 3 a deploy rolled back, 4 restoring
//! failed too.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use cutover_api::{Line, RunEvent, RunRequest};
use cutover_config::{Config, CONFIG_FILE};
use cutover_daemon::StateDir;
use cutover_engine::{DeployRequest, Outcome, Progress};
use cutover_git::{short, Repo, Sha};
use cutover_ledger::{CheckRecord, ReleaseState};
use cutover_pipeline::{CheckEvent, ChecksRequest};
use tokio::sync::mpsc::UnboundedSender;

use crate::ServerEngine;

/// Sends progress as NDJSON lines and keeps them in the run's event file.
#[derive(Clone)]
struct RunLog {
    tx: UnboundedSender<Progress>,
    file: std::sync::Arc<std::sync::Mutex<Option<std::fs::File>>>,
}

impl RunLog {
    fn line(&self, p: Progress) {
        if let Ok(mut guard) = self.file.lock() {
            if let Some(f) = guard.as_mut() {
                // Kept events carry their time, so a run's stages can be timed afterwards.
                let line = crate::convert::line(p.clone());
                if let Some(event) = RunEvent::new(&line, chrono::Utc::now()) {
                    let _ = serde_json::to_writer(&mut *f, &event);
                    let _ = f.write_all(b"\n");
                }
            }
        }
        let _ = self.tx.send(p);
    }

    fn step(&self, message: &str) {
        self.line(Progress::step(message));
    }

    /// The log as a build's or publish's report.
    fn report(&self, line: Line) {
        if let Some(p) = crate::convert::progress(line) {
            self.line(p);
        }
    }
}

/// Where a run's events are kept: `<state>/pipeline/runs/<id>.jsonl`.
pub fn events_file(state: &StateDir, run: i64) -> PathBuf {
    state
        .path
        .join("pipeline")
        .join("runs")
        .join(format!("{run}.jsonl"))
}

/// Runs the pipeline for `req`; progress goes to `tx`.
pub async fn run(
    engine: ServerEngine,
    state: StateDir,
    req: RunRequest,
    tx: UnboundedSender<Progress>,
) -> Outcome {
    let root = state.repo_root();
    let log = RunLog {
        tx,
        file: Default::default(),
    };
    let (sha, config) = match commit_config(&root, &req.rev, &log) {
        Ok(found) => found,
        Err(outcome) => return refused_run(&engine, &req, &req.rev, outcome),
    };
    let branch = &config.pipeline.branch;
    if !on_branch(&root, &sha, branch, &config.pipeline.remote) {
        let outcome = Outcome::refused(
            format!(
                "commit {} is not on {branch}; only commits on [pipeline] branch ship",
                short(&sha)
            ),
            Some(format!("merge it into {branch} first")),
        );
        return refused_run(&engine, &req, sha.as_str(), outcome);
    }
    let run = match engine.with_ledger(|l| l.start_run(&sha, &req.trigger, &req.requested_by)) {
        Ok(r) => r,
        Err(e) => return Outcome::refused(e.to_string(), None),
    };
    let events = events_file(&state, run.id);
    if let Some(dir) = events.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut guard) = log.file.lock() {
        *guard = std::fs::File::create(&events).ok();
    }
    log.step(&format!(
        "pipeline run {} for {} on {branch} ({} by {})",
        run.id,
        short(&sha),
        req.trigger,
        req.requested_by
    ));
    let outcome = stages(&engine, &state, &req, &sha, &config, run.id, &log).await;
    let _ = engine.with_ledger(|l| l.finish_run(run.id, outcome.exit_code, &outcome.message));
    notify_unshipped(
        config.app.name.as_str(),
        run.id,
        sha.as_str(),
        &req,
        &outcome,
    );
    let mut outcome = outcome;
    outcome.message = format!("pipeline run {}: {}", run.id, outcome.message);
    outcome
}

/// A run refused before its first stage. One that nobody watches (a webhook's, `watch`'s) is
/// recorded with its reason, so that `pipeline list` and `pipeline show` tell what became of
/// the push; the person who typed `cutover pipeline run` reads the refusal at once instead.
fn refused_run(engine: &ServerEngine, req: &RunRequest, sha: &str, outcome: Outcome) -> Outcome {
    if req.trigger == "cli" {
        return outcome;
    }
    let recorded = engine.with_ledger(|l| -> cutover_ledger::Result<i64> {
        let run = l.start_run(sha, &req.trigger, &req.requested_by)?;
        l.finish_run(run.id, outcome.exit_code, &outcome.message)?;
        Ok(run.id)
    });
    let mut outcome = outcome;
    if let Ok(id) = recorded {
        let app = Config::load(&engine.options().repo_root.join(CONFIG_FILE))
            .map(|c| c.app.name.to_string())
            .unwrap_or_else(|_| "cutover".into());
        notify_unshipped(&app, id, sha, req, &outcome);
        outcome.message = format!("pipeline run {id}: {}", outcome.message);
    }
    outcome
}

/// A run that ended without shipping is told to the `[[notify]]` receivers (a run a webhook
/// started has nobody watching it).
fn notify_unshipped(app: &str, run: i64, sha: &str, req: &RunRequest, outcome: &Outcome) {
    if outcome.exit_code == 0 {
        return;
    }
    crate::triggers::notify(cutover_hooks::Notification::PipelineRun(
        cutover_api::PipelineRunEvent {
            app: app.to_string(),
            run,
            sha: sha.to_string(),
            trigger: req.trigger.clone(),
            requested_by: req.requested_by.clone(),
            state: if outcome.exit_code == 1 {
                "refused".into()
            } else {
                "failed".into()
            },
            exit_code: outcome.exit_code,
            message: outcome.message.clone(),
            at: chrono::Utc::now(),
        },
    ));
}

async fn stages(
    engine: &ServerEngine,
    state: &StateDir,
    req: &RunRequest,
    sha: &str,
    config: &Config,
    run: i64,
    log: &RunLog,
) -> Outcome {
    let root = state.repo_root();
    // 1. Checks.
    if req.skip_checks {
        log.step("checks: skipped (--skip-checks)");
    } else if let Err(outcome) = checks(engine, state, sha, config, &run.to_string(), log).await {
        return outcome.with_hint(format!("see the output: cutover pipeline show {run}"));
    }
    // 2. Build once, 3. publish.
    let handle = tokio::runtime::Handle::current();
    let (root_b, state_b, sha_b) = (root.clone(), state.clone(), sha.to_string());
    let build_log = log.clone();
    let built = tokio::task::spawn_blocking(move || {
        cutover_build::build(
            &root_b,
            &state_b,
            &sha_b,
            false,
            &|line| build_log.report(line),
            &handle,
        )
    })
    .await;
    let mut artifact = match built {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Outcome::refused(format!("build failed: {e:#}"), None),
        Err(e) => return Outcome::refused(e.to_string(), None),
    };
    if config.registry.is_some() && artifact.image.is_some() {
        artifact =
            match cutover_build::publish(&root, state, artifact, None, &|line| log.report(line))
                .await
            {
                Ok(a) => a,
                Err(e) => return Outcome::refused(format!("publish failed: {e:#}"), None),
            };
    }
    // 4. Environments, in the order `requires` gives.
    let mut last = None;
    for env in deploy_order(config) {
        log.step(&format!("deploy {} to {env}", short(sha)));
        let request = DeployRequest {
            env: env.clone(),
            app: artifact.app.clone(),
            version: artifact.version.clone(),
            overrides: BTreeMap::new(),
            secrets: BTreeMap::new(),
            requested_by: req.requested_by.clone(),
            queue: true,
            artifact_login: None,
            trigger: if req.trigger == "cli" {
                "pipeline".into()
            } else {
                req.trigger.clone()
            },
            author: crate::policy::commit_author(&root, sha),
            skip_checks: req.skip_checks,
            passed_elsewhere: Vec::new(),
            promoted_from: None,
        };
        let (deploy_tx, mut deploy_rx) = tokio::sync::mpsc::unbounded_channel();
        let forward_log = log.clone();
        let forward = tokio::spawn(async move {
            while let Some(p) = deploy_rx.recv().await {
                forward_log.line(p);
            }
        });
        let outcome = engine.deploy(request, &deploy_tx).await;
        drop(deploy_tx);
        let _ = forward.await;
        if !outcome.is_success() {
            return outcome;
        }
        let Some(release) = outcome.release else {
            return outcome;
        };
        last = Some(release);
        let parked = engine
            .with_ledger(|l| l.get(release))
            .map(|r| r.state == ReleaseState::AwaitingApproval)
            .unwrap_or(false);
        if parked {
            log.step(&format!(
                "{env}: release {release} waits at the manual gate"
            ));
            return Outcome::done(
                release,
                format!("release {release} waits for approval in {env}"),
            )
            .with_hint(format!("ship it with: cutover approve {env}"));
        }
        log.step(&format!("{env}: live; waiting out its monitor window"));
        let watched = engine.wait_monitor(release).await;
        if !watched.is_success() {
            return watched;
        }
    }
    match last {
        Some(release) => Outcome::done(
            release,
            format!("{} shipped to every environment", short(sha)),
        ),
        None => Outcome::done(0, "no environment to deploy to"),
    }
}

/// Environments with their `requires` first; among equals, those with `approval = "auto"`
/// before manual ones (a run stops at the first manual gate, which must not keep it from
/// environments that need no person), then by name.
fn deploy_order(config: &Config) -> Vec<String> {
    let mut done: Vec<String> = Vec::new();
    while done.len() < config.environments.len() {
        let ready = |(name, env): &(&String, &cutover_config::Environment)| {
            !done.contains(name) && env.requires.iter().all(|r| done.contains(r))
        };
        let next = config
            .environments
            .iter()
            .filter(ready)
            .find(|(_, env)| env.approval == cutover_config::Approval::Auto)
            .or_else(|| config.environments.iter().find(ready));
        match next {
            Some((name, _)) => done.push(name.clone()),
            None => break, // config validation refuses cycles; stop rather than loop
        }
    }
    done
}

fn on_branch(root: &std::path::Path, sha: &str, branch: &str, remote: &str) -> bool {
    let Ok(repo) = Repo::discover(root) else {
        return false;
    };
    [
        format!("refs/heads/{branch}"),
        format!("refs/remotes/{remote}/{branch}"),
        format!("refs/cutover/watch/{branch}"),
    ]
    .iter()
    .any(|reference| repo.is_ancestor(sha, reference).unwrap_or(false))
}

/// Runs a commit's checks (if it declares any) in a clean checkout, records their results in
/// the ledger under `label`, and refuses if one failed.
async fn checks(
    engine: &ServerEngine,
    state: &StateDir,
    sha: &str,
    config: &Config,
    label: &str,
    log: &RunLog,
) -> Result<(), Outcome> {
    if config.pipeline.checks.is_empty() {
        return Ok(());
    }
    let root = state.repo_root();
    let label_owned = label.to_string();
    log.step(&format!(
        "checks: {} in a clean checkout of {}",
        config.pipeline.checks.len(),
        short(sha)
    ));
    let (list, sha_owned, root_c, state_c) = (
        config.pipeline.checks.clone(),
        sha.to_string(),
        root.clone(),
        state.clone(),
    );
    let checks_log = log.clone();
    let result = tokio::task::spawn_blocking(move || {
        let work_dir = state_c.path.join("pipeline");
        let log_dir = work_dir.join("logs").join(&label_owned);
        let req = ChecksRequest {
            repo_root: &root_c,
            sha: &sha_owned,
            checks: &list,
            work_dir: &work_dir,
            log_dir: &log_dir,
            max_parallel: 2,
        };
        cutover_pipeline::run_checks(req, &mut |event| {
            let p = match &event {
                CheckEvent::Started { check } => Progress::step(format!("check {check}: started")),
                CheckEvent::Output { check, line } => Progress::detail(format!("{check} | {line}")),
                CheckEvent::Finished { result } => Progress::step(format!(
                    "check {}: {} in {} ms{}",
                    result.name,
                    result.status.describe(),
                    result.duration_ms,
                    result
                        .exit
                        .as_ref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                )),
            };
            checks_log.line(p);
        })
    })
    .await;
    let outcome = match result {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(Outcome::refused(e.to_string(), None)),
        Err(e) => return Err(Outcome::refused(e.to_string(), None)),
    };
    for r in &outcome.results {
        let record = CheckRecord {
            name: r.name.clone(),
            status: r.status.describe().replace(' ', "-"),
            duration_ms: r.duration_ms,
            exit: r.exit.clone(),
            log_file: r.log_file.display().to_string(),
        };
        let _ = engine.with_ledger(|l| l.record_check(sha, label, &record));
    }
    if !outcome.passed {
        let failed: Vec<&str> = outcome
            .results
            .iter()
            .filter(|r| {
                matches!(
                    r.status,
                    cutover_pipeline::CheckStatus::Failed | cutover_pipeline::CheckStatus::TimedOut
                )
            })
            .map(|r| r.name.as_str())
            .collect();
        return Err(Outcome::refused(
            format!(
                "check {} failed; nothing was built or deployed",
                failed.join(", ")
            ),
            None,
        ));
    }
    Ok(())
}

/// `POST /v1/checks/run`: a commit's checks alone, as `build` and `deploy` run them for a
/// commit whose checks never ran.
pub async fn run_checks_only(
    engine: ServerEngine,
    state: StateDir,
    rev: String,
    tx: UnboundedSender<Progress>,
) -> Outcome {
    let log = RunLog {
        tx,
        file: Default::default(),
    };
    let root = state.repo_root();
    let (sha, config) = match commit_config(&root, &rev, &log) {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    let label = format!("checks-{}", chrono::Utc::now().timestamp_millis());
    log.step(&format!(
        "checks of {} ({} declared)",
        short(&sha),
        config.pipeline.checks.len()
    ));
    match checks(&engine, &state, &sha, &config, &label, &log).await {
        Ok(()) => Outcome::done(0, format!("the checks of {} passed", short(&sha))),
        Err(outcome) => outcome.with_hint(format!(
            "the output is in {}; fix and commit, or pass --skip-checks",
            state
                .path
                .join("pipeline")
                .join("logs")
                .join(&label)
                .display()
        )),
    }
}

/// The full sha of `rev` and the config committed in it. A commit this repository does not
/// have yet (a webhook's, when the server's repository is a clone of the forge's) is fetched
/// first: `[pipeline] branch` from `[pipeline] remote`, as the working tree's config names them,
/// under `refs/cutover/watch/<branch>` so that no branch of the user's moves.
fn commit_config(
    root: &std::path::Path,
    rev: &str,
    log: &RunLog,
) -> Result<(Sha, Config), Outcome> {
    let repo = Repo::discover(root).map_err(|e| Outcome::refused(e.to_string(), None))?;
    let sha = match repo.resolve(rev) {
        Ok(sha) => sha,
        Err(missing) if Sha::parse(rev).is_ok() => fetch(&repo, root, rev, log)
            .map_err(|detail| {
                Outcome::refused(
                    format!("commit {} is not in this repository, and fetching it failed: {detail}", short(rev)),
                    Some(format!("check [pipeline] remote and that the server may fetch from it (`git -C {} fetch`); {missing}", root.display())),
                )
            })?,
        Err(e) => return Err(Outcome::refused(e.to_string(), None)),
    };
    let config = match repo.show_file(&sha, CONFIG_FILE) {
        Ok(Some(text)) => Config::parse(&text, &cutover_config::committed_origin(&sha))
            .map_err(|e| Outcome::refused(e.to_string(), None))?,
        Ok(None) => {
            return Err(Outcome::refused(
                format!("commit {} has no {CONFIG_FILE}", short(&sha)),
                None,
            ))
        }
        Err(e) => return Err(Outcome::refused(e.to_string(), None)),
    };
    Ok((sha, config))
}

/// Fetches the pipeline's branch from its remote and resolves `rev` again.
fn fetch(repo: &Repo, root: &std::path::Path, rev: &str, log: &RunLog) -> Result<Sha, String> {
    let pipeline = Config::load(&root.join(CONFIG_FILE))
        .map(|c| c.pipeline)
        .unwrap_or_default();
    let (remote, branch) = (&pipeline.remote, &pipeline.branch);
    log.step(&format!(
        "fetching {branch} from {remote}: commit {} is not here yet",
        short(rev)
    ));
    repo.fetch(
        remote,
        &format!("+refs/heads/{branch}:refs/cutover/watch/{branch}"),
    )
    .map_err(|e| e.to_string())?;
    repo.resolve(rev).map_err(|_| {
        format!("{remote}'s {branch} does not contain it (pushed to another branch, or force-pushed away)")
    })
}
