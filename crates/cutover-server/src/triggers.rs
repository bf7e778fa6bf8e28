//! What reaches the server from outside the machine's user: push webhooks from a forge (over
//! TCP, verified by HMAC or token before anything is parsed) and notifications going out.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use cutover_api::{HookAnswer, RunRequest, TokenGate};
use cutover_config::{Config, NotifyFormat};
use cutover_daemon::StateDir;
use cutover_hooks::{Delivery, Format, Notifier, Receiver, ReplayGuard, Verified};
use tokio::sync::Mutex;

use crate::auth::Caller;
use crate::{convert, ServerEngine};

struct WebhookState {
    engine: ServerEngine,
    state: StateDir,
    secret: String,
    branch: String,
    replays: Mutex<ReplayGuard>,
}

/// Starts the webhook listener if the working tree's config has `[webhook]`.
pub async fn start_webhooks(engine: ServerEngine, state: StateDir, config: &Config) -> Webhooks {
    let Some(webhook) = config.webhook.as_ref() else {
        return Webhooks::default();
    };
    let secret = match webhook.resolve_secret(&state.repo_root()) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => return Webhooks::off("webhooks are off: the [webhook] secret is empty".into()),
        Err(e) => return Webhooks::off(format!("webhooks are off: {e}")),
    };
    let replays = match ReplayGuard::open(&state.path.join("pipeline").join("deliveries")) {
        Ok(g) => g,
        Err(e) => {
            return Webhooks::off(format!("webhooks are off: cannot open the replay log: {e}"))
        }
    };
    let listener = match tokio::net::TcpListener::bind(webhook.listen).await {
        Ok(l) => l,
        Err(e) => {
            return Webhooks::off(format!(
                "webhooks are off: cannot listen on {}: {e}",
                webhook.listen
            ))
        }
    };
    let shared = Arc::new(WebhookState {
        engine: engine.clone(),
        state,
        secret,
        branch: config.pipeline.branch.clone(),
        replays: Mutex::new(replays),
    });
    let push = Router::new()
        .route("/hooks/push", post(receive))
        .with_state(shared);
    let app = push.clone().merge(
        Router::new()
            .route("/v1/approve", post(approve_with_token))
            .route("/v1/reject", post(reject_with_token))
            .layer(axum::middleware::from_fn_with_state(
                engine.clone(),
                crate::auth::require_role,
            ))
            .with_state(engine),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Webhooks {
        said: Some(format!(
            "webhooks: POST http://{}/hooks/push (pushes to {} run the pipeline)",
            webhook.listen, config.pipeline.branch
        )),
        push: Some(push),
    }
}

/// What `start_webhooks` did: a line for the server's log, and the push route, which the HTTPS
/// listener serves too.
#[derive(Default)]
pub struct Webhooks {
    pub said: Option<String>,
    pub push: Option<Router>,
}

impl Webhooks {
    fn off(why: String) -> Webhooks {
        Webhooks {
            said: Some(why),
            push: None,
        }
    }
}

fn answer(status: StatusCode, answer: HookAnswer) -> Response {
    (status, Json(answer)).into_response()
}

async fn receive(
    State(hook): State<Arc<WebhookState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let delivery = Delivery {
        headers: &headers,
        body: &body,
    };
    let verified = match cutover_hooks::verify(&delivery, hook.secret.as_bytes()) {
        Ok(v) => v,
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            return answer(status, HookAnswer::Error(e.to_string()));
        }
    };
    let push = match verified {
        Verified::Push(push) => push,
        Verified::Ping => {
            return answer(
                StatusCode::OK,
                HookAnswer::Pong("cutover is listening".into()),
            )
        }
        Verified::Ignored { event, reason } => {
            return answer(
                StatusCode::ACCEPTED,
                HookAnswer::Ignored(format!("{event}: {reason}")),
            )
        }
    };
    if push.branch != hook.branch {
        return answer(
            StatusCode::ACCEPTED,
            HookAnswer::Ignored(format!("a push to {}, not {}", push.branch, hook.branch)),
        );
    }
    if let Some(id) = &push.delivery_id {
        match hook.replays.lock().await.first_time(id) {
            Ok(true) => {}
            Ok(false) => {
                return answer(
                    StatusCode::OK,
                    HookAnswer::Ignored(format!("delivery {id} was already received")),
                )
            }
            Err(e) => {
                return answer(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    HookAnswer::Error(e.to_string()),
                )
            }
        }
    }
    let request = RunRequest {
        rev: push.sha.clone(),
        trigger: "webhook".into(),
        requested_by: format!(
            "webhook ({}{})",
            push.forge,
            push.pusher
                .as_ref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default()
        ),
        skip_checks: false,
    };
    let (engine, state) = (hook.engine.clone(), hook.state.clone());
    tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let outcome = crate::pipeline::run(engine, state, request, tx).await;
        eprintln!("webhook: {}", outcome.message);
    });
    answer(
        StatusCode::ACCEPTED,
        HookAnswer::Started(format!("a pipeline run for {}", push.sha)),
    )
}

async fn approve_with_token(
    State(engine): State<ServerEngine>,
    Extension(Caller(who, _)): Extension<Caller>,
    Json(body): Json<TokenGate>,
) -> Response {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let choice = cutover_engine::GateChoice {
        release: body.release,
        older: body.older,
    };
    let outcome = engine.approve(&body.env, &who, choice, &tx).await;
    Json(convert::outcome(outcome)).into_response()
}

async fn reject_with_token(
    State(engine): State<ServerEngine>,
    Extension(Caller(who, _)): Extension<Caller>,
    Json(body): Json<TokenGate>,
) -> Response {
    let choice = cutover_engine::GateChoice {
        release: body.release,
        older: true,
    };
    let reason = body.reason.unwrap_or_else(|| "no reason given".into());
    Json(convert::outcome(
        engine.reject(&body.env, &who, &reason, choice),
    ))
    .into_response()
}

/// The server's notifier, once `start_notifications` made one: for the events that are not
/// release state changes (a pipeline run that ended without shipping).
static NOTIFIER: std::sync::OnceLock<Notifier> = std::sync::OnceLock::new();

/// Sends `event` to the `[[notify]]` receivers, if any; never waits.
pub fn notify(event: impl Into<cutover_hooks::Notification>) {
    if let Some(notifier) = NOTIFIER.get() {
        notifier.notify(event);
    }
}

/// Sends every notable release state change to the config's `[[notify]]` receivers. A
/// receiver whose header secrets cannot be resolved is left out, with a warning naming them.
pub fn start_notifications(
    engine: &ServerEngine,
    state: &StateDir,
    config: &Config,
) -> Option<String> {
    if config.notify.is_empty() {
        return None;
    }
    let root = state.repo_root();
    let mut receivers = Vec::new();
    for n in &config.notify {
        match n.resolve_headers(&root) {
            Ok(headers) => receivers.push(Receiver {
                url: n.url.clone(),
                format: match n.format {
                    NotifyFormat::Json => Format::Json,
                    NotifyFormat::Slack => Format::Slack,
                    NotifyFormat::Teams => Format::Teams,
                },
                headers,
                ca_bundle: n.ca_bundle.as_ref().map(|p| root.join(p)),
            }),
            Err(e) => eprintln!(
                "warning: notifications to {} are off: {e}",
                cutover_hooks::redact(&n.url)
            ),
        }
    }
    let urls: Vec<String> = receivers
        .iter()
        .map(|r| cutover_hooks::redact(&r.url))
        .collect();
    let notifier = Notifier::new(receivers);
    let _ = NOTIFIER.set(notifier.clone());
    let handle = tokio::runtime::Handle::current();
    engine.observe(Arc::new(move |release| {
        let event = convert::release_event(release);
        let notifier = notifier.clone();
        // The observer may be called outside the runtime's context (a blocking thread).
        handle.spawn(async move { notifier.notify(event) });
    }));
    Some(format!(
        "notifications: release state changes go to {}",
        urls.join(", ")
    ))
}
