//! What `cutover prune` may remove. The ledger decides, across every environment at once: an
//! artifact is kept while it is live anywhere, warm in a monitor window, being deployed, or
//! among the `keep` most recent known-good releases of any environment — so a prune run for
//! staging can never delete production's way back.

use std::collections::BTreeMap;

use cutover_artifact::Artifact;
use cutover_ledger::ReleaseState;
use cutover_runtime::Runtime;
use serde::{Deserialize, Serialize};

use crate::{Edge, Engine, Prober};

/// The verdict on every artifact of an app.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RetentionPlan {
    /// Version → why it stays.
    pub keep: BTreeMap<String, Vec<String>>,
    /// Artifacts nothing needs any more.
    pub remove: Vec<Artifact>,
    /// Release folders (unpacked bundles) of releases that no longer run.
    pub release_dirs: Vec<std::path::PathBuf>,
    /// Image ids of the kept artifacts (identical bytes can back a removed version too).
    pub kept_images: Vec<String>,
}

impl<R: Runtime, E: Edge, P: Prober> Engine<R, E, P> {
    pub fn retention_plan(&self, app: &str, keep: u32) -> anyhow::Result<RetentionPlan> {
        let mut plan = RetentionPlan::default();
        let mut why = |version: &str, reason: String| {
            plan.keep
                .entry(version.to_string())
                .or_default()
                .push(reason)
        };
        let mut running: Vec<i64> = Vec::new();
        let mut newest_release = None;
        for env in self.with_ledger(|l| l.environments())? {
            let history = self.with_ledger(|l| l.history(&env, usize::MAX / 2))?;
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
            let known_good = self.with_ledger(|l| l.known_good(&env))?;
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
            let standby = crate::locked(&self.inner.monitors)
                .get(&env)
                .and_then(|m| m.standby.as_ref().map(|s| s.release));
            if let Some(id) = standby {
                if let Some(r) = history.iter().find(|r| r.id == id) {
                    why(&r.version, format!("warm standby in {env} (release {id})"));
                }
                running.push(id);
            }
            for r in &history {
                if !running.contains(&r.id) {
                    let dir = self
                        .inner
                        .options
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
        for artifact in self.inner.store.list(app)? {
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
        Ok(plan)
    }

    /// Forgets the artifacts of a plan and frees what nothing else refers to. Returns the
    /// bytes of bundle blobs freed. (Images are the container engine's to remove.)
    pub fn forget(&self, plan: &RetentionPlan) -> anyhow::Result<u64> {
        for dir in &plan.release_dirs {
            std::fs::remove_dir_all(dir).ok();
        }
        for artifact in &plan.remove {
            self.inner.store.remove(&artifact.app, &artifact.version)?;
        }
        Ok(self.inner.store.collect_garbage()?)
    }
}
