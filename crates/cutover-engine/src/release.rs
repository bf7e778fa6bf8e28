//! Deploy and rollback requests: check what is asked (the artifact, its committed config, the
//! gates), record the release, then hand it to the converge path.

use cutover_config::Config;
use cutover_ledger::{NewRelease, Release, ReleaseKind, Snapshot};
use cutover_runtime::{PlaceRequest, Runtime};

use crate::converge::{Leaving, Source};
use crate::record::{parse_config, send, short, split_hint};
use crate::{
    DeployRequest, Edge, Engine, Outcome, Prober, Progress, ProgressTx, RollbackRequest, Standby,
};

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
        // What the release runs, by digest, as its runtime identifies it (refused here if that
        // runtime cannot run this artifact: nothing is recorded yet).
        let identify = PlaceRequest {
            kind: env_cfg.runtime,
            app: &req.app,
            env: &req.env,
            release: 0,
            version: &req.version,
            artifact: &artifact,
            config: &config,
            credentials: None,
            base_dir: &self.inner.options.repo_root,
        };
        let digest = match self.inner.runtime.identify(&identify).await {
            Ok(d) => d,
            Err(e) => {
                let (message, hint) = split_hint(&e.to_string());
                return Outcome::refused(message, hint);
            }
        };
        if let Some(from) = &req.promoted_from {
            if from.digest != digest {
                return Outcome::refused(
                    format!(
                        "{} would run {digest}, not {} as release {} of {} does: a promotion ships one digest",
                        req.env, from.digest, from.release, from.env
                    ),
                    Some(format!(
                        "deploy the version itself: cutover deploy {} --version {}",
                        req.env,
                        short(&req.version)
                    )),
                );
            }
        }
        let overrides: Vec<(String, String)> = req.overrides.clone().into_iter().collect();
        if let Err(e) = config.check_overrides(&overrides) {
            return Outcome::refused(e.to_string(), None);
        }
        let certificates = match self
            .check_edge_certificate(&req.env, &config, &env_cfg)
            .await
        {
            Ok(note) => note,
            Err(outcome) => return outcome,
        };
        // The CLI resolves secrets where the deploy is asked for; a pipeline run or a webhook
        // resolves them here, in the server's environment.
        let mut req = req;
        if !config.secrets_complete(&req.secrets) {
            let given = std::mem::take(&mut req.secrets);
            match config.complete_secrets(&self.inner.options.repo_root, given) {
                Ok(values) => req.secrets = values,
                Err(e) => return Outcome::refused(e.to_string(), None),
            }
        }
        if let Err(outcome) = self.check_gates(&req, &config, &env_cfg) {
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
            kind: match req.promoted_from {
                Some(_) => ReleaseKind::Promote,
                None => ReleaseKind::Deploy,
            },
            restored_from: None,
            requested_by: req.requested_by.clone(),
            trigger: req.trigger.clone(),
            author: req.author.clone(),
        };
        let created = match &req.promoted_from {
            Some(from) => self.with_ledger(|l| l.create_promotion(&new, from)),
            None => self.with_ledger(|l| l.create_release(&new)),
        };
        let release = match created {
            Ok(r) => r,
            Err(e) => return Outcome::refused(e.to_string(), None),
        };
        send(progress, Progress::Release { id: release.id });
        self.note_certificates(release.id, certificates, progress);
        for (env, server) in &req.passed_elsewhere {
            if env_cfg.requires.contains(env) {
                self.event(
                    release.id,
                    "requires",
                    &format!(
                        "{} passed {env}'s monitor window on {server}, as {} read there",
                        short(&req.version),
                        req.requested_by
                    ),
                );
            }
        }
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
        self.remember(release.id, req.secrets, req.artifact_login);
        let _holding = self.hold(&release.env, release.id, "being deployed");
        self.roll_out(release, config, Leaving::Supersede, Source::Fresh, progress)
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
        let mut certificates = None;
        if let Ok(env_cfg) = config.environment(&req.env) {
            match self
                .check_edge_certificate(&req.env, &config, env_cfg)
                .await
            {
                Ok(note) => certificates = note,
                Err(outcome) => return outcome,
            }
        }
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
        send(progress, Progress::Release { id: release.id });
        self.note_certificates(release.id, certificates, progress);
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
        self.remember(release.id, secrets, req.artifact_login);
        let _holding = self.hold(&release.env, release.id, "rolling back");
        let source = match self.take_warm_standby(&req.env, target.id).await {
            Some(standby) => {
                send(
                    progress,
                    Progress::step(format!(
                        "switching back to the warm instances of release {}",
                        standby.release
                    )),
                );
                Source::Warm(standby.instances)
            }
            None => Source::Fresh,
        };
        self.roll_out(release, config, Leaving::RollBack, source, progress)
            .await
    }

    /// The certificate files of `tls = { cert, key }` (relative to cutover.toml), or the
    /// `[acme] directory` of `tls = "acme"`, checked before anything starts: files the edge
    /// could not serve refuse the release, naming the field and the fix. A directory that does
    /// not answer refuses it only when the machine's edge does not already hold a certificate
    /// valid now for every host of the environment (a first deploy, a new host): with them the
    /// release goes on, and the returned note says so (the edge renews once the directory
    /// answers again). (The certificates themselves the edge obtains by ACME, in the
    /// background.)
    pub(crate) async fn check_edge_certificate(
        &self,
        env: &str,
        config: &Config,
        env_cfg: &cutover_config::Environment,
    ) -> Result<Option<String>, Outcome> {
        let root = &self.inner.options.repo_root;
        let (cert, key) = match &env_cfg.tls {
            None => return Ok(None),
            Some(cutover_config::Tls::Files { cert, key }) => (cert, key),
            Some(cutover_config::Tls::Acme) => {
                let settings = crate::ports::Site::of(config, env_cfg, root).acme;
                let Some(settings) = settings else {
                    return Ok(None);
                };
                let Err(e) = cutover_proxy::acme::check_directory(&settings).await else {
                    return Ok(None);
                };
                let held = self.inner.edge.certificates().await;
                return match held_until(&env_cfg.hosts, &held, cutover_proxy::tls::now()) {
                    Ok(until) => Ok(Some(format!(
                        "{e}; the certificates held for {} stay valid until {}: the edge serves {env} with them and renews them once the directory answers",
                        env_cfg.hosts.join(", "),
                        until_text(until)
                    ))),
                    Err(missing) => Err(Outcome::refused(
                        format!(
                            "[acme] directory: {e}; the edge holds no valid certificate for {}",
                            missing.join(", ")
                        ),
                        Some(e.hint()),
                    )),
                };
            }
        };
        let pair = cutover_proxy::tls::Pair {
            cert: root.join(cert),
            key: root.join(key),
        };
        cutover_proxy::tls::check_pair(&pair, &env_cfg.hosts)
            .map(|_| None)
            .map_err(|e| {
                Outcome::refused(
                    format!("[environments.{env}] {}: {e}", e.field()),
                    Some(e.hint()),
                )
            })
    }

    /// Says once, in the release's progress and its events, that it goes on with the
    /// certificates the edge holds while the ACME directory does not answer.
    pub(crate) fn note_certificates(
        &self,
        release: i64,
        note: Option<String>,
        progress: &ProgressTx,
    ) {
        if let Some(note) = note {
            self.event(release, "certificate", &note);
            send(progress, Progress::step(note));
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

/// The earliest notAfter among the certificates the edge holds for `hosts`, when each of them
/// has one valid at `now` (seconds since the epoch); else the hosts without one.
fn held_until(
    hosts: &[String],
    held: &[crate::CertificateState],
    now: i64,
) -> Result<i64, Vec<String>> {
    let mut until = i64::MAX;
    let mut missing = Vec::new();
    for host in hosts {
        let valid = held
            .iter()
            .filter(|c| c.host.eq_ignore_ascii_case(host))
            .filter_map(|c| c.not_after)
            .find(|t| *t > now);
        match valid {
            Some(t) => until = until.min(t),
            None => missing.push(host.clone()),
        }
    }
    if hosts.is_empty() || !missing.is_empty() {
        return Err(missing);
    }
    Ok(until)
}

/// "2026-05-01 12:00Z", as `status` shows a certificate's end.
fn until_text(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0).map_or_else(
        || epoch.to_string(),
        |t| t.format("%Y-%m-%d %H:%MZ").to_string(),
    )
}

#[cfg(test)]
mod certificate_tests {
    use super::held_until;
    use crate::CertificateState;

    fn cert(host: &str, not_after: Option<i64>) -> CertificateState {
        CertificateState {
            host: host.into(),
            not_after,
            error: Some("the ACME directory cannot be reached".into()),
        }
    }

    #[test]
    fn an_acme_outage_is_waited_out_only_with_a_valid_certificate_for_every_host() {
        let hosts = vec!["a.test".to_string(), "B.test".to_string()];
        let now = 1_000;
        let both = [cert("a.test", Some(5_000)), cert("b.test", Some(3_000))];
        assert_eq!(
            held_until(&hosts, &both, now),
            Ok(3_000),
            "the earliest end"
        );
        let one = [cert("a.test", Some(5_000))];
        assert_eq!(held_until(&hosts, &one, now), Err(vec!["B.test".into()]));
        let expired = [cert("a.test", Some(5_000)), cert("b.test", Some(1_000))];
        assert_eq!(
            held_until(&hosts, &expired, now),
            Err(vec!["B.test".into()])
        );
        let none_yet = [cert("a.test", None), cert("b.test", Some(3_000))];
        assert_eq!(
            held_until(&hosts, &none_yet, now),
            Err(vec!["a.test".into()])
        );
        assert_eq!(
            held_until(&hosts, &[], now).unwrap_err().len(),
            2,
            "the edge is down"
        );
        assert!(held_until(&[], &both, now).is_err());
    }
}
