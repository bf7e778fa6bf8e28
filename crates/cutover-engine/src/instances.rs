//! A release's instances: getting its artifact in place, starting instances, verifying them
//! against the health check, finding the ones that serve, and draining and stopping the ones
//! that no longer do.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use cutover_config::{Config, HealthScheme};
use cutover_health::{HttpCheck, Scheme};
use cutover_ledger::{Release, ReleaseState};
use cutover_runtime::{
    InstanceInfo, InstanceSpec, InstanceState, PlaceRequest, Placement, Runtime,
};
use tokio::time::Instant;

use crate::record::{send, split_hint};
use crate::{Edge, Engine, Prober, Progress, ProgressTx};

/// Why a release's instances could not be brought up, with the failing instance's output.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub message: String,
    pub hint: Option<String>,
    pub logs: Vec<String>,
}

const LOG_LINES: usize = 20;

impl<R: Runtime, E: Edge, P: Prober> Engine<R, E, P> {
    /// Starts a release's instances (its artifact already placed) and verifies them. `record`
    /// writes the release's own state changes (a restore of an older release does not).
    pub(crate) async fn bring_up(
        &self,
        release: &Release,
        config: &Config,
        record: bool,
        progress: &ProgressTx,
        placement: Placement,
    ) -> Result<Vec<InstanceInfo>, Failure> {
        let env = &release.env;
        let env_cfg = config
            .environment(env)
            .map_err(|e| failure(e.to_string()))?
            .clone();
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
            let id = format!("{env}-r{}-{n}-{}", release.id, short_nonce());
            let mut vars = BTreeMap::new();
            vars.extend(config.env.clone());
            vars.extend(env_cfg.env.clone());
            vars.extend(release.snapshot.overrides.clone());
            vars.extend(secrets.clone());
            vars.insert("APP_VERSION".into(), release.version.clone());
            vars.insert("CUTOVER_APP".into(), release.app.clone());
            vars.insert("CUTOVER_ENV".into(), env.clone());
            vars.insert("CUTOVER_RELEASE".into(), release.id.to_string());
            vars.insert("CUTOVER_INSTANCE".into(), id.clone());
            if let Some(data_dir) = &placement.data_dir {
                vars.insert("CUTOVER_DATA_DIR".into(), data_dir.clone());
            }
            let spec = InstanceSpec {
                id: id.clone(),
                app: release.app.clone(),
                env: env.clone(),
                release: release.id,
                version: release.version.clone(),
                kind: env_cfg.runtime,
                placement: placement.clone(),
                argv: config.run.command.clone(),
                vars,
                secret_names: secrets.keys().cloned().collect(),
                port_env: config.run.port_env.clone(),
                app_port: config.run.port,
                stop_timeout: config.run.stop_timeout,
            };
            send(progress, Progress::step(format!("starting instance {id}")));
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
                    let (message, hint) = split_hint(&e.to_string());
                    return Err(Failure {
                        message: format!("instance {id} did not start: {message}"),
                        hint,
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

    /// Gets a release's artifact where its runtime runs it (the runtime knows how).
    pub(crate) async fn place(
        &self,
        release: &Release,
        config: &Config,
        env_cfg: &cutover_config::Environment,
        progress: &ProgressTx,
    ) -> Result<Placement, Failure> {
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
        let credentials = self.artifact_login_for(release, config);
        let req = PlaceRequest {
            kind: env_cfg.runtime,
            app: &release.app,
            env: &release.env,
            release: release.id,
            version: &release.version,
            artifact: &artifact,
            config,
            credentials: credentials.as_ref(),
            base_dir: &self.inner.options.repo_root,
        };
        send(
            progress,
            Progress::step(format!("placing {} for {}", release.artifact, release.env)),
        );
        self.inner.runtime.place(&req).await.map_err(|e| {
            let (message, hint) = split_hint(&e.to_string());
            Failure {
                message,
                hint,
                logs: Vec::new(),
            }
        })
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
        let check = self.http_check(config);
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
        Failure {
            message,
            hint: None,
            logs,
        }
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
        let _ = self.inner.edge.drain(env, &addrs).await;
        self.stop_instances(instances).await;
    }
}

impl<R: Runtime, E: Edge, P: Prober> Engine<R, E, P> {
    /// The probe `[health]` asks for; a CA bundle's path is relative to cutover.toml.
    pub(crate) fn http_check(&self, config: &Config) -> HttpCheck {
        let h = &config.health;
        HttpCheck {
            path: h.path.clone(),
            status: h.status,
            body_contains: h.body_contains.clone(),
            timeout: h.timeout,
            scheme: match h.scheme {
                HealthScheme::Http => Scheme::Http,
                HealthScheme::Https => Scheme::Https,
            },
            ca_bundle: h
                .ca_bundle
                .as_ref()
                .map(|p| self.inner.options.repo_root.join(p)),
        }
    }
}

pub(crate) fn failure(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        hint: None,
        logs: Vec::new(),
    }
}

pub(crate) fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn short_nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:04x}", (nanos ^ std::process::id()) & 0xffff)
}
