//! Promote: ship exactly the release live in one environment to another. Under the target
//! environment's lock it takes the source's live release — its artifact, digest and committed
//! config, nothing rebuilt — and rolls it out through the one path every release takes. The
//! release is recorded as a promotion of that release (`kind` promote, `promoted_from`), so a
//! deploy landing in the source meanwhile cannot change what the target gets.

use std::collections::BTreeMap;

use cutover_ledger::{NewRelease, PromotedFrom, ReleaseKind, Snapshot};
use cutover_runtime::{PlaceRequest, Runtime};

use crate::converge::{Leaving, Source};
use crate::record::{parse_config, send, split_hint};
use crate::{DeployRequest, Edge, Engine, Outcome, Prober, Progress, ProgressTx};

/// A request to ship the release live in `from` to `to`.
#[derive(Debug, Clone)]
pub struct PromoteRequest {
    pub from: String,
    pub to: String,
    /// Secret values resolved by the caller, by name; the server resolves missing ones.
    pub secrets: BTreeMap<String, String>,
    /// The person promoting: the human click for a manual environment.
    pub requested_by: String,
    /// Wait for a busy target environment instead of refusing at once.
    pub queue: bool,
    /// The login (user, password) the runtime needs to get the artifact in place, resolved by
    /// the caller.
    pub artifact_login: Option<(String, String)>,
}

impl<R: Runtime, E: Edge, P: Prober> Engine<R, E, P> {
    /// Makes the release live in `req.from` live in `req.to` too, as a promotion of it.
    pub async fn promote(&self, req: PromoteRequest, progress: &ProgressTx) -> Outcome {
        let (from, to) = (req.from.as_str(), req.to.as_str());
        if from == to {
            return Outcome::refused(
                format!("cannot promote {from} to itself"),
                Some(format!(
                    "name the environment to ship to, e.g. cutover promote {from} production"
                )),
            );
        }
        let _guard = match self.lock_env(to, req.queue, progress).await {
            Ok(g) => g,
            Err(outcome) => return outcome,
        };
        // Taken under the target's lock: what the target gets is decided once, here.
        let source = match self.with_ledger(|l| l.live(from)) {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Outcome::refused(
                    format!("nothing is live in {from} to promote"),
                    Some(format!("deploy to {from} first: cutover deploy {from}")),
                )
            }
            Err(e) => return Outcome::refused(e.to_string(), None),
        };
        send(
            progress,
            Progress::step(format!(
                "promoting release {} of {from} ({}, {}) to {to}",
                source.id,
                source.short_version(),
                source.digest
            )),
        );
        let config = match parse_config(&source) {
            Ok(c) => c,
            Err(e) => return Outcome::refused(e, None),
        };
        let env_cfg = match config.environment(to) {
            Ok(e) => e.clone(),
            Err(e) => return Outcome::refused(e.to_string(), None),
        };
        // Exactly the same thing: what the target's runtime would run must be what the source
        // runs (a process environment runs the bundle, a container one the image).
        let artifact = match self.inner.store.get(&source.app, &source.version) {
            Ok(Some(a)) => a,
            Ok(None) => {
                return Outcome::refused(
                    format!("artifact {} is no longer in the store", source.artifact),
                    Some(format!(
                        "build it again: cutover build {}",
                        source.short_version()
                    )),
                )
            }
            Err(e) => return Outcome::refused(e.to_string(), None),
        };
        let identify = PlaceRequest {
            kind: env_cfg.runtime,
            app: &source.app,
            env: to,
            release: 0,
            version: &source.version,
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
        if digest != source.digest {
            return Outcome::refused(
                format!(
                    "{to} would run {digest}, not {} as {from} does (their runtimes differ): a promotion ships one digest",
                    source.digest
                ),
                Some(format!(
                    "deploy the version itself: cutover deploy {to} --version {}",
                    source.short_version()
                )),
            );
        }
        let certificates = match self.check_edge_certificate(to, &config, &env_cfg).await {
            Ok(note) => note,
            Err(outcome) => return outcome,
        };
        // The caller's, or those the source release runs with.
        let secrets = match self.secrets_for(&source, &config, req.secrets) {
            Ok(s) => s,
            Err(e) => return Outcome::refused(e, None),
        };
        let as_deploy = DeployRequest {
            env: to.to_string(),
            app: source.app.clone(),
            version: source.version.clone(),
            overrides: BTreeMap::new(),
            secrets: BTreeMap::new(),
            requested_by: req.requested_by.clone(),
            queue: req.queue,
            artifact_login: None,
            trigger: "cli".into(),
            author: source.author.clone(),
            skip_checks: false,
            passed_elsewhere: Vec::new(),
            promoted_from: None,
        };
        if let Err(outcome) = self.check_gates(&as_deploy, &config, &env_cfg) {
            return outcome;
        }
        let secrets_hashed = match self.with_ledger(|l| l.hash_secrets(&secrets)) {
            Ok(h) => h,
            Err(e) => return Outcome::refused(e.to_string(), None),
        };
        let new = NewRelease {
            app: source.app.clone(),
            env: to.to_string(),
            version: source.version.clone(),
            artifact: source.artifact.clone(),
            digest: source.digest.clone(),
            snapshot: Snapshot {
                config_text: source.snapshot.config_text.clone(),
                overrides: BTreeMap::new(),
                secrets: secrets_hashed,
            },
            kind: ReleaseKind::Promote,
            restored_from: None,
            requested_by: req.requested_by.clone(),
            trigger: "cli".into(),
            author: source.author.clone(),
        };
        let release =
            match self.with_ledger(|l| l.create_promotion(&new, &PromotedFrom::from(&source))) {
                Ok(r) => r,
                Err(e) => return Outcome::refused(e.to_string(), None),
            };
        self.note_certificates(release.id, certificates, progress);
        if env_cfg.approval == cutover_config::Approval::Manual {
            // A person who promotes is the human click (check_gates checked they may be).
            let _ = self.with_ledger(|l| l.approve(release.id, &req.requested_by));
        }
        send(
            progress,
            Progress::step(format!(
                "release {} created: {} → {to} (promoted from release {} of {from})",
                release.id, release.artifact, source.id
            )),
        );
        let login = req
            .artifact_login
            .or_else(|| self.artifact_login_for(&source, &config));
        self.remember(release.id, secrets, login);
        let _holding = self.hold(to, release.id, "being promoted");
        self.roll_out(release, config, Leaving::Supersede, Source::Fresh, progress)
            .await
    }
}
