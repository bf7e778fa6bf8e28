//! `cutover prune`, the server's policy: the ledger decides, across every environment at once,
//! what stays. An artifact is kept while it is live anywhere, warm in a monitor window, being
//! deployed, or among the `keep` most recent known-good releases of any environment — so a
//! prune run for staging can never delete production's way back. Then instances of releases
//! that no longer run (left by a server that stopped before it retired them: containers, or
//! Swarm services with their secrets), old images (on the Docker engine: on Swarm, the
//! manager's), artifacts and unpacked releases go, each with the reason it could go.

use std::collections::BTreeMap;

use cutover_api::{Kept, PruneBody, PruneReport, Refusal, Removed};
use cutover_artifact::{Artifact, ArtifactStore};
use cutover_ledger::ReleaseState;

use cutover_runtime::Runtime;

use crate::ServerEngine;

/// The verdict on every artifact of an app.
#[derive(Debug, Clone, Default)]
struct RetentionPlan {
    /// Version → why it stays.
    keep: BTreeMap<String, Vec<String>>,
    /// Artifacts nothing needs any more.
    remove: Vec<Artifact>,
    /// Release folders (unpacked bundles) of releases that no longer run.
    release_dirs: Vec<std::path::PathBuf>,
    /// Image ids of the kept artifacts (identical bytes can back a removed version too).
    kept_images: Vec<String>,
    /// Releases whose instances may run: live, being deployed, warm standbys, and the kept
    /// known-good ones.
    running: Vec<i64>,
}

/// `cutover prune`: removes what the plan says nothing needs (images, artifacts, unpacked
/// releases), or only says so with `dry_run`.
pub async fn run(engine: &ServerEngine, body: &PruneBody) -> anyhow::Result<PruneReport> {
    if body.keep == 0 {
        return Err(Refusal::new(
            "--keep 0 would leave no way back",
            Some("keep at least 1 known-good release per environment".into()),
        )
        .into());
    }
    let store = ArtifactStore::open(&engine.options().state_dir.join("artifacts"))?;
    let plan = plan(engine, &store, &body.app, body.keep)?;
    let instances_removed = remove_leftovers(engine, &plan, body).await;
    let mut removed = Vec::new();
    for artifact in &plan.remove {
        let mut entry = Removed {
            version: artifact.version.clone(),
            images: Vec::new(),
            error: None,
        };
        if let Some(image) = &artifact.image {
            let mut refs = vec![format!("{}:{}", image.repository, artifact.version)];
            if let Some(d) = &image.registry_digest {
                refs.push(format!("{}@{d}", image.repository));
            }
            // Identical bytes can back a kept version too: then only the tag goes.
            let shared = plan.kept_images.contains(&image.id);
            for reference in refs.iter().filter(|r| !shared || !r.contains('@')) {
                if !body.dry_run {
                    let mut result = engine.runtime().remove_image(reference).await;
                    // A leftover instance just removed may still hold the image for a moment
                    // (its engine removes the container after the task stopped).
                    for _ in 0..20 {
                        if result.is_ok() || instances_removed.is_empty() {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        result = engine.runtime().remove_image(reference).await;
                    }
                    if let Err(e) = result {
                        entry.error = Some(e);
                        continue;
                    }
                }
                entry.images.push(reference.clone());
            }
        }
        removed.push(entry);
    }
    let bytes_freed = if body.dry_run {
        0
    } else {
        forget(&store, &plan).unwrap_or(0)
    };
    let kept = plan
        .keep
        .iter()
        .map(|(version, reasons)| Kept {
            version: version.clone(),
            reasons: reasons.clone(),
        })
        .collect();
    Ok(PruneReport {
        kept,
        removed,
        instances_removed,
        release_dirs_removed: plan.release_dirs.len(),
        bytes_freed,
        dry_run: body.dry_run,
    })
}

/// Stops the instances of `body.app` that belong to no release the plan keeps running and that
/// the edge does not route to (on Swarm, their services and secrets go with them); says which,
/// and only says so with `dry_run`.
async fn remove_leftovers(
    engine: &ServerEngine,
    plan: &RetentionPlan,
    body: &PruneBody,
) -> Vec<String> {
    let mut said = Vec::new();
    let instances = engine.runtime().list().await.unwrap_or_default();
    for i in instances {
        if i.app != body.app || plan.running.contains(&i.release) {
            continue;
        }
        if engine
            .serving_instances(&i.env)
            .await
            .iter()
            .any(|s| s.id == i.id)
        {
            continue;
        }
        let line = format!("{} (release {} in {})", i.id, i.release, i.env);
        if body.dry_run {
            said.push(line);
            continue;
        }
        match engine.runtime().stop(&i.id).await {
            Ok(()) => said.push(line),
            Err(e) => said.push(format!("{line}: could not be stopped: {e}")),
        }
    }
    said
}

/// Decides what stays and what goes for `app`, across every environment of the ledger.
fn plan(
    engine: &ServerEngine,
    store: &ArtifactStore,
    app: &str,
    keep: u32,
) -> anyhow::Result<RetentionPlan> {
    let mut plan = RetentionPlan::default();
    let mut why = |version: &str, reason: String| {
        plan.keep
            .entry(version.to_string())
            .or_default()
            .push(reason)
    };
    let mut running: Vec<i64> = Vec::new();
    let mut newest_release = None;
    for env in engine.with_ledger(|l| l.environments())? {
        let history = engine.with_ledger(|l| l.history(&env, usize::MAX / 2))?;
        newest_release = newest_release.max(history.first().map(|r| r.created_at));
        for r in &history {
            match r.state {
                ReleaseState::Live => {
                    why(&r.version, format!("live in {env} (release {})", r.id));
                    running.push(r.id);
                }
                s if s.is_transient() => {
                    why(
                        &r.version,
                        format!("being deployed to {env} (release {})", r.id),
                    );
                    running.push(r.id);
                }
                _ => {}
            }
        }
        let known_good = engine.with_ledger(|l| l.known_good(&env))?;
        for (n, r) in known_good
            .iter()
            .filter(|r| r.state != ReleaseState::Live)
            .take(keep as usize)
            .enumerate()
        {
            why(
                &r.version,
                format!("known-good {} of {keep} in {env} (release {})", n + 1, r.id),
            );
            running.push(r.id);
        }
        let standby = engine.standby_release(&env);
        if let Some(id) = standby {
            if let Some(r) = history.iter().find(|r| r.id == id) {
                why(&r.version, format!("warm standby in {env} (release {id})"));
            }
            running.push(id);
        }
        for r in &history {
            if !running.contains(&r.id) {
                let dir = engine
                    .options()
                    .state_dir
                    .join("releases")
                    .join(&env)
                    .join(r.id.to_string());
                if dir.exists() {
                    plan.release_dirs.push(dir);
                }
            }
        }
    }
    for artifact in store.list(app)? {
        if plan.keep.contains_key(&artifact.version) {
            plan.kept_images.extend(artifact.image.map(|i| i.id));
            continue;
        }
        if newest_release.is_none_or(|newest| artifact.created_at > newest) {
            plan.keep
                .entry(artifact.version.clone())
                .or_default()
                .push("built after the last release: not released yet".into());
            plan.kept_images.extend(artifact.image.map(|i| i.id));
            continue;
        }
        plan.remove.push(artifact);
    }
    plan.running = running;
    Ok(plan)
}

/// Forgets the artifacts of a plan and frees what nothing else refers to. Returns the bytes of
/// bundle blobs freed.
fn forget(store: &ArtifactStore, plan: &RetentionPlan) -> anyhow::Result<u64> {
    for dir in &plan.release_dirs {
        std::fs::remove_dir_all(dir).ok();
    }
    for artifact in &plan.remove {
        store.remove(&artifact.app, &artifact.version)?;
    }
    Ok(store.collect_garbage()?)
}
