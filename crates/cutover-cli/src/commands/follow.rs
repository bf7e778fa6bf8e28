//! Following a release on its server until it ends: `cutover show N --follow`, and a deploy,
//! rollback, promote or approval whose connection broke off. The server carries the release on
//! without its client; the CLI reconnects for up to [`RECONNECT`] and reports the outcome the
//! command would have had, or exits 5 ("outcome unknown") saying how to follow it later.

use std::time::{Duration, Instant};

use cutover_api::{Outcome, ShowView};

use crate::client::{Broken, Client};

/// How long the CLI keeps trying to reach a server it lost mid-command, unless
/// `CUTOVER_RECONNECT` (a duration, e.g. "5m") says otherwise.
pub const RECONNECT: Duration = Duration::from_secs(60);

fn reconnect() -> anyhow::Result<Duration> {
    match std::env::var("CUTOVER_RECONNECT") {
        Ok(raw) => cutover_config::parse_duration(&raw).map_err(|e| {
            cutover_api::Refusal::new(
                format!("CUTOVER_RECONNECT={raw:?}: {e}"),
                Some("write a duration such as \"60s\" or \"5m\", or unset it".into()),
            )
            .into()
        }),
        Err(_) => Ok(RECONNECT),
    }
}
/// Each attempt's own limit, so that a dead link costs seconds, not the whole budget.
const ATTEMPT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(250);

/// The outcome of a command that changes an environment is unknown: the server could not be
/// reached again. Exit code 5.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct OutcomeUnknown {
    pub message: String,
    pub hint: String,
}

/// What a long command's answer became: its outcome, or, when the connection broke off, the
/// outcome of following its release to its end.
pub async fn settle(
    client: &Client,
    env: &str,
    streamed: anyhow::Result<Outcome>,
) -> anyhow::Result<Outcome> {
    let broken = match streamed {
        Ok(outcome) => return Ok(outcome),
        Err(e) => match e.downcast::<Broken>() {
            Ok(broken) => broken,
            Err(e) => return Err(e),
        },
    };
    let Some(id) = broken.release else {
        return Err(OutcomeUnknown {
            message: format!(
                "{broken} before it named a release; whether {env} changed is unknown"
            ),
            hint: format!("`cutover history {env}` shows it once the server answers again"),
        }
        .into());
    };
    eprintln!(
        "{broken}; release {id} carries on there: reconnecting for up to {} s",
        reconnect()?.as_secs()
    );
    follow(client, Some(env), id, false).await
}

/// Follows release `id` until it is live, waits at a gate, or has failed; prints its timeline
/// from the start (`from_start`) or only what happens from now. A server that cannot be
/// reached for [`RECONNECT`] in a row ends it with [`OutcomeUnknown`].
pub async fn follow(
    client: &Client,
    env: Option<&str>,
    id: i64,
    from_start: bool,
) -> anyhow::Result<Outcome> {
    let patience = reconnect()?;
    let mut printed: Option<usize> = if from_start { Some(0) } else { None };
    let mut reached = Instant::now();
    let mut lost = false;
    loop {
        let view: ShowView = match client
            .call_within(ATTEMPT, "GET", &format!("/v1/releases/{id}"), None::<&()>)
            .await
        {
            Ok(view) => view,
            // The server answered no (a release it does not have, a token it refuses).
            Err(e) if e.downcast_ref::<cutover_api::Refusal>().is_some() => return Err(e),
            Err(e) => {
                if reached.elapsed() >= patience {
                    return Err(OutcomeUnknown {
                        message: format!(
                            "the cutover server {} did not answer for {} s ({e}); the outcome of release {id} is unknown",
                            client.server(),
                            patience.as_secs()
                        ),
                        hint: format!(
                            "the server carries the release on: `cutover show {id}{} --follow` follows it to its end",
                            env.map(|env| format!(" --env {env}")).unwrap_or_default()
                        ),
                    }
                    .into());
                }
                if !lost {
                    eprintln!("  lost the server ({e}); retrying");
                    lost = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if lost {
            eprintln!("  reached {} again", client.server());
            lost = false;
        }
        reached = Instant::now();
        let start = *printed.get_or_insert(view.events.len());
        for e in view.events.iter().skip(start) {
            eprintln!(
                "  {}  {:<12}  {}",
                e.at.format("%H:%M:%S%.3f"),
                e.kind,
                e.message
            );
        }
        printed = Some(view.events.len().max(start));
        if let Some(outcome) = ended(&view) {
            return Ok(outcome);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The outcome `deploy` would have had, once the release has one: 0 it went live (or waits at
/// a manual gate), 1 refused before any instance started, 3 its instances failed and the
/// previous version serves, 4 restoring that failed too. (The ledger names each state a
/// release entered as an event of that kind.)
fn ended(view: &ShowView) -> Option<Outcome> {
    let r = &view.release;
    let id = r.id;
    let reason = r
        .reason
        .clone()
        .unwrap_or_else(|| "see its timeline".into());
    let had = |kind: &str| view.events.iter().any(|e| e.kind == kind);
    let (exit_code, message, hint) = match r.state.as_str() {
        "pending" | "starting" | "verifying" => return None,
        "awaiting-approval" => (
            0,
            format!("release {id} waits at {}'s manual gate", r.environment),
            Some(format!("cutover approve {}", r.environment)),
        ),
        _ if r.live_at.is_some() => (
            0,
            format!("release {id} went live in {} ({})", r.environment, r.state),
            None,
        ),
        "failed" if had("restore-failed") => (
            4,
            format!("release {id} failed, and restoring the previous release failed too: {reason}"),
            None,
        ),
        "failed" if had("starting") => (3, format!("release {id} failed: {reason}"), None),
        "failed" => (1, format!("release {id} was refused: {reason}"), None),
        state => (3, format!("release {id} is {state}: {reason}"), None),
    };
    Some(Outcome {
        exit_code,
        release: Some(id),
        message,
        hint,
        logs: Vec::new(),
    })
}
