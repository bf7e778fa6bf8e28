//! What a (re)started server does first — a reload from nothing: upgrade the machine's edge
//! when it is stale (`Edge::refresh`), resolve the releases the previous server left in flight, bring every environment back to its live release through
//! the converge path ([`Engine::heal`]), and reopen monitor windows.

use chrono::Utc;
use cutover_ledger::ReleaseState;
use cutover_runtime::Runtime;

use crate::record::parse_config;
use crate::{Edge, Engine, Prober, Progress, Standby};

impl<R: Runtime, E: Edge, P: Prober> Engine<R, E, P> {
    /// Brings the world and the ledger back in line. Returns what it did, one line each.
    pub async fn reconcile(&self) -> Vec<String> {
        let mut said = Vec::new();
        let (progress, _rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
        // An edge older than this server, or running a binary this one replaced, is upgraded
        // before anything is healed through it.
        self.inner.edge.refresh().await;
        let instances = self.inner.runtime.list().await.unwrap_or_default();

        // Releases the previous server left half-way never took traffic: fail them.
        for release in self.with_ledger(|l| l.in_flight()).unwrap_or_default() {
            let own: Vec<_> = instances
                .iter()
                .filter(|i| i.release == release.id)
                .cloned()
                .collect();
            self.stop_instances(&own).await;
            let message = format!("interrupted: the server stopped while the release was {}; the previous version kept serving", release.state);
            self.transition(release.id, ReleaseState::Failed, Some(&message), &message);
            said.push(format!("release {}: {message}", release.id));
        }

        for env in self.with_ledger(|l| l.environments()).unwrap_or_default() {
            let lock = self.env_lock(&env);
            let _guard = lock.lock().await;
            said.extend(self.heal(&env, false, &progress).await);
            let Ok(Some(live)) = self.with_ledger(|l| l.live(&env)) else {
                continue;
            };
            let Ok(config) = parse_config(&live) else {
                continue;
            };
            let upstreams = self.inner.edge.upstreams(&env).await.unwrap_or_default();
            let here = self.instances_of(&env).await;
            let (serving, others): (Vec<_>, Vec<_>) = here
                .into_iter()
                .partition(|i| upstreams.contains(&i.address));
            let window_open =
                !live.passed_monitor && live.monitor_until.is_some_and(|t| t > Utc::now());
            if !live.passed_monitor && !window_open {
                let _ = self.with_ledger(|l| {
                    l.mark_passed_monitor(
                        live.id,
                        "passed the monitor window (the server was down at its end)",
                    )
                });
            }
            let (standby, orphans): (Vec<_>, Vec<_>) = others
                .into_iter()
                .partition(|i| window_open && i.release != live.id);
            if !orphans.is_empty() {
                said.push(format!(
                    "{env}: stopping {} instance(s) that serve no release",
                    orphans.len()
                ));
                self.retire_later(&env, orphans);
            }
            if window_open && !serving.is_empty() {
                let standby = standby.first().map(|s| Standby {
                    release: s.release,
                    instances: standby.clone(),
                });
                said.push(format!(
                    "{env}: resumed the monitor window of release {}",
                    live.id
                ));
                self.start_monitor(live.clone(), config, serving, standby);
            } else if !standby.is_empty() {
                self.retire_later(&env, standby);
            }
        }
        said
    }
}
