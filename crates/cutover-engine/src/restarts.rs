//! The server's watch over the data plane between deploys: every restart of an instance (its
//! supervisor restarted it after a crash) goes into the timeline of its release, and an edge
//! proxy that died is started again (it reloads its routes from disk).

use std::collections::HashMap;
use std::time::Duration;

use cutover_runtime::Runtime;

use crate::{Edge, Engine, Prober};

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
                            "instance {} {status}; its supervisor restarted it (restart {})",
                            instance.id, instance.restarts
                        ),
                    );
                }
            }
            seen.retain(|id, _| instances.iter().any(|i| &i.id == id));
            self.restart_dead_proxies().await;
            tokio::time::sleep(every).await;
        }
    }
}

impl<R: Runtime, E: Edge, P: Prober> Engine<R, E, P> {
    async fn restart_dead_proxies(&self) {
        for env in self.with_ledger(|l| l.environments()).unwrap_or_default() {
            let Ok(Some(live)) = self.with_ledger(|l| l.live(&env)) else {
                continue;
            };
            if self.inner.edge.upstreams(&env).await.is_some() {
                continue;
            }
            let Ok(config) = crate::release::parse_config(&live) else {
                continue;
            };
            let Ok(env_cfg) = config.environment(&env) else {
                continue;
            };
            match self.inner.edge.ensure(&env, env_cfg.listen).await {
                Ok(()) => self.event(
                    live.id,
                    "proxy",
                    &format!("the edge proxy of {env} had stopped; started it again"),
                ),
                Err(e) => self.event(
                    live.id,
                    "proxy",
                    &format!("the edge proxy of {env} had stopped and cannot start: {e}"),
                ),
            }
        }
    }
}
