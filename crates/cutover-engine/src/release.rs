//! Deploy and rollback: lock the environment, record the release, bring its instances up,
//! verify them, cut over or restore.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use cutover_config::{Config, Strategy};
use cutover_health::HttpCheck;
use cutover_ledger::{NewRelease, Release, ReleaseKind, ReleaseState, Snapshot};
use cutover_runtime::{free_port, ImagePull, InstanceInfo, InstanceSpec, InstanceState, Runtime};
use tokio::time::Instant;

use crate::{
    DeployRequest, Edge, Engine, Outcome, Prober, Progress, ProgressTx, RollbackRequest, Standby,
};

/// Why a release's instances could not be brought up, with the failing instance's output.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub message: String,
    pub logs: Vec<String>,
}

/// What a cut-over does to the release it leaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Leaving {
    /// A deploy: the old release is superseded and stays warm through the monitor window.
    Supersede,
    /// A rollback: the old release is rolled back from and stops at once.
    RollBack,
}

const LOG_LINES: usize = 20;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn send(progress: &ProgressTx, p: Progress) {
    let _ = progress.send(p);
}

pub(crate) fn parse_config(release: &Release) -> Result<Config, String> {
    Config::parse(
        &release.snapshot.config_text,
        &cutover_config::committed_origin(&release.version),
    )
    .map_err(|e| e.to_string())
}

/// Clears the environment's holder note when dropped.
pub(crate) struct Holding<R, E, P> {
    engine: Engine<R, E, P>,
    env: String,
}

impl<R, E, P> Drop for Holding<R, E, P> {
    fn drop(&mut self) {
        crate::locked(&self.engine.inner.holders).remove(&self.env);
    }
}

impl<R: Runtime, E: Edge, P: Prober> Engine<R, E, P> {
    /// Makes `req.version` live in `req.env`.
    pub async fn deploy(&self, req: DeployRequest, progress: &ProgressTx) -> Outcome {
        let artifact = match self.inner.store.get(&req.app, &req.version) {
            Ok(Some(a)) => a,
            Ok(None) => {
                return Outcome::refused(
                    format!("artifact {}:{} is not built", req.app, req.version),
                    Some(format!("build it first: cutover build {}", req.version)),
                )
            }
            Err(e) => return Outcome::refused(e.to_string(), None),
        };
        let config = match Config::parse(
            &artifact.config_text,
            &cutover_config::committed_origin(&req.version),
        ) {
            Ok(c) => c,
            Err(e) => {
                return Outcome::refused(
                    format!(
                        "the committed config of {} is invalid:\n{e}",
                        short(&req.version)
                    ),
                    None,
                )
            }
        };
        let env_cfg = match config.environment(&req.env) {
            Ok(e) => e.clone(),
            Err(e) => return Outcome::refused(e.to_string(), None),
        };
        // What the release runs is identified by the image's registry digest on containers.
        let digest = if env_cfg.runtime.is_container() {
            match (&artifact.image, &config.registry) {
                (None, _) => return Outcome::refused(
                    format!(
                        "artifact {}:{} has no image, but {} runs containers",
                        req.app,
                        short(&req.version),
                        req.env
                    ),
                    Some(
                        "add [build] dockerfile to cutover.toml, commit, and deploy the new commit"
                            .into(),
                    ),
                ),
                (Some(image), Some(_)) => match &image.registry_digest {
                    Some(d) => d.clone(),
                    None => {
                        return Outcome::refused(
                            format!(
                                "image {}:{} was never published",
                                image.repository, req.version
                            ),
                            Some(format!("publish it first: cutover publish {}", req.version)),
                        )
                    }
                },
                (Some(image), None) => image.id.clone(),
            }
        } else {
            artifact.digest.clone()
        };
        let overrides: Vec<(String, String)> = req.overrides.clone().into_iter().collect();
        if let Err(e) = config.check_overrides(&overrides) {
            return Outcome::refused(e.to_string(), None);
        }
        // The CLI resolves secrets where the deploy is asked for; a pipeline run or a webhook
        // resolves them here, in the server's environment.
        let mut req = req;
        if config.secrets.keys().any(|k| !req.secrets.contains_key(k)) {
            match config.resolve_secrets(&self.inner.options.repo_root) {
                Ok(values) => req.secrets = values,
                Err(e) => return Outcome::refused(e.to_string(), None),
            }
        }
        if let Err(outcome) = self.check_gates(&req, &env_cfg) {
            return outcome;
        }
        let _guard = match self.lock_env(&req.env, req.queue, progress).await {
            Ok(g) => g,
            Err(outcome) => return outcome,
        };
        let secrets_hashed = match self.with_ledger(|l| l.hash_secrets(&req.secrets)) {
            Ok(h) => h,
            Err(e) => return Outcome::refused(e.to_string(), None),
        };
        let new = NewRelease {
            app: req.app.clone(),
            env: req.env.clone(),
            version: req.version.clone(),
            artifact: format!("{}:{}", req.app, req.version),
            digest,
            snapshot: Snapshot {
                config_text: artifact.config_text.clone(),
                overrides: req.overrides.clone(),
                secrets: secrets_hashed,
            },
            kind: ReleaseKind::Deploy,
            restored_from: None,
            requested_by: req.requested_by.clone(),
            trigger: req.trigger.clone(),
            author: req.author.clone(),
        };
        let release = match self.with_ledger(|l| l.create_release(&new)) {
            Ok(r) => r,
            Err(e) => return Outcome::refused(e.to_string(), None),
        };
        if req.skip_checks {
            self.event(
                release.id,
                "checks",
                &format!("checks skipped (--skip-checks) by {}", req.requested_by),
            );
        }
        if env_cfg.approval == cutover_config::Approval::Manual {
            if !req.is_person() {
                return self.park(&release, &env_cfg, req.secrets);
            }
            // A person who deploys is the human click.
            let _ = self.with_ledger(|l| l.approve(release.id, &req.requested_by));
        }
        send(
            progress,
            Progress::step(format!(
                "release {} created: {} → {}",
                release.id, release.artifact, release.env
            )),
        );
        self.remember(release.id, req.secrets, req.registry_login);
        let _holding = self.hold(&release.env, release.id, "being deployed");
        self.roll_out(release.clone(), config, Leaving::Supersede, progress)
            .await
    }

    /// Goes back to the rollback target (or the known-good release named by `req.to`).
    pub async fn rollback(&self, req: RollbackRequest, progress: &ProgressTx) -> Outcome {
        let _guard = match self.lock_env(&req.env, req.queue, progress).await {
            Ok(g) => g,
            Err(outcome) => return outcome,
        };
        let target = match self.rollback_target(&req.env, req.to.as_deref()) {
            Ok(t) => t,
            Err(outcome) => return outcome,
        };
        let config = match parse_config(&target) {
            Ok(c) => c,
            Err(e) => return Outcome::refused(e, None),
        };
        let secrets = match self.secrets_for(&target, &config, req.secrets) {
            Ok(s) => s,
            Err(e) => return Outcome::refused(e, None),
        };
        let secrets_hashed = self
            .with_ledger(|l| l.hash_secrets(&secrets))
            .unwrap_or_default();
        let new = NewRelease {
            app: target.app.clone(),
            env: target.env.clone(),
            version: target.version.clone(),
            artifact: target.artifact.clone(),
            digest: target.digest.clone(),
            snapshot: Snapshot {
                secrets: secrets_hashed,
                ..target.snapshot.clone()
            },
            kind: ReleaseKind::Rollback,
            restored_from: Some(target.id),
            requested_by: req.requested_by,
            trigger: "cli".into(),
            author: None,
        };
        let release = match self.with_ledger(|l| l.create_release(&new)) {
            Ok(r) => r,
            Err(e) => return Outcome::refused(e.to_string(), None),
        };
        send(
            progress,
            Progress::step(format!(
                "release {}: rolling {} back to release {} ({})",
                release.id,
                release.env,
                target.id,
                target.short_version()
            )),
        );
        self.remember(release.id, secrets, req.registry_login);
        let _holding = self.hold(&release.env, release.id, "rolling back");
        match self.take_warm_standby(&req.env, target.id).await {
            Some(standby) => {
                self.switch_to_standby(release.clone(), config, standby, progress)
                    .await
            }
            None => {
                self.roll_out(release.clone(), config, Leaving::RollBack, progress)
                    .await
            }
        }
    }

    /// Resolves `--to` (a release id or a version prefix) among the known-good releases, or
    /// the ledger's rollback target.
    pub fn rollback_target(&self, env: &str, to: Option<&str>) -> Result<Release, Outcome> {
        let live = self
            .with_ledger(|l| l.live(env))
            .map_err(|e| Outcome::refused(e.to_string(), None))?;
        let target = match to {
            None => self
                .with_ledger(|l| l.rollback_target(env))
                .map_err(|e| Outcome::refused(e.to_string(), None))?,
            Some(sel) => {
                let known = self
                    .with_ledger(|l| l.known_good(env))
                    .map_err(|e| Outcome::refused(e.to_string(), None))?;
                let by_id = sel.parse::<i64>().ok();
                let found = known.into_iter().find(|r| {
                    Some(r.id) == by_id || (sel.len() >= 4 && r.version.starts_with(sel))
                });
                if found.is_none() {
                    return Err(Outcome::refused(
                        format!("{sel} is not a known-good release of {env}"),
                        Some(format!("see the candidates with: cutover history {env}")),
                    ));
                }
                found
            }
        };
        let Some(target) = target else {
            return Err(Outcome::refused(
                format!("{env} has no known-good release to roll back to"),
                Some("a release becomes known-good when it passes its monitor window".into()),
            ));
        };
        if live.as_ref().map(|l| l.id) == Some(target.id) {
            return Err(Outcome::refused(
                format!("release {} is already live in {env}", target.id),
                None,
            ));
        }
        Ok(target)
    }

    /// The one path every release takes: bring it up, verify it, cut over or restore.
    pub(crate) async fn roll_out(
        &self,
        release: Release,
        config: Config,
        leaving: Leaving,
        progress: &ProgressTx,
    ) -> Outcome {
        let env = release.env.clone();
        let Ok(env_cfg) = config.environment(&env).cloned() else {
            return self.refuse(
                &release,
                format!("environment {env} is not in the release's config"),
                None,
            );
        };
        self.clear_abort(&env);
        // A new deploy closes the open monitor window: the monitored release counts as passed.
        self.close_monitor_window(&env, leaving == Leaving::Supersede, progress)
            .await;
        let live = self.with_ledger(|l| l.live(&env)).ok().flatten();
        let serving = self.serving_instances(&env).await;

        send(
            progress,
            Progress::step(format!("edge proxy for {env} on {}", env_cfg.listen)),
        );
        if let Err(e) = self.inner.edge.ensure(&env, env_cfg.listen).await {
            return self.refuse(
                &release,
                format!(
                    "the edge proxy for {env} cannot serve on {}: {e}",
                    env_cfg.listen
                ),
                Some(format!(
                    "free {} or change `listen` of [environments.{env}]",
                    env_cfg.listen
                )),
            );
        }
        // Getting the artifact in place (unpack, or the registry check and pull by digest) is
        // part of refusing: no instance started, so a failure here is exit 1 and `failed`.
        let placement = match self.place(&release, &config, &env_cfg, progress).await {
            Ok(p) => p,
            Err(f) => return self.refuse(&release, f.message, None),
        };
        let recreate = env_cfg.strategy == Strategy::Recreate && !serving.is_empty();
        if recreate {
            let message = format!(
                "recreate: stopping the {} running instance(s) first; {env} does not serve until the new version is up (by design)",
                serving.len()
            );
            self.event(release.id, "recreate", &message);
            send(progress, Progress::step(message));
            self.stop_instances(&serving).await;
        }
        let instances = match self
            .bring_up_placed(&release, &config, true, progress, Some(placement))
            .await
        {
            Ok(instances) => instances,
            Err(failure) => {
                return self
                    .fail_release(&release, live, recreate, failure, progress)
                    .await
            }
        };
        self.cut_over(
            &release, &config, instances, live, serving, leaving, progress,
        )
        .await
    }

    /// After a failed bring-up: the release is rolled back, the previous version serves.
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
        let Some(live) = live else {
            return Outcome::failed_restored(
                Some(release.id),
                format!(
                    "release {} failed: {}; nothing was live in {env} before",
                    release.id, failure.message
                ),
                failure.logs,
            );
        };
        if !stopped_live {
            let message = format!(
                "release {} failed: {}; release {} ({}) kept serving {env}",
                release.id,
                failure.message,
                live.id,
                live.short_version()
            );
            return Outcome::failed_restored(Some(release.id), message, failure.logs);
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
            Ok(_) => {
                self.event(
                    live.id,
                    "restored",
                    &format!("restored after release {} failed", release.id),
                );
                Outcome::failed_restored(
                    Some(release.id),
                    format!(
                        "release {} failed: {}; release {} ({}) was restored and serves {env}",
                        release.id,
                        failure.message,
                        live.id,
                        live.short_version()
                    ),
                    failure.logs,
                )
            }
            Err(restore_failure) => {
                self.event(live.id, "restore-failed", &restore_failure.message);
                Outcome::failed_unrestored(Some(release.id), format!("release {} failed: {}; restoring release {} ALSO failed: {}; {env} is not serving", release.id, failure.message, live.id, restore_failure.message), failure.logs)
            }
        }
    }

    /// Switches traffic to the verified `instances` of `release`, then starts its monitor
    /// window with the old instances kept warm (or retires them at once after a rollback).
    #[allow(clippy::too_many_arguments)]
    async fn cut_over(
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
        let addrs: Vec<SocketAddr> = instances.iter().map(|i| i.address).collect();
        let monitor = config.health.monitor;
        self.transition(
            release.id,
            ReleaseState::Live,
            None,
            &format!(
                "cut over: the edge proxy sends {env}'s traffic to {}",
                join(&addrs)
            ),
        );
        let until = (!monitor.is_zero())
            .then(|| Utc::now() + chrono::Duration::from_std(monitor).unwrap_or_default());
        let _ = self.with_ledger(|l| l.set_monitor_until(release.id, until));
        if let Some(live) = &live {
            match leaving {
                Leaving::Supersede => self.transition(
                    live.id,
                    ReleaseState::Superseded,
                    None,
                    &format!("superseded by release {}", release.id),
                ),
                Leaving::RollBack => self.transition(
                    live.id,
                    ReleaseState::RolledBack,
                    Some(&format!("rolled back by {}", release.requested_by)),
                    &format!(
                        "rolled back: release {} restores release {}",
                        release.id,
                        release.restored_from.unwrap_or_default()
                    ),
                ),
            }
        }
        if let Err(e) = self.inner.edge.switch(env, &addrs).await {
            // Traffic never moved: put the ledger back as it was and retire the new instances.
            self.transition(
                release.id,
                ReleaseState::RolledBack,
                Some(&e),
                &format!("the edge proxy refused the switch: {e}"),
            );
            if let Some(live) = &live {
                self.transition(
                    live.id,
                    ReleaseState::Live,
                    None,
                    "kept serving: the switch failed",
                );
            }
            self.stop_instances(&instances).await;
            return Outcome::failed_restored(
                Some(release.id),
                format!("cutting over failed: {e}"),
                Vec::new(),
            );
        }
        send(
            progress,
            Progress::step(format!(
                "live: release {} ({}) serves {env} on {}",
                release.id,
                release.short_version(),
                config
                    .environment(env)
                    .map(|e| e.listen.to_string())
                    .unwrap_or_default()
            )),
        );
        let standby = match (leaving, live) {
            (Leaving::Supersede, Some(live)) if !old.is_empty() => Some(Standby {
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

    /// A rollback inside the monitor window: the target's instances are still warm, so going
    /// back is a switch of the edge proxy, not a restart.
    async fn switch_to_standby(
        &self,
        release: Release,
        config: Config,
        standby: Standby,
        progress: &ProgressTx,
    ) -> Outcome {
        let env = release.env.clone();
        let live = self.with_ledger(|l| l.live(&env)).ok().flatten();
        let leaving = self.serving_instances(&env).await;
        self.transition(
            release.id,
            ReleaseState::Starting,
            None,
            &format!("reusing the warm instances of release {}", standby.release),
        );
        self.transition(
            release.id,
            ReleaseState::Verifying,
            None,
            "checking the warm instances",
        );
        let check = http_check(&config);
        for instance in &standby.instances {
            if let Err(f) = self.inner.prober.probe(instance.address, &check).await {
                send(
                    progress,
                    Progress::detail(format!(
                        "warm instance {} is not healthy ({f}); starting fresh instances",
                        instance.id
                    )),
                );
                self.stop_instances(&standby.instances).await;
                return self
                    .roll_out(release, config, Leaving::RollBack, progress)
                    .await;
            }
        }
        send(
            progress,
            Progress::step(format!(
                "switching back to the warm instances of release {}",
                standby.release
            )),
        );
        self.cut_over(
            &release,
            &config,
            standby.instances,
            live,
            leaving,
            Leaving::RollBack,
            progress,
        )
        .await
    }

    /// Starts a release's instances and verifies them. `record` writes the release's own
    /// state changes (a restore of an older release does not).
    pub(crate) async fn bring_up(
        &self,
        release: &Release,
        config: &Config,
        record: bool,
        progress: &ProgressTx,
    ) -> Result<Vec<InstanceInfo>, Failure> {
        self.bring_up_placed(release, config, record, progress, None)
            .await
    }

    /// [`Self::bring_up`] with the artifact already in place (or placed here when `None`).
    async fn bring_up_placed(
        &self,
        release: &Release,
        config: &Config,
        record: bool,
        progress: &ProgressTx,
        placed: Option<Placement>,
    ) -> Result<Vec<InstanceInfo>, Failure> {
        let env = &release.env;
        let env_cfg = config
            .environment(env)
            .map_err(|e| failure(e.to_string()))?
            .clone();
        let placement = match placed {
            Some(p) => p,
            None => self.place(release, config, &env_cfg, progress).await?,
        };
        let secrets = self
            .secrets_for(release, config, BTreeMap::new())
            .map_err(failure)?;
        if record {
            self.transition(
                release.id,
                ReleaseState::Starting,
                None,
                &format!(
                    "starting {} instance(s) of {}",
                    env_cfg.instances, release.artifact
                ),
            );
        }
        let mut started: Vec<InstanceInfo> = Vec::new();
        for n in 1..=env_cfg.instances {
            let port = match free_port() {
                Ok(p) => p,
                Err(e) => {
                    self.stop_instances(&started).await;
                    return Err(failure(format!("no free port: {e}")));
                }
            };
            let id = format!("{env}-r{}-{n}-{}", release.id, short_nonce());
            let mut vars = BTreeMap::new();
            vars.extend(config.env.clone());
            vars.extend(env_cfg.env.clone());
            vars.extend(release.snapshot.overrides.clone());
            vars.extend(secrets.clone());
            let inner_port = match &placement {
                Placement::Process { .. } => port,
                Placement::Container { .. } => config.run.port.unwrap_or(port),
            };
            vars.insert(config.run.port_env.clone(), inner_port.to_string());
            vars.insert("APP_VERSION".into(), release.version.clone());
            vars.insert("CUTOVER_APP".into(), release.app.clone());
            vars.insert("CUTOVER_ENV".into(), env.clone());
            vars.insert("CUTOVER_RELEASE".into(), release.id.to_string());
            vars.insert("CUTOVER_INSTANCE".into(), id.clone());
            match &placement {
                Placement::Process { data_dir, .. } => {
                    vars.insert("CUTOVER_DATA_DIR".into(), data_dir.display().to_string());
                }
                Placement::Container { .. } => {
                    // In a container, the data dir is the first named volume.
                    if let Some((_, path)) =
                        config.run.volumes.first().and_then(|v| v.split_once(':'))
                    {
                        vars.insert("CUTOVER_DATA_DIR".into(), path.to_string());
                    }
                }
            }
            let spec = InstanceSpec {
                id: id.clone(),
                app: release.app.clone(),
                env: env.clone(),
                release: release.id,
                version: release.version.clone(),
                argv: config.run.command.clone(),
                cwd: match &placement {
                    Placement::Process { release_dir, .. } => release_dir.clone(),
                    Placement::Container { .. } => PathBuf::from("/"),
                },
                vars,
                port,
                stop_timeout: config.run.stop_timeout,
                image: None,
                container_port: None,
                volumes: Vec::new(),
                engine: None,
            };
            let spec = match &placement {
                Placement::Process { .. } => spec,
                Placement::Container { image, engine } => InstanceSpec {
                    image: Some(image.clone()),
                    container_port: config.run.port,
                    volumes: scoped_volumes(&release.app, env, &config.run.volumes),
                    engine: Some(engine.clone()),
                    ..spec
                },
            };
            send(
                progress,
                Progress::step(format!("starting instance {id} on 127.0.0.1:{port}")),
            );
            match self.inner.runtime.start(spec).await {
                Ok(info) => {
                    self.event(
                        release.id,
                        "instance",
                        &format!(
                            "instance {id} started (pid {}) on {}",
                            info.pid.unwrap_or_default(),
                            info.address
                        ),
                    );
                    started.push(info);
                }
                Err(e) => {
                    let logs = self
                        .inner
                        .runtime
                        .logs(&id, LOG_LINES)
                        .await
                        .unwrap_or_default();
                    self.stop_instances(&started).await;
                    let _ = self.inner.runtime.stop(&id).await;
                    return Err(Failure {
                        message: format!("instance {id} did not start: {e}"),
                        logs,
                    });
                }
            }
        }
        if record {
            let h = &config.health;
            self.transition(
                release.id,
                ReleaseState::Verifying,
                None,
                &format!(
                    "health-checking GET {} ({} passes in a row, deadline {})",
                    h.path,
                    h.healthy_threshold,
                    cutover_config::format_duration(h.deadline)
                ),
            );
        }
        match self.verify(&started, config, progress).await {
            Ok(()) => Ok(started),
            Err(f) => {
                self.stop_instances(&started).await;
                Err(f)
            }
        }
    }

    /// Gets a release's artifact where its runtime runs it: a bundle unpacked into the
    /// release's folder, or an image pulled by digest into the container engine.
    async fn place(
        &self,
        release: &Release,
        config: &Config,
        env_cfg: &cutover_config::Environment,
        progress: &ProgressTx,
    ) -> Result<Placement, Failure> {
        let env = &release.env;
        let (app, version) = release
            .artifact
            .split_once(':')
            .unwrap_or((&release.app, &release.version));
        let artifact = match self.inner.store.get(app, version) {
            Ok(Some(a)) => a,
            Ok(None) => {
                return Err(failure(format!(
                    "artifact {} is no longer in the store",
                    release.artifact
                )))
            }
            Err(e) => return Err(failure(e.to_string())),
        };
        if env_cfg.runtime.is_container() {
            let Some(image) = &artifact.image else {
                return Err(failure(format!(
                    "artifact {} has no image, but {env} runs containers",
                    release.artifact
                )));
            };
            let engine = match env_cfg.runtime {
                cutover_config::RuntimeKind::Podman => "podman",
                _ => "docker",
            }
            .to_string();
            let reference = match &image.registry_digest {
                Some(digest) => format!("{}@{digest}", image.repository),
                None => image.id.clone(),
            };
            let pull = ImagePull {
                engine: engine.clone(),
                reference: reference.clone(),
                repository: image.repository.clone(),
                digest: image.registry_digest.clone(),
                tag: release.version.clone(),
                credentials: self.registry_credentials_for(release, config),
            };
            send(progress, Progress::step(format!("pulling {reference}")));
            self.inner
                .runtime
                .prepare(&pull)
                .await
                .map_err(|e| failure(e.to_string()))?;
            return Ok(Placement::Container {
                image: reference,
                engine,
            });
        }
        let state_dir = &self.inner.options.state_dir;
        let release_dir = state_dir
            .join("releases")
            .join(env)
            .join(release.id.to_string());
        let data_dir = state_dir.join("data").join(env);
        if !release_dir.join(".unpacked").exists() {
            let _ = std::fs::remove_dir_all(&release_dir);
            self.inner
                .store
                .unpack(&artifact, &release_dir)
                .map_err(|e| failure(format!("unpacking {}: {e}", release.artifact)))?;
            let _ = std::fs::write(release_dir.join(".unpacked"), &artifact.digest);
        }
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| failure(format!("creating {}: {e}", data_dir.display())))?;
        Ok(Placement::Process {
            release_dir,
            data_dir,
        })
    }

    /// Registry login for pulls of a release's image: given with the deploy, or resolved here.
    fn registry_credentials_for(
        &self,
        release: &Release,
        config: &Config,
    ) -> Option<(String, String)> {
        let given = crate::locked(&self.inner.registry_logins);
        let from = release.restored_from.unwrap_or(release.id);
        if let Some(login) = given.get(&release.id).or_else(|| given.get(&from)) {
            return Some(login.clone());
        }
        drop(given);
        config
            .registry_credentials(&self.inner.options.repo_root)
            .ok()
            .flatten()
    }

    /// Probes every instance until each passed `healthy_threshold` times in a row, an
    /// instance exits, or the deadline passes.
    async fn verify(
        &self,
        instances: &[InstanceInfo],
        config: &Config,
        progress: &ProgressTx,
    ) -> Result<(), Failure> {
        let h = &config.health;
        let check = http_check(config);
        let deadline = Instant::now() + h.deadline;
        let mut passes = vec![0u32; instances.len()];
        let mut answered_fails = vec![0u32; instances.len()];
        let mut last_said = String::new();
        loop {
            if let Some(by) = instances.first().and_then(|i| self.abort_requested(&i.env)) {
                return Err(failure(format!("aborted by {by}")));
            }
            for (i, instance) in instances.iter().enumerate() {
                if passes[i] >= h.healthy_threshold {
                    continue;
                }
                if let Some(exit) = self.exited(instance).await {
                    return Err(self
                        .failure_of(
                            instance,
                            format!("instance {} {exit} before it became healthy", instance.id),
                        )
                        .await);
                }
                match self.inner.prober.probe(instance.address, &check).await {
                    Ok(()) => {
                        passes[i] += 1;
                        answered_fails[i] = 0;
                        send(
                            progress,
                            Progress::detail(format!(
                                "{}: GET {} passed ({}/{})",
                                instance.id, h.path, passes[i], h.healthy_threshold
                            )),
                        );
                    }
                    Err(f) => {
                        passes[i] = 0;
                        if f.message != last_said {
                            send(progress, Progress::detail(format!("{}: {f}", instance.id)));
                            last_said = f.message.clone();
                        }
                        // An instance that answers and says it is unwell is judged at once; one
                        // that does not answer yet has until the deadline.
                        answered_fails[i] = if f.answered { answered_fails[i] + 1 } else { 0 };
                        if answered_fails[i] >= h.unhealthy_threshold {
                            return Err(self
                                .failure_of(
                                    instance,
                                    format!(
                                        "health check failed {} times in a row: {f}",
                                        answered_fails[i]
                                    ),
                                )
                                .await);
                        }
                        if Instant::now() >= deadline {
                            return Err(self
                                .failure_of(
                                    instance,
                                    format!(
                                    "health check failed: no healthy response within {}; last: {f}",
                                    cutover_config::format_duration(h.deadline)
                                ),
                                )
                                .await);
                        }
                    }
                }
            }
            if passes.iter().all(|p| *p >= h.healthy_threshold) {
                return Ok(());
            }
            tokio::time::sleep(h.interval).await;
        }
    }

    /// A failure of `instance`, with its last lines of output.
    pub(crate) async fn failure_of(&self, instance: &InstanceInfo, message: String) -> Failure {
        let logs = self
            .inner
            .runtime
            .logs(&instance.id, LOG_LINES)
            .await
            .unwrap_or_default();
        Failure { message, logs }
    }

    /// How an instance stopped running, if it did: a crash, even one its supervisor restarted.
    pub(crate) async fn exited(&self, instance: &InstanceInfo) -> Option<String> {
        match self.inner.runtime.inspect(&instance.id).await {
            Ok(Some(now))
                if now.restarts > instance.restarts || now.state != InstanceState::Running =>
            {
                let status = now
                    .exits
                    .last()
                    .map(|e| e.status.clone())
                    .unwrap_or_else(|| format!("{:?}", now.state).to_lowercase());
                Some(format!("exited ({status})"))
            }
            Ok(Some(_)) => None,
            Ok(None) => Some("is gone".into()),
            Err(e) => Some(format!("cannot be inspected ({e})")),
        }
    }

    /// Starts a known-good release again (its old instances are gone) and points traffic at it.
    pub(crate) async fn restore(
        &self,
        target: &Release,
        progress: &ProgressTx,
    ) -> Result<Vec<InstanceInfo>, Failure> {
        let config = parse_config(target).map_err(failure)?;
        let instances = self.bring_up(target, &config, false, progress).await?;
        let addrs: Vec<SocketAddr> = instances.iter().map(|i| i.address).collect();
        self.transition(
            target.id,
            ReleaseState::Live,
            None,
            &format!("restored on {}", join(&addrs)),
        );
        if let Err(e) = self.inner.edge.switch(&target.env, &addrs).await {
            return Err(failure(format!("the edge proxy refused the switch: {e}")));
        }
        Ok(instances)
    }

    /// The instances that receive the environment's traffic now.
    pub async fn serving_instances(&self, env: &str) -> Vec<InstanceInfo> {
        let Some(upstreams) = self.inner.edge.upstreams(env).await else {
            return Vec::new();
        };
        self.inner
            .runtime
            .list()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|i| i.env == env && upstreams.contains(&i.address))
            .collect()
    }

    /// Stops instances together (each stop waits out its own graceful timeout).
    pub(crate) async fn stop_instances(&self, instances: &[InstanceInfo]) {
        let mut tasks = tokio::task::JoinSet::new();
        for instance in instances {
            let engine = self.clone();
            let id = instance.id.clone();
            tasks.spawn(async move { engine.inner.runtime.stop(&id).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Drains and stops instances that no longer get traffic, in the background.
    pub(crate) fn retire_later(&self, env: &str, instances: Vec<InstanceInfo>) {
        if instances.is_empty() {
            return;
        }
        let engine = self.clone();
        let env = env.to_string();
        tokio::spawn(async move { engine.retire(&env, &instances).await });
    }

    pub(crate) async fn retire(&self, env: &str, instances: &[InstanceInfo]) {
        let addrs: Vec<SocketAddr> = instances.iter().map(|i| i.address).collect();
        let _ = self.inner.edge.drain(env, &addrs, DRAIN_TIMEOUT).await;
        self.stop_instances(instances).await;
    }

    fn refuse(&self, release: &Release, message: String, hint: Option<String>) -> Outcome {
        self.transition(
            release.id,
            ReleaseState::Failed,
            Some(&message),
            &format!("refused: {message}"),
        );
        Outcome::refused(message, hint).with_release(release.id)
    }

    pub(crate) fn transition(
        &self,
        id: i64,
        state: ReleaseState,
        reason: Option<&str>,
        message: &str,
    ) {
        if let Err(e) = self.with_ledger(|l| l.transition(id, state, reason, message)) {
            eprintln!("cutover: ledger write failed for release {id} → {state}: {e}");
            return;
        }
        let notable = matches!(
            state,
            ReleaseState::AwaitingApproval
                | ReleaseState::Live
                | ReleaseState::Failed
                | ReleaseState::RolledBack
        );
        let observer = crate::locked(&self.inner.observer).clone();
        if let (true, Some(observer)) = (notable, observer) {
            if let Ok(release) = self.with_ledger(|l| l.get(id)) {
                observer(&release);
            }
        }
    }

    pub(crate) fn event(&self, id: i64, kind: &str, message: &str) {
        let _ = self.with_ledger(|l| l.add_event(id, kind, message));
    }

    /// Keeps a release's secret values and registry login in memory, for restarts and restores.
    fn remember(
        &self,
        release: i64,
        secrets: BTreeMap<String, String>,
        login: Option<(String, String)>,
    ) {
        self.remember_secrets(release, secrets);
        if let Some(login) = login {
            crate::locked(&self.inner.registry_logins).insert(release, login);
        }
    }

    /// The deploy lock of an environment.
    pub(crate) fn env_lock(&self, env: &str) -> Arc<tokio::sync::Mutex<()>> {
        crate::locked(&self.inner.env_locks)
            .entry(env.to_string())
            .or_default()
            .clone()
    }

    /// What holds an environment's deploy lock, in words, if anything does.
    pub(crate) fn holder(&self, env: &str) -> Option<String> {
        crate::locked(&self.inner.holders).get(env).cloned()
    }

    pub(crate) fn remember_secrets(&self, release: i64, secrets: BTreeMap<String, String>) {
        crate::locked(&self.inner.secrets).insert(release, secrets);
    }

    /// The secret values of a release: given by the caller, remembered from its start, or
    /// resolved here (after a server restart) from their sources.
    fn secrets_for(
        &self,
        release: &Release,
        config: &Config,
        given: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, String> {
        if config.secrets.keys().all(|k| given.contains_key(k)) {
            return Ok(given);
        }
        let remembered = crate::locked(&self.inner.secrets);
        let from = release.restored_from.unwrap_or(release.id);
        for id in [release.id, from] {
            if let Some(s) = remembered.get(&id) {
                if config.secrets.keys().all(|k| s.contains_key(k)) {
                    return Ok(s.clone());
                }
            }
        }
        drop(remembered);
        config
            .resolve_secrets(&self.inner.options.repo_root)
            .map_err(|e| e.to_string())
    }

    /// Takes the environment's deploy lock, or says who holds it.
    pub(crate) async fn lock_env(
        &self,
        env: &str,
        queue: bool,
        progress: &ProgressTx,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, Outcome> {
        let lock = self.env_lock(env);
        if let Ok(guard) = lock.clone().try_lock_owned() {
            return Ok(guard);
        }
        let holder = self.holder(env);
        let who = holder.unwrap_or_else(|| "another deploy holds it".to_string());
        if !queue {
            return Err(Outcome::refused(
                format!("{env} is busy: {who}"),
                Some("wait for it, or pass --queue to wait your turn".into()),
            ));
        }
        send(
            progress,
            Progress::step(format!("waiting for {who} to finish in {env} (--queue)")),
        );
        Ok(lock.lock_owned().await)
    }

    /// Notes who holds the environment's lock until the returned guard drops.
    pub(crate) fn hold(&self, env: &str, release: i64, doing: &str) -> Holding<R, E, P> {
        let text = format!("release {release} is {doing}");
        crate::locked(&self.inner.holders).insert(env.to_string(), text);
        Holding {
            engine: self.clone(),
            env: env.to_string(),
        }
    }

    /// Takes the warm standby of the environment's open monitor window if it belongs to
    /// `release` and still runs; the window is closed without passing.
    async fn take_warm_standby(&self, env: &str, release: i64) -> Option<Standby> {
        let slot = {
            let mut monitors = crate::locked(&self.inner.monitors);
            monitors.remove(env)?
        };
        let _ = slot.cancel.send(true);
        let standby = slot.standby?;
        if standby.release != release {
            self.retire_later(env, standby.instances);
            return None;
        }
        for instance in &standby.instances {
            if self.exited(instance).await.is_some() {
                self.stop_instances(&standby.instances).await;
                return None;
            }
        }
        Some(standby)
    }
}

/// Where a release's instances run from.
enum Placement {
    Process {
        release_dir: PathBuf,
        data_dir: PathBuf,
    },
    Container {
        image: String,
        engine: String,
    },
}

/// Named volumes belong to one app in one environment: `data:/x` becomes
/// `<app>-<env>-data:/x`, so staging and production never share one.
fn scoped_volumes(app: &str, env: &str, volumes: &[String]) -> Vec<String> {
    volumes.iter().map(|v| format!("{app}-{env}-{v}")).collect()
}

pub(crate) fn http_check(config: &Config) -> HttpCheck {
    HttpCheck {
        path: config.health.path.clone(),
        status: config.health.status,
        body_contains: config.health.body_contains.clone(),
        timeout: config.health.timeout,
    }
}

pub(crate) fn failure(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        logs: Vec::new(),
    }
}

fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn short(version: &str) -> &str {
    &version[..version.len().min(12)]
}

fn short_nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:04x}", (nanos ^ std::process::id()) & 0xffff)
}
