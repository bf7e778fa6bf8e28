//! The gates in front of an environment: freezes, `requires`, and the manual approval that
//! makes the difference between continuous delivery and continuous deployment. Also the stop
//! button for an in-flight deploy (`abort`).

use std::collections::BTreeMap;

use cutover_config::{Approval, Config, Environment};
use cutover_ledger::{EdgeHold, EdgeHoldKind, Release, ReleaseState};
use cutover_proxy::protocol::Hold;
use cutover_runtime::Runtime;

use crate::converge::{Leaving, Source};
use crate::record::{parse_config, send, short};
use crate::{DeployRequest, Edge, Engine, Outcome, Prober, Progress, ProgressTx};

/// Which waiting release `approve` / `reject` mean.
#[derive(Debug, Clone, Default)]
pub struct GateChoice {
    /// A release id; default: the newest one waiting.
    pub release: Option<i64>,
    /// Allow choosing a release older than the newest waiting one.
    pub older: bool,
}

impl<R: Runtime, E: Edge, P: Prober> Engine<R, E, P> {
    /// Refuses a deploy that a freeze, `requires` or the approvers list forbids.
    pub(crate) fn check_gates(
        &self,
        req: &DeployRequest,
        config: &Config,
        env_cfg: &Environment,
    ) -> Result<(), Outcome> {
        let env = &req.env;
        if let Ok(Some(freeze)) = self.with_ledger(|l| l.frozen(env)) {
            return Err(Outcome::refused(
                format!(
                    "{env} is frozen by {} since {}: {}",
                    freeze.by,
                    freeze.at.format("%Y-%m-%d %H:%M:%SZ"),
                    freeze.reason
                ),
                Some(format!(
                    "no deploys until `cutover unfreeze {env}` (rollbacks still work)"
                )),
            ));
        }
        for required in &env_cfg.requires {
            let passed = self
                .with_ledger(|l| l.passed_in(required, &req.version))
                .unwrap_or(false)
                || self.passed_elsewhere(req, config, env_cfg, required);
            if !passed {
                return Err(Outcome::refused(
                    format!(
                        "{} has not passed {required}'s monitor window, which {env} requires",
                        short(&req.version)
                    ),
                    Some(format!(
                        "deploy it to {required} first, then: cutover promote {required} {env}"
                    )),
                ));
            }
        }
        if env_cfg.approval == Approval::Manual && req.is_person() {
            self.may_approve(&req.requested_by, req.author.as_deref(), env, env_cfg)?;
        }
        Ok(())
    }

    /// Whether the caller relayed that `req.version` passed `required` on the server that
    /// environment lives on. Taken only when the committed config puts `required` on another
    /// server than the environment deployed to: an environment of this server is judged by this
    /// ledger alone.
    fn passed_elsewhere(
        &self,
        req: &DeployRequest,
        config: &Config,
        env_cfg: &Environment,
        required: &str,
    ) -> bool {
        let Ok(required_cfg) = config.environment(required) else {
            return false;
        };
        let elsewhere = required_cfg.server.is_some() && required_cfg.server != env_cfg.server;
        elsewhere
            && req.passed_elsewhere.iter().any(|(env, server)| {
                env == required && required_cfg.server.as_deref() == Some(server.as_str())
            })
    }

    /// Whether `who` may be the human click for a release of `author`'s commit.
    fn may_approve(
        &self,
        who: &str,
        author: Option<&str>,
        env: &str,
        env_cfg: &Environment,
    ) -> Result<(), Outcome> {
        if !env_cfg.approvers.is_empty() && !env_cfg.approvers.iter().any(|a| a == who) {
            return Err(Outcome::refused(
                format!("{who} may not approve releases to {env}"),
                Some(format!(
                    "approvers of {env}: {}",
                    env_cfg.approvers.join(", ")
                )),
            ));
        }
        if author.is_some_and(|a| is_author(who, a)) {
            return Err(Outcome::refused(
                format!("{who} wrote this commit and may not approve its release to {env}"),
                Some("ask another approver".into()),
            ));
        }
        Ok(())
    }

    /// Parks a release at the manual gate.
    pub(crate) fn park(
        &self,
        release: &Release,
        env_cfg: &Environment,
        secrets: BTreeMap<String, String>,
    ) -> Outcome {
        let who = if env_cfg.approvers.is_empty() {
            "anyone but the commit's author".to_string()
        } else {
            env_cfg.approvers.join(" or ")
        };
        self.transition(
            release.id,
            ReleaseState::AwaitingApproval,
            None,
            &format!("waits for approval by {who}"),
        );
        self.remember_secrets(release.id, secrets);
        Outcome::done(
            release.id,
            format!(
                "release {} ({}) waits for approval in {}",
                release.id,
                release.short_version(),
                release.env
            ),
        )
        .with_hint(format!("ship it with: cutover approve {}", release.env))
    }

    /// A person ships the release waiting at `env`'s gate.
    pub async fn approve(
        &self,
        env: &str,
        by: &str,
        choice: GateChoice,
        progress: &ProgressTx,
    ) -> Outcome {
        let release = match self.waiting(env, &choice) {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        let config = match parse_config(&release) {
            Ok(c) => c,
            Err(e) => return Outcome::refused(e, None),
        };
        let Ok(env_cfg) = config.environment(env).cloned() else {
            return Outcome::refused(
                format!(
                    "the config of release {} has no environment {env}",
                    release.id
                ),
                None,
            );
        };
        if let Err(outcome) = self.may_approve(by, release.author.as_deref(), env, &env_cfg) {
            return outcome;
        }
        if let Ok(Some(freeze)) = self.with_ledger(|l| l.frozen(env)) {
            return Outcome::refused(
                format!("{env} is frozen by {}: {}", freeze.by, freeze.reason),
                Some(format!("`cutover unfreeze {env}` first")),
            );
        }
        let _guard = match self.lock_env(env, false, progress).await {
            Ok(g) => g,
            Err(outcome) => return outcome,
        };
        let _ = self.with_ledger(|l| l.approve(release.id, by));
        for other in self.with_ledger(|l| l.awaiting(env)).unwrap_or_default() {
            if other.id != release.id && other.id < release.id {
                self.transition(
                    other.id,
                    ReleaseState::Failed,
                    Some(&format!(
                        "not approved: release {} was approved instead",
                        release.id
                    )),
                    "left at the gate",
                );
            }
        }
        send(
            progress,
            Progress::step(format!(
                "approved by {by}: release {} ({}) → {env}",
                release.id,
                release.short_version()
            )),
        );
        let _holding = self.hold(env, release.id, "being deployed");
        self.roll_out(release, config, Leaving::Supersede, Source::Fresh, progress)
            .await
    }

    /// A person turns the release waiting at `env`'s gate down.
    pub fn reject(&self, env: &str, by: &str, reason: &str, choice: GateChoice) -> Outcome {
        let release = match self.waiting(
            env,
            &GateChoice {
                older: true,
                ..choice
            },
        ) {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        let why = format!("rejected by {by}: {reason}");
        self.transition(release.id, ReleaseState::Failed, Some(&why), &why);
        Outcome::done(
            release.id,
            format!(
                "release {} ({}) will not go to {env}: {why}",
                release.id,
                release.short_version()
            ),
        )
    }

    /// The release `choice` names among those waiting at `env`'s gate.
    fn waiting(&self, env: &str, choice: &GateChoice) -> Result<Release, Outcome> {
        let waiting = self
            .with_ledger(|l| l.awaiting(env))
            .map_err(|e| Outcome::refused(e.to_string(), None))?;
        let Some(newest) = waiting.first() else {
            return Err(Outcome::refused(
                format!("nothing waits for approval in {env}"),
                Some(format!("see `cutover history {env}`")),
            ));
        };
        let Some(id) = choice.release else {
            return Ok(newest.clone());
        };
        if let Some(r) = waiting.iter().find(|r| r.id == id) {
            if r.id != newest.id && !choice.older {
                return Err(Outcome::refused(
                    format!(
                        "release {id} is older than release {}, which also waits in {env}",
                        newest.id
                    ),
                    Some(format!(
                        "approve release {}, or pass --older to ship release {id} anyway",
                        newest.id
                    )),
                ));
            }
            return Ok(r.clone());
        }
        match self.with_ledger(|l| l.find(id)) {
            Ok(Some(other)) if other.env != env => Err(Outcome::refused(
                format!("release {id} is a release of {}, not {env}", other.env),
                Some(format!("cutover approve {} --release {id}", other.env)),
            )),
            Ok(Some(other)) => Err(Outcome::refused(
                format!(
                    "release {id} does not wait for approval (it is {})",
                    other.state
                ),
                None,
            )),
            _ => Err(Outcome::refused(format!("there is no release {id}"), None)),
        }
    }

    /// Stops deploys to `env` until unfrozen.
    pub fn freeze(&self, env: &str, by: &str, reason: &str) -> Outcome {
        match self.with_ledger(|l| l.freeze(env, by, reason)) {
            Ok(()) => Outcome {
                exit_code: 0,
                release: None,
                message: format!("{env} is frozen: {reason}"),
                hint: Some(format!("lift it with: cutover unfreeze {env}")),
                logs: Vec::new(),
            },
            Err(e) => Outcome::refused(e.to_string(), None),
        }
    }

    pub fn unfreeze(&self, env: &str) -> Outcome {
        match self.with_ledger(|l| l.unfreeze(env)) {
            Ok(true) => Outcome {
                exit_code: 0,
                release: None,
                message: format!("{env} is no longer frozen"),
                hint: None,
                logs: Vec::new(),
            },
            Ok(false) => Outcome::refused(format!("{env} is not frozen"), None),
            Err(e) => Outcome::refused(e.to_string(), None),
        }
    }

    /// Puts `env` in maintenance (its edge answers 503 with `message`) or ends it. Recorded
    /// first, then told to the edge; a refusing edge undoes the record.
    pub async fn maintenance(&self, env: &str, on: bool, message: &str, by: &str) -> Outcome {
        if !on {
            return self.lift_hold(env, "maintenance").await;
        }
        let hold = EdgeHold {
            kind: EdgeHoldKind::Maintenance {
                message: message.to_string(),
            },
            by: by.to_string(),
            at: chrono::Utc::now(),
        };
        let edge = Hold::Maintenance {
            message: message.to_string(),
            retry_after_s: 60,
        };
        self.put_hold(
            env,
            hold,
            edge,
            format!("{env} is in maintenance: {message}"),
        )
        .await
    }

    /// Holds `env`'s new requests at its edge for at most `max`.
    pub async fn pause(&self, env: &str, max: std::time::Duration, by: &str) -> Outcome {
        let now = chrono::Utc::now();
        let until = now + chrono::Duration::milliseconds(max.as_millis() as i64);
        let hold = EdgeHold {
            kind: EdgeHoldKind::Pause { until },
            by: by.to_string(),
            at: now,
        };
        let edge = Hold::Pause {
            until_ms: u64::try_from(until.timestamp_millis()).unwrap_or(0),
        };
        let message = format!(
            "{env} is paused: new requests wait at the edge until {} at the latest",
            until.format("%H:%M:%SZ")
        );
        self.put_hold(env, hold, edge, message).await
    }

    /// Ends a pause: held requests go on.
    pub async fn resume(&self, env: &str) -> Outcome {
        self.lift_hold(env, "pause").await
    }

    async fn put_hold(&self, env: &str, hold: EdgeHold, edge: Hold, message: String) -> Outcome {
        let before = match self.with_ledger(|l| l.edge_hold(env)) {
            Ok(before) => before,
            Err(e) => return Outcome::refused(e.to_string(), None),
        };
        if let Err(e) = self.with_ledger(|l| l.set_edge_hold(env, &hold)) {
            return Outcome::refused(e.to_string(), None);
        }
        if let Err(e) = self.inner.edge.hold(env, Some(edge)).await {
            let _ = self.with_ledger(|l| match &before {
                Some(before) => l.set_edge_hold(env, before),
                None => l.clear_edge_hold(env).map(|_| ()),
            });
            return Outcome::refused(
                format!("the edge of {env} refused: {e}; nothing changed"),
                Some(format!(
                    "deploy to {env} first (its edge starts with the first deploy)"
                )),
            );
        }
        let hint = match hold.kind {
            EdgeHoldKind::Maintenance { .. } => {
                format!("end it with: cutover maintenance {env} off")
            }
            EdgeHoldKind::Pause { .. } => {
                format!("release the requests with: cutover resume {env}")
            }
        };
        Outcome {
            exit_code: 0,
            release: None,
            message,
            hint: Some(hint),
            logs: Vec::new(),
        }
    }

    async fn lift_hold(&self, env: &str, what: &str) -> Outcome {
        let current = match self.with_ledger(|l| l.edge_hold(env)) {
            Ok(current) => current,
            Err(e) => return Outcome::refused(e.to_string(), None),
        };
        let matches = match current.as_ref().map(|h| &h.kind) {
            Some(EdgeHoldKind::Maintenance { .. }) => what == "maintenance",
            Some(EdgeHoldKind::Pause { until }) => what == "pause" && *until > chrono::Utc::now(),
            None => false,
        };
        if !matches {
            let state = if what == "maintenance" {
                "in maintenance"
            } else {
                "paused"
            };
            return Outcome::refused(format!("{env} is not {state}"), None);
        }
        if let Err(e) = self.inner.edge.hold(env, None).await {
            return Outcome::refused(
                format!("the edge of {env} refused: {e}; nothing changed"),
                None,
            );
        }
        if let Err(e) = self.with_ledger(|l| l.clear_edge_hold(env)) {
            return Outcome::refused(e.to_string(), None);
        }
        let message = if what == "maintenance" {
            format!("{env} is out of maintenance: its edge serves again")
        } else {
            format!("{env} is resumed: held requests went on")
        };
        Outcome {
            exit_code: 0,
            release: None,
            message,
            hint: None,
            logs: Vec::new(),
        }
    }

    /// Stops the deploy in flight in `env`; the known-good keeps (or resumes) serving.
    pub fn abort(&self, env: &str, by: &str) -> Outcome {
        let holder = self.holder(env);
        let Some(holder) = holder else {
            return Outcome::refused(format!("no deploy is in flight in {env}"), None);
        };
        crate::locked(&self.inner.aborts).insert(env.to_string(), by.to_string());
        Outcome {
            exit_code: 0,
            release: None,
            message: format!("asked to stop: {holder}"),
            hint: Some(format!("see `cutover history {env}`")),
            logs: Vec::new(),
        }
    }

    /// Who asked to abort the deploy in flight in `env`, if anyone did.
    pub(crate) fn abort_requested(&self, env: &str) -> Option<String> {
        crate::locked(&self.inner.aborts).get(env).cloned()
    }

    pub(crate) fn clear_abort(&self, env: &str) {
        crate::locked(&self.inner.aborts).remove(env);
    }
}

/// Whether the person `who` is the commit author `author` ("Name <email>"): by name, email or
/// the email's local part, ignoring case.
fn is_author(who: &str, author: &str) -> bool {
    let who = who.trim().to_lowercase();
    let author = author.to_lowercase();
    let (name, email) = match author.split_once('<') {
        Some((name, rest)) => (
            name.trim().to_string(),
            rest.trim_end_matches('>').trim().to_string(),
        ),
        None => (author.trim().to_string(), String::new()),
    };
    let local = email.split('@').next().unwrap_or_default().to_string();
    !who.is_empty() && (who == name || who == email || who == local)
}

#[cfg(test)]
mod author_tests {
    #[test]
    fn a_person_is_recognised_as_the_author_by_name_email_or_login() {
        let author = "Alice Smith <alice@example.com>";
        assert!(super::is_author("alice", author));
        assert!(super::is_author("Alice Smith", author));
        assert!(super::is_author("alice@example.com", author));
        assert!(!super::is_author("bob", author));
        assert!(!super::is_author("", author));
    }
}
