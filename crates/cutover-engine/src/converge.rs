//! The one converge path. Every change of which release serves an environment goes through
//! [`Engine::converge`]: a deploy, a manual rollback, an automatic rollback, the restore after a
//! failed recreate, the start-up reconciliation and the watcher's healing between deploys. It
//! moves an environment from what is to what should be:
//!
//! 1. the edge proxy runs on the environment's address;
//! 2. the release that should serve has verified instances: warm ones that are still healthy,
//!    or fresh ones (placed, started as the strategy says, health-checked);
//! 3. the ledger is written (the release live, the one it takes over from ended), then the edge
//!    switches; a switch the edge refuses is reverted in the ledger and the fresh instances stop.
//!
//! Start-up is a reload from nothing: [`Engine::heal`] compares the ledger's live release with
//! what the edge routes to and what runs, and converges when they disagree.

use std::net::SocketAddr;

use chrono::Utc;
use cutover_config::Config;
use cutover_ledger::{Release, ReleaseState, Transition};
use cutover_runtime::{InstanceInfo, InstanceState, Runtime};

use crate::instances::{failure, join, Failure};
use crate::record::{parse_config, send};
use crate::{strategy, Edge, Engine, Outcome, Prober, Progress, ProgressTx, Site, Standby};

/// What a cut-over does to the release it leaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Leaving {
    /// A deploy: the old release is superseded and stays warm through the monitor window.
    Supersede,
    /// A rollback: the old release is rolled back from and stops at once.
    RollBack,
}

/// Where the instances of the release that should serve come from.
pub(crate) enum Source {
    /// Instances that already run (a warm standby, or instances that outlived a crash): checked
    /// once more, and replaced by fresh ones if any is unwell.
    Warm(Vec<InstanceInfo>),
    /// New instances, placed, started and verified.
    Fresh,
}

/// What becomes of the release that serves now once the goal's release does.
pub(crate) struct Ending {
    pub release: Release,
    pub state: ReleaseState,
    pub reason: Option<String>,
    pub message: String,
}

/// What should serve an environment.
pub(crate) struct Goal {
    pub release: Release,
    pub config: Config,
    pub source: Source,
    /// A new release writes its own way (starting → verifying → live). A release brought back
    /// (restored, healed, the target of an automatic rollback) is only marked live again.
    pub new: bool,
    pub ending: Option<Ending>,
    /// The ledger's words for the switch, followed by " on <addresses>".
    pub why: String,
}

/// Why a converge did not get there.
pub(crate) enum Missed {
    /// Refused before any instance started; nothing changed.
    Refused(Failure),
    /// Instances started and failed their check, or the edge refused the switch. `stopped`: the
    /// strategy had stopped the serving instances first, so the caller must restore.
    Failed { failure: Failure, stopped: bool },
}

impl<R: Runtime, E: Edge, P: Prober> Engine<R, E, P> {
    /// The one path: makes `goal.release` serve its environment. Returns its instances.
    pub(crate) fn converge<'a>(
        &'a self,
        goal: &'a Goal,
        progress: &'a ProgressTx,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Vec<InstanceInfo>, Missed>> + Send + 'a>,
    > {
        Box::pin(async move {
            let release = &goal.release;
            let env = &release.env;
            let env_cfg = goal
                .config
                .environment(env)
                .map_err(|e| Missed::Refused(failure(e.to_string())))?
                .clone();
            let site = Site::of(&goal.config, &env_cfg, &self.inner.options.repo_root);
            send(
                progress,
                Progress::step(format!("edge for {env} on {}", site.describe())),
            );
            if let Err(e) = self.inner.edge.ensure(env, &site).await {
                return Err(Missed::Refused(Failure {
                    message: format!(
                        "the edge cannot serve {env} on {}: {}",
                        site.describe(),
                        e.message
                    ),
                    hint: Some(e.hint.unwrap_or_else(|| {
                        format!(
                            "free {} or change `listen`/`hosts` of [environments.{env}]",
                            env_cfg.listen
                        )
                    })),
                    logs: Vec::new(),
                }));
            }
            if let Source::Warm(warm) = &goal.source {
                if goal.new {
                    let of = warm.first().map(|i| i.release).unwrap_or_default();
                    self.transition(
                        release.id,
                        ReleaseState::Starting,
                        None,
                        &format!("reusing the warm instances of release {of}"),
                    );
                    self.transition(
                        release.id,
                        ReleaseState::Verifying,
                        None,
                        "checking the warm instances",
                    );
                }
                if self.still_healthy(warm, &goal.config, progress).await {
                    self.switch(goal, warm, false)
                        .await
                        .map_err(|failure| Missed::Failed {
                            failure,
                            stopped: false,
                        })?;
                    return Ok(warm.clone());
                }
                self.stop_instances(warm).await;
            }
            if self.shutting_down() {
                return Err(Missed::Refused(failure(
                    "the server is shutting down (`cutover down`): nothing new starts",
                )));
            }
            // Getting the artifact in place (unpack, or fetch) is part of
            // refusing: no instance started, so a failure here is exit 1 and `failed`.
            let placement = self
                .place(release, &goal.config, &env_cfg, progress)
                .await
                .map_err(Missed::Refused)?;
            let serving = self.serving_instances(env).await;
            let stopped = strategy::of(env_cfg.strategy).stops_first() && !serving.is_empty();
            if stopped {
                let message = format!(
                    "recreate: stopping the {} running instance(s) first; {env} does not serve until the new version is up (by design)",
                    serving.len()
                );
                self.event(release.id, "recreate", &message);
                send(progress, Progress::step(message));
                self.stop_instances(&serving).await;
            }
            let instances = self
                .bring_up(release, &goal.config, goal.new, progress, placement)
                .await
                .map_err(|failure| Missed::Failed { failure, stopped })?;
            if let Err(failure) = self.switch(goal, &instances, true).await {
                return Err(Missed::Failed { failure, stopped });
            }
            Ok(instances)
        })
    }

    /// Whether instances that already run still pass one health check each.
    async fn still_healthy(
        &self,
        instances: &[InstanceInfo],
        config: &Config,
        progress: &ProgressTx,
    ) -> bool {
        if instances.is_empty() {
            return false;
        }
        let check = self.http_check(config);
        for instance in instances {
            if let Some(exit) = self.exited(instance).await {
                send(
                    progress,
                    Progress::detail(format!(
                        "warm instance {} {exit}; starting fresh instances",
                        instance.id
                    )),
                );
                return false;
            }
            if let Err(f) = self.inner.prober.probe(instance.address, &check).await {
                send(
                    progress,
                    Progress::detail(format!(
                        "warm instance {} is not healthy ({f}); starting fresh instances",
                        instance.id
                    )),
                );
                return false;
            }
        }
        true
    }

    /// Ledger first, then the edge. A refused switch is reverted: the release that served is
    /// live again, a release brought back returns to what it was, and fresh instances stop.
    async fn switch(
        &self,
        goal: &Goal,
        instances: &[InstanceInfo],
        fresh: bool,
    ) -> Result<(), Failure> {
        let release = &goal.release;
        let env = &release.env;
        let addrs: Vec<SocketAddr> = instances.iter().map(|i| i.address).collect();
        let before = self
            .with_ledger(|l| l.get(release.id))
            .map(|r| r.state)
            .unwrap_or(release.state);
        let why = format!("{} on {}", goal.why, join(&addrs));
        let mut cut_over = vec![Transition {
            id: release.id,
            state: ReleaseState::Live,
            reason: None,
            message: &why,
        }];
        if let Some(ending) = &goal.ending {
            cut_over.push(Transition {
                id: ending.release.id,
                state: ending.state,
                reason: ending.reason.as_deref(),
                message: &ending.message,
            });
        }
        self.transition_all(&cut_over);
        let site = goal
            .config
            .environment(env)
            .map(|e| Site::of(&goal.config, e, &self.inner.options.repo_root))
            .map_err(|e| e.to_string());
        let mut switched = match &site {
            Ok(site) => {
                self.inner
                    .edge
                    .switch(env, release.id, instances, site)
                    .await
            }
            Err(e) => Err(e.clone()),
        };
        if let (Err(_), Ok(site)) = (&switched, &site) {
            // The edge may have died under us: start it again (it reloads its routes) and
            // try once more before giving up.
            if self.inner.edge.ensure(env, site).await.is_ok() {
                switched = self
                    .inner
                    .edge
                    .switch(env, release.id, instances, site)
                    .await;
            }
        }
        let Err(e) = switched else {
            return Ok(());
        };
        let message = format!("the edge proxy refused the switch: {e}");
        // Back in one transaction, so that no crash leaves two releases live.
        let not_restored = if goal.new {
            format!("not cut over: {message}")
        } else {
            format!("not restored: {message}")
        };
        let mut revert = Vec::new();
        if let Some(ending) = &goal.ending {
            revert.push(Transition {
                id: ending.release.id,
                state: ReleaseState::Live,
                reason: None,
                message: "kept serving: the switch failed",
            });
        }
        if before != ReleaseState::Live {
            revert.push(Transition {
                id: release.id,
                state: before,
                reason: None,
                message: &not_restored,
            });
        }
        self.transition_all(&revert);
        if fresh {
            self.stop_instances(instances).await;
        }
        Err(failure(message))
    }

    /// Deploy, rollback and approval after their gates, with the environment's lock held and
    /// the release recorded: converge to it, then open its monitor window — or, if it failed,
    /// make sure the previous version serves.
    pub(crate) async fn roll_out(
        &self,
        release: Release,
        config: Config,
        leaving: Leaving,
        source: Source,
        progress: &ProgressTx,
    ) -> Outcome {
        let env = release.env.clone();
        if config.environment(&env).is_err() {
            return self.refuse(
                &release,
                format!("environment {env} is not in the release's config"),
                None,
            );
        }
        self.clear_abort(&env);
        // A new deploy closes the open monitor window: the monitored release counts as passed.
        self.close_monitor_window(&env, leaving == Leaving::Supersede, progress)
            .await;
        let live = self.with_ledger(|l| l.live(&env)).ok().flatten();
        let serving = self.serving_instances(&env).await;
        let ending = live.clone().map(|live| match leaving {
            Leaving::Supersede => Ending {
                message: format!("superseded by release {}", release.id),
                release: live,
                state: ReleaseState::Superseded,
                reason: None,
            },
            Leaving::RollBack => Ending {
                message: format!(
                    "rolled back: release {} restores release {}",
                    release.id,
                    release.restored_from.unwrap_or_default()
                ),
                release: live,
                state: ReleaseState::RolledBack,
                reason: Some(format!("rolled back by {}", release.requested_by)),
            },
        });
        let goal = Goal {
            release: release.clone(),
            config,
            source,
            new: true,
            ending,
            why: format!("cut over: the edge proxy sends {env}'s traffic to"),
        };
        match self.converge(&goal, progress).await {
            Ok(instances) => {
                let old = serving
                    .into_iter()
                    .filter(|o| !instances.iter().any(|i| i.id == o.id))
                    .collect();
                self.settle(
                    &release,
                    &goal.config,
                    instances,
                    live,
                    old,
                    leaving,
                    progress,
                )
            }
            Err(Missed::Refused(f)) => self.refuse(&release, f.message, f.hint),
            Err(Missed::Failed { failure, stopped }) => {
                self.fail_release(&release, live, stopped, failure, progress)
                    .await
            }
        }
    }

    /// After a failed bring-up or switch: the release is rolled back, the previous version
    /// serves — untouched, or restored through the converge path if the strategy had stopped it.
    async fn fail_release(
        &self,
        release: &Release,
        live: Option<Release>,
        stopped_live: bool,
        failure: Failure,
        progress: &ProgressTx,
    ) -> Outcome {
        let env = &release.env;
        self.transition(
            release.id,
            ReleaseState::RolledBack,
            Some(&failure.message),
            &format!("found bad: {}", failure.message),
        );
        // What to do about the failure (a runtime's hint) follows the outcome.
        let hint = failure.hint.clone();
        let hinted = |o: Outcome| match &hint {
            Some(h) => o.with_hint(h.clone()),
            None => o,
        };
        let Some(live) = live else {
            return hinted(Outcome::failed_restored(
                Some(release.id),
                format!(
                    "release {} failed: {}; nothing was live in {env} before",
                    release.id, failure.message
                ),
                failure.logs,
            ));
        };
        if !stopped_live {
            let message = format!(
                "release {} failed: {}; release {} ({}) kept serving {env}",
                release.id,
                failure.message,
                live.id,
                live.short_version()
            );
            return hinted(Outcome::failed_restored(
                Some(release.id),
                message,
                failure.logs,
            ));
        }
        send(
            progress,
            Progress::step(format!(
                "restoring release {} ({})",
                live.id,
                live.short_version()
            )),
        );
        match self.restore(&live, progress).await {
            Ok(()) => {
                self.event(
                    live.id,
                    "restored",
                    &format!("restored after release {} failed", release.id),
                );
                hinted(Outcome::failed_restored(
                    Some(release.id),
                    format!(
                        "release {} failed: {}; release {} ({}) was restored and serves {env}",
                        release.id,
                        failure.message,
                        live.id,
                        live.short_version()
                    ),
                    failure.logs,
                ))
            }
            Err(restore_failure) => {
                self.event(live.id, "restore-failed", &restore_failure.message);
                Outcome::failed_unrestored(Some(release.id), format!("release {} failed: {}; restoring release {} ALSO failed: {}; {env} is not serving", release.id, failure.message, live.id, restore_failure.message), failure.logs)
            }
        }
    }

    /// Starts a known-good release again (its instances are gone) and points traffic at it.
    pub(crate) async fn restore(
        &self,
        target: &Release,
        progress: &ProgressTx,
    ) -> Result<(), Failure> {
        let config = parse_config(target).map_err(failure)?;
        let goal = Goal {
            release: target.clone(),
            config,
            source: Source::Fresh,
            new: false,
            ending: None,
            why: "restored".into(),
        };
        match self.converge(&goal, progress).await {
            Ok(_) => Ok(()),
            Err(Missed::Refused(f) | Missed::Failed { failure: f, .. }) => Err(f),
        }
    }

    /// After the switch: opens the monitor window with the old instances kept warm (or retires
    /// them at once after a rollback or when the strategy keeps no standby).
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        release: &Release,
        config: &Config,
        instances: Vec<InstanceInfo>,
        live: Option<Release>,
        old: Vec<InstanceInfo>,
        leaving: Leaving,
        progress: &ProgressTx,
    ) -> Outcome {
        let env = &release.env;
        let env_cfg = config.environment(env).ok();
        send(
            progress,
            Progress::step(format!(
                "live: release {} ({}) serves {env} on {}",
                release.id,
                release.short_version(),
                env_cfg.map(|e| e.listen.to_string()).unwrap_or_default()
            )),
        );
        let monitor = config.health.monitor;
        let until = (!monitor.is_zero())
            .then(|| Utc::now() + chrono::Duration::from_std(monitor).unwrap_or_default());
        let _ = self.with_ledger(|l| l.set_monitor_until(release.id, until));
        let keeps = env_cfg.is_some_and(|e| strategy::of(e.strategy).keeps_standby());
        let standby = match (leaving, live) {
            (Leaving::Supersede, Some(live)) if keeps && !old.is_empty() => Some(Standby {
                release: live.id,
                instances: old,
            }),
            _ => {
                self.retire_later(env, old);
                None
            }
        };
        match until {
            Some(until) => {
                let warm = if standby.is_some() {
                    "; the previous version stays warm"
                } else {
                    ""
                };
                send(
                    progress,
                    Progress::step(format!(
                        "monitoring until {} ({} s){warm}",
                        until.format("%H:%M:%S"),
                        monitor.as_secs()
                    )),
                );
                // The monitor reads the window's end from the release: hand it the row as it
                // is now, not the copy from before `set_monitor_until`.
                let mut monitored = release.clone();
                monitored.monitor_until = Some(until);
                self.start_monitor(monitored, config.clone(), instances, standby);
            }
            None => {
                let _ = self.with_ledger(|l| {
                    l.mark_passed_monitor(release.id, "no monitor window configured")
                });
                if let Some(standby) = standby {
                    self.retire_later(env, standby.instances);
                }
            }
        }
        Outcome::done(
            release.id,
            format!(
                "release {} ({}) is live in {env}",
                release.id,
                release.short_version()
            ),
        )
    }

    /// Whether `env` needs [`Self::heal`]: it has a live release, and its edge proxy is down or
    /// routes to something that is not a supervised instance of that release. Takes no lock.
    pub(crate) async fn needs_healing(&self, env: &str) -> bool {
        let Ok(Some(live)) = self.with_ledger(|l| l.live(env)) else {
            return false;
        };
        let Some(upstreams) = self.inner.edge.upstreams(env).await else {
            return true;
        };
        let supervised: Vec<InstanceInfo> = self
            .instances_of(env)
            .await
            .into_iter()
            .filter(|i| i.release == live.id && is_supervised(i))
            .collect();
        !is_sound(&upstreams, &supervised)
    }

    /// Every instance the runtime has in `env`.
    pub(crate) async fn instances_of(&self, env: &str) -> Vec<InstanceInfo> {
        let all = self.inner.runtime.list().await.unwrap_or_default();
        all.into_iter().filter(|i| i.env == env).collect()
    }

    /// Makes sure the live release of `env` serves it: its edge proxy runs, and every upstream
    /// it routes to is a supervised instance of that release. If not, converges to it: its
    /// instances that still run if they are healthy and enough, else fresh ones. Returns what
    /// it did, a line each. The caller holds the environment's lock. `edge_only`: only start a
    /// dead edge proxy (an open monitor window judges the instances itself).
    pub(crate) async fn heal(
        &self,
        env: &str,
        edge_only: bool,
        progress: &ProgressTx,
    ) -> Vec<String> {
        let mut said = Vec::new();
        let Ok(Some(live)) = self.with_ledger(|l| l.live(env)) else {
            return said;
        };
        let Ok(config) = parse_config(&live) else {
            return said;
        };
        let Ok(env_cfg) = config.environment(env).cloned() else {
            return said;
        };
        if self.inner.edge.upstreams(env).await.is_none() {
            match self
                .inner
                .edge
                .ensure(
                    env,
                    &Site::of(&config, &env_cfg, &self.inner.options.repo_root),
                )
                .await
            {
                Ok(()) => {
                    let message = format!("the edge proxy of {env} had stopped; started it again");
                    self.event(live.id, "proxy", &message);
                    said.push(format!("{env}: {message}"));
                }
                Err(e) => {
                    let message =
                        format!("the edge proxy of {env} had stopped and cannot start: {e}");
                    self.event(live.id, "proxy", &message);
                    said.push(format!("{env}: {message}"));
                    return said;
                }
            }
        }
        if edge_only {
            return said;
        }
        let upstreams = self.inner.edge.upstreams(env).await.unwrap_or_default();
        let instances = self.inner.runtime.list().await.unwrap_or_default();
        let supervised: Vec<InstanceInfo> = instances
            .iter()
            .filter(|i| i.env == env && i.release == live.id && is_supervised(i))
            .cloned()
            .collect();
        if is_sound(&upstreams, &supervised) {
            return said;
        }
        let routed: Vec<InstanceInfo> = instances
            .iter()
            .filter(|i| i.env == env && upstreams.contains(&i.address))
            .cloned()
            .collect();
        let enough = supervised.len() >= env_cfg.instances as usize;
        let goal = Goal {
            release: live.clone(),
            config,
            source: if enough {
                Source::Warm(supervised.clone())
            } else {
                Source::Fresh
            },
            new: false,
            ending: None,
            why: "healed: the edge proxy routes to the release's running instances".into(),
        };
        match self.converge(&goal, progress).await {
            Ok(now) => {
                let message = format!(
                    "{env}: release {} ({}) serves again on {}",
                    live.id,
                    live.short_version(),
                    join(&now.iter().map(|i| i.address).collect::<Vec<_>>())
                );
                said.push(message);
                let gone: Vec<InstanceInfo> = routed
                    .into_iter()
                    .filter(|r| !now.iter().any(|i| i.id == r.id))
                    .collect();
                self.retire_later(env, gone);
            }
            Err(Missed::Refused(f) | Missed::Failed { failure: f, .. }) => {
                let message = format!("could not bring release {} back: {}", live.id, f.message);
                self.event(live.id, "heal-failed", &message);
                said.push(format!("{env}: {message}"));
            }
        }
        said
    }
}

/// Whether every upstream the edge routes to is a supervised instance of the live release.
fn is_sound(upstreams: &[SocketAddr], supervised: &[InstanceInfo]) -> bool {
    !upstreams.is_empty()
        && upstreams
            .iter()
            .all(|u| supervised.iter().any(|i| i.address == *u))
}

/// Whether a supervisor (the runtime's own, or its engine) looks after the instance: it runs, or is
/// being restarted after a crash.
fn is_supervised(instance: &InstanceInfo) -> bool {
    matches!(
        instance.state,
        InstanceState::Running | InstanceState::Starting | InstanceState::Restarting
    )
}
