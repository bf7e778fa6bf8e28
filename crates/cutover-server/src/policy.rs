//! What the server decides for every caller, so that the CLI only asks and shows: whether a
//! commit's checks let it be built and deployed, and whether an artifact must be published
//! before an environment can run it.

use cutover_api::{Line, Refusal, Verdict, VerdictQuery};
use cutover_build::built;
use cutover_config::{Config, CONFIG_FILE};
use cutover_daemon::StateDir;
use cutover_engine::{Outcome, ProgressTx};
use cutover_git::Repo;

use crate::ServerEngine;

/// The checks gate: a commit whose checks failed is refused; one whose checks never ran must
/// run them first; one that declares none, or is built already (its checks passed or were
/// skipped then), or is a dirty working tree (no commit to check) may go. `--skip-checks`
/// goes too (the deploy records it).
pub fn verdict(engine: &ServerEngine, state: &StateDir, q: &VerdictQuery) -> Verdict {
    let refused = |message: String| Verdict::Refused {
        message,
        hint: None,
    };
    if q.skip_checks {
        return allowed("its checks are skipped (--skip-checks)");
    }
    let repo = match Repo::discover(&state.repo_root()) {
        Ok(r) => r,
        Err(e) => return refused(e.to_string()),
    };
    let sha = match repo.resolve(&q.rev) {
        Ok(s) => s,
        Err(e) => return refused(e.to_string()),
    };
    if q.allow_dirty {
        let dirty = repo
            .resolve("HEAD")
            .and_then(|head| Ok(head == sha && repo.is_dirty()?));
        match dirty {
            Ok(true) => return allowed("a dirty working tree has no commit to check"),
            Ok(false) => {}
            Err(e) => return refused(e.to_string()),
        }
    }
    let text = match repo.show_file(&sha, CONFIG_FILE) {
        Ok(Some(text)) => text,
        // The build refuses it, saying so.
        Ok(None) => return allowed("the commit has no cutover.toml to declare checks"),
        Err(e) => return refused(e.to_string()),
    };
    let config = match Config::parse(&text, &cutover_config::committed_origin(&sha)) {
        Ok(c) => c,
        Err(e) => return refused(e.to_string()),
    };
    if config.pipeline.checks.is_empty() {
        return allowed("it declares no checks");
    }
    if built(state, config.app.name.as_str(), sha.as_str()).is_some() {
        return allowed("it is built already: its checks passed or were skipped then");
    }
    let records = match engine.with_ledger(|l| l.checks(sha.as_str())) {
        Ok(r) => r,
        Err(e) => return refused(e.to_string()),
    };
    if records.is_empty() {
        return Verdict::RunChecks {
            message: format!(
                "the checks of {} never ran: running them first",
                sha.short()
            ),
            sha: sha.into_string(),
        };
    }
    let failed: Vec<String> = records
        .iter()
        .filter(|r| r.status != "passed")
        .map(|r| format!("{} {}", r.name, r.status))
        .collect();
    if failed.is_empty() {
        return allowed("its checks passed");
    }
    Verdict::Refused {
        message: format!(
            "the checks of {} failed ({}); it is not built",
            sha.short(),
            failed.join(", ")
        ),
        hint: Some(
            "fix the commit (a new commit runs its checks again), or pass --skip-checks".into(),
        ),
    }
}

fn allowed(reason: &str) -> Verdict {
    Verdict::Allowed {
        reason: reason.into(),
    }
}

/// Publishes an artifact's image before a deploy to `env` when that environment needs it: it
/// runs containers, the config has a `[registry]`, and the image has no registry digest yet
/// (a container environment pulls `repository@digest`). Progress goes to `progress`; `login`
/// is the caller's registry login (resolved here if `None`).
pub async fn publish_if_needed(
    state: &StateDir,
    app: &str,
    version: &str,
    env: &str,
    login: Option<(String, String)>,
    progress: &ProgressTx,
) -> Result<(), Outcome> {
    // Whatever is missing or wrong here, the deploy itself refuses and says so.
    let Some(artifact) = built(state, app, version) else {
        return Ok(());
    };
    let Ok(config) = Config::parse(
        &artifact.config_text,
        &cutover_config::committed_origin(version),
    ) else {
        return Ok(());
    };
    let runs_containers = config
        .environment(env)
        .is_ok_and(|e| e.runtime.is_container());
    let unpublished = artifact
        .image
        .as_ref()
        .is_some_and(|i| i.registry_digest.is_none());
    if !(runs_containers && config.registry.is_some() && unpublished) {
        return Ok(());
    }
    let report = |line: Line| {
        if let Some(p) = crate::convert::progress(line) {
            let _ = progress.send(p);
        }
    };
    cutover_build::publish(&state.repo_root(), state, artifact, login, &report)
        .await
        .map(|_| ())
        .map_err(|e| refused(&e))
}

/// The commit author ("Name <email>") of a built version, who may not approve its release.
pub fn author(state: &StateDir, app: &str, version: &str) -> Option<String> {
    commit_author(&state.repo_root(), &built(state, app, version)?.commit)
}

/// The author ("Name <email>") of a commit.
pub fn commit_author(root: &std::path::Path, sha: &str) -> Option<String> {
    Some(Repo::discover(root).ok()?.commit_info(sha).ok()?.author())
}

/// An error as a refusal: its own message and hint if it is a [`Refusal`], else its chain.
pub fn refused(e: &anyhow::Error) -> Outcome {
    match e.downcast_ref::<Refusal>() {
        Some(r) => Outcome::refused(r.message.clone(), r.hint.clone()),
        None => Outcome::refused(format!("{e:#}"), None),
    }
}
