//! Writing the ledger from the engine: state changes (told to the observer when people are
//! notified of them), events, refusals; and reading a release's committed config back.

use cutover_config::Config;
use cutover_ledger::{Release, ReleaseState, Transition};
use cutover_runtime::Runtime;

use crate::{Edge, Engine, Outcome, Prober, Progress, ProgressTx};

pub(crate) fn send(progress: &ProgressTx, p: Progress) {
    let _ = progress.send(p);
}

/// The config a release runs: `cutover.toml` as committed in its version.
pub(crate) fn parse_config(release: &Release) -> Result<Config, String> {
    Config::parse(
        &release.snapshot.config_text,
        &cutover_config::committed_origin(&release.version),
    )
    .map_err(|e| e.to_string())
}

impl<R: Runtime, E: Edge, P: Prober> Engine<R, E, P> {
    /// Marks a release `failed` before any of its instances started: exit 1, nothing changed.
    pub(crate) fn refuse(
        &self,
        release: &Release,
        message: String,
        hint: Option<String>,
    ) -> Outcome {
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
        self.transition_all(&[Transition {
            id,
            state,
            reason,
            message,
        }]);
    }

    /// Several state changes in one ledger transaction (a cut-over: one release live, the one
    /// it takes over from ended), then the observer hears of each notable one.
    pub(crate) fn transition_all(&self, transitions: &[Transition<'_>]) {
        if let Err(e) = self.with_ledger(|l| l.transition_all(transitions)) {
            let what: Vec<String> = transitions
                .iter()
                .map(|t| format!("release {} → {}", t.id, t.state))
                .collect();
            eprintln!("cutover: ledger write failed for {}: {e}", what.join(", "));
            return;
        }
        let observer = crate::locked(&self.inner.observer).clone();
        let Some(observer) = observer else {
            return;
        };
        for t in transitions {
            let notable = matches!(
                t.state,
                ReleaseState::AwaitingApproval
                    | ReleaseState::Live
                    | ReleaseState::Failed
                    | ReleaseState::RolledBack
            );
            if notable {
                if let Ok(release) = self.with_ledger(|l| l.get(t.id)) {
                    observer(&release);
                }
            }
        }
    }

    pub(crate) fn event(&self, id: i64, kind: &str, message: &str) {
        let _ = self.with_ledger(|l| l.add_event(id, kind, message));
    }
}

pub(crate) use cutover_git::short;

/// Splits a runtime's error text into its message and the `hint:` line it may end with.
pub(crate) fn split_hint(text: &str) -> (String, Option<String>) {
    match text.split_once("\nhint: ") {
        Some((message, hint)) => (message.to_string(), Some(hint.to_string())),
        None => (text.to_string(), None),
    }
}
