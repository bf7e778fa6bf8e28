//! The server's watch over the data plane between deploys: every restart of an instance (its
//! supervisor, its container engine or its Swarm restarted it after a crash or moved it off a
//! lost node) goes into the timeline of its release, and every
//! environment is healed through the converge path ([`Engine::heal`]) when its edge proxy died
//! or its live release's instances are gone — without waiting for a server restart.

use std::collections::HashMap;
use std::time::Duration;

use cutover_runtime::Runtime;

use crate::{Edge, Engine, Prober, Progress};

impl<R: Runtime, E: Edge, P: Prober> Engine<R, E, P> {
    /// Polls the runtime and the proxies every `every`. Runs until the server stops.
    pub async fn watch(&self, every: Duration) {
        let mut seen: HashMap<String, u32> = HashMap::new();
        let watching_since = chrono::Utc::now();
        loop {
            let instances = self.inner.runtime.list().await.unwrap_or_default();
            for instance in &instances {
                let before = seen.insert(instance.id.clone(), instance.restarts);
                // Restarts of an instance older than this watcher were recorded by the server
                // that watched it before.
                let known = before.unwrap_or(if instance.started_at > watching_since {
                    0
                } else {
                    instance.restarts
                });
                if instance.restarts > known {
                    let status = instance
                        .exits
                        .last()
                        .map(|e| e.status.as_str())
                        .unwrap_or("exited");
                    self.event(
                        instance.release,
                        "restart",
                        &format!(
                            "instance {} {status}; it was restarted (restart {})",
                            instance.id, instance.restarts
                        ),
                    );
                }
            }
            seen.retain(|id, _| instances.iter().any(|i| &i.id == id));
            self.heal_all().await;
            tokio::time::sleep(every).await;
        }
    }

    /// Heals every environment that no deploy, rollback or monitor window is busy with (those
    /// judge their own instances).
    async fn heal_all(&self) {
        let (progress, _rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
        for env in self.with_ledger(|l| l.environments()).unwrap_or_default() {
            if self.shutting_down() {
                return;
            }
            // Look first without the lock: a user's command never waits on a look.
            if !self.needs_healing(&env).await {
                continue;
            }
            let Ok(_guard) = self.env_lock(&env).try_lock_owned() else {
                continue;
            };
            let _healing = self.hold_for_healing(&env);
            // An open monitor window judges its instances itself; a dead proxy is still started.
            let edge_only = crate::locked(&self.inner.monitors).contains_key(&env);
            for line in self.heal(&env, edge_only, &progress).await {
                eprintln!("cutover server: {line}");
            }
        }
    }
}
