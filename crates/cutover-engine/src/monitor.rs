//! The monitor window: after cut-over the new release is probed for `monitor`; if it fails
//! `unhealthy_threshold` probes in a row or crashes, traffic goes back to the warm standby
//! (an automatic rollback adds no release: the bad one is marked `rolled-back`). If it holds,
//! it becomes known-good and the standby is drained and stopped.

use chrono::Utc;
use cutover_config::Config;
use cutover_ledger::{Release, ReleaseState};
use cutover_runtime::{InstanceInfo, Runtime};
use tokio::sync::watch;

use crate::converge::{Ending, Goal, Missed, Source};
use crate::instances::Failure;
use crate::record::{parse_config, send};
use crate::{Edge, Engine, MonitorSlot, Outcome, Prober, Progress, ProgressTx, Standby};

impl<R: Runtime, E: Edge, P: Prober> Engine<R, E, P> {
    pub(crate) fn start_monitor(
        &self,
        release: Release,
        config: Config,
        instances: Vec<InstanceInfo>,
        standby: Option<Standby>,
    ) {
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(None);
        let env = release.env.clone();
        {
            let mut monitors = crate::locked(&self.inner.monitors);
            monitors.insert(
                env,
                MonitorSlot {
                    release: release.id,
                    standby,
                    cancel: cancel_tx,
                    done: done_rx,
                },
            );
        }
        let engine = self.clone();
        tokio::spawn(async move {
            let outcome = engine
                .run_monitor(release, config, instances, cancel_rx)
                .await;
            let _ = done_tx.send(Some(outcome));
        });
    }

    async fn run_monitor(
        &self,
        release: Release,
        config: Config,
        instances: Vec<InstanceInfo>,
        mut cancel: watch::Receiver<bool>,
    ) -> Outcome {
        let h = &config.health;
        let check = self.http_check(&config);
        // The ledger has the window's end (the caller's copy may predate it).
        let until = self
            .with_ledger(|l| l.get(release.id))
            .ok()
            .and_then(|r| r.monitor_until)
            .unwrap_or_else(Utc::now);
        let mut fails = vec![0u32; instances.len()];
        let verdict: Option<Failure> = 'watch: loop {
            tokio::select! {
                _ = cancel.changed() => return self.closed_early(release.id),
                _ = tokio::time::sleep(h.interval) => {}
            }
            if Utc::now() >= until {
                break None;
            }
            for (i, instance) in instances.iter().enumerate() {
                if let Some(exit) = self.exited(instance).await {
                    break 'watch Some(
                        self.failure_of(
                            instance,
                            format!("instance {} {exit} during the monitor window", instance.id),
                        )
                        .await,
                    );
                }
                match self.inner.prober.probe(instance.address, &check).await {
                    Ok(()) => fails[i] = 0,
                    Err(f) => {
                        fails[i] += 1;
                        self.event(
                            release.id,
                            "monitor",
                            &format!(
                                "{}: {f} ({}/{})",
                                instance.id, fails[i], h.unhealthy_threshold
                            ),
                        );
                        if fails[i] >= h.unhealthy_threshold {
                            let message = format!(
                                "failed {} health checks in a row during the monitor window; last: {f}",
                                fails[i]
                            );
                            break 'watch Some(self.failure_of(instance, message).await);
                        }
                    }
                }
            }
        };
        // Whatever happens next changes the environment: take its lock (a deploy that holds it
        // closes this window itself).
        let lock = self.env_lock(&release.env);
        let _guard = tokio::select! {
            _ = cancel.changed() => return self.closed_early(release.id),
            guard = lock.lock_owned() => guard,
        };
        let _holding = self.hold(&release.env, release.id, "closing its monitor window");
        let Some(slot) = self.take_slot(&release.env, release.id) else {
            return self.closed_early(release.id);
        };
        match verdict {
            None => {
                let _ = self.with_ledger(|l| {
                    l.mark_passed_monitor(release.id, "passed the monitor window: known-good")
                });
                if let Some(standby) = slot.standby {
                    self.retire_later(&release.env, standby.instances);
                }
                Outcome::done(
                    release.id,
                    format!("release {} passed its monitor window", release.id),
                )
            }
            Some(failure) => {
                self.auto_rollback(&release, instances, slot.standby, failure)
                    .await
            }
        }
    }

    fn closed_early(&self, release: i64) -> Outcome {
        Outcome::done(
            release,
            format!("the monitor window of release {release} was closed early"),
        )
    }

    fn take_slot(&self, env: &str, release: i64) -> Option<MonitorSlot> {
        let mut monitors = crate::locked(&self.inner.monitors);
        if monitors.get(env).map(|m| m.release) == Some(release) {
            monitors.remove(env)
        } else {
            None
        }
    }

    /// Puts the environment back on the previous known-good: the warm standby if it still
    /// runs, else a fresh start of the rollback target.
    async fn auto_rollback(
        &self,
        bad: &Release,
        bad_instances: Vec<InstanceInfo>,
        standby: Option<Standby>,
        failure: Failure,
    ) -> Outcome {
        let env = &bad.env;
        let (progress, _rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
        let target = match &standby {
            Some(s) => self.with_ledger(|l| l.get(s.release)).ok(),
            None => self.with_ledger(|l| l.rollback_target(env)).ok().flatten(),
        };
        let Some(target) = target else {
            self.event(
                bad.id,
                "rollback-failed",
                &format!(
                    "{}; there is no known-good release to go back to, so it keeps serving",
                    failure.message
                ),
            );
            return Outcome::failed_unrestored(
                Some(bad.id),
                format!(
                    "release {} failed: {}; no known-good release to roll back to",
                    bad.id, failure.message
                ),
                failure.logs,
            );
        };
        let warm = match standby {
            Some(s) if self.all_running(&s.instances).await => Some(s.instances),
            Some(s) => {
                self.stop_instances(&s.instances).await;
                None
            }
            None => None,
        };
        let config = match parse_config(&target) {
            Ok(c) => c,
            Err(e) => {
                return Outcome::failed_unrestored(
                    Some(bad.id),
                    format!(
                        "release {} failed: {}; release {} cannot be restored: {e}",
                        bad.id, failure.message, target.id
                    ),
                    failure.logs,
                )
            }
        };
        let how = if warm.is_some() {
            " (warm standby)"
        } else {
            ""
        };
        let goal = Goal {
            release: target.clone(),
            config,
            source: warm.map(Source::Warm).unwrap_or(Source::Fresh),
            new: false,
            ending: Some(Ending {
                release: bad.clone(),
                state: ReleaseState::RolledBack,
                reason: Some(failure.message.clone()),
                message: format!(
                    "automatic rollback to release {}: {}",
                    target.id, failure.message
                ),
            }),
            why: format!(
                "restored by the automatic rollback of release {}{how}",
                bad.id
            ),
        };
        match self.converge(&goal, &progress).await {
            Ok(_) => {
                self.retire_later(env, bad_instances);
                Outcome::failed_restored(Some(bad.id), format!("release {} failed during its monitor window: {}; release {} ({}) serves {env} again", bad.id, failure.message, target.id, target.short_version()), failure.logs)
            }
            Err(Missed::Refused(e) | Missed::Failed { failure: e, .. }) => {
                // Nothing better exists: the bad release keeps serving rather than nothing.
                self.event(
                    bad.id,
                    "rollback-failed",
                    &format!(
                        "restoring release {} failed ({}); kept serving",
                        target.id, e.message
                    ),
                );
                Outcome::failed_unrestored(
                    Some(bad.id),
                    format!(
                        "release {} failed: {}; restoring release {} also failed: {}",
                        bad.id, failure.message, target.id, e.message
                    ),
                    failure.logs,
                )
            }
        }
    }

    async fn all_running(&self, instances: &[InstanceInfo]) -> bool {
        for instance in instances {
            if self.exited(instance).await.is_some() {
                return false;
            }
        }
        true
    }

    /// Closes the environment's open monitor window. `pass`: a newer deploy closes it and the
    /// monitored release counts as known-good; its standby is retired.
    pub(crate) async fn close_monitor_window(&self, env: &str, pass: bool, progress: &ProgressTx) {
        let slot = {
            let mut monitors = crate::locked(&self.inner.monitors);
            monitors.remove(env)
        };
        let Some(slot) = slot else { return };
        let _ = slot.cancel.send(true);
        if pass {
            let still_live = self
                .with_ledger(|l| l.get(slot.release))
                .map(|r| r.state == ReleaseState::Live)
                .unwrap_or(false);
            if still_live {
                let _ = self.with_ledger(|l| {
                    l.mark_passed_monitor(
                        slot.release,
                        "monitor window closed early by a newer deploy: counts as passed",
                    )
                });
                send(
                    progress,
                    Progress::detail(format!(
                        "closed the monitor window of release {} (counts as passed)",
                        slot.release
                    )),
                );
            }
        }
        if let Some(standby) = slot.standby {
            self.retire_later(env, standby.instances);
        }
    }
}
