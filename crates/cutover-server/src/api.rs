//! The local JSON API. Long commands (deploy, rollback) answer with NDJSON: one progress
//! object per line, then one `{"type":"outcome", …}` line. The work runs in its own task,
//! so a client that disconnects (Ctrl-C) never leaves a release half-done.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cutover_api::{
    ChecksBody, DeployBody, EnvBody, EnvironmentView, GateBody, HistoryQuery, HistoryView,
    InstanceLogs, Line, LogsQuery, MaintenanceBody, PauseBody, Ping, PromoteBody, PruneBody,
    Refusal, RefusalsView, Revoked, Role, RollbackBody, RollbackTargetQuery, RunEvent, RunRequest,
    RunView, RunsQuery, RunsView, ShowView, StatusView, Stopped, TargetView, TokenBody,
    TokenCreated, TokenEntry, Verdict, VerdictQuery,
};
use cutover_config::Config;
use cutover_daemon::StateDir;
use cutover_engine::{DeployRequest, Outcome, Progress, PromoteRequest, RollbackRequest};
use cutover_ledger::PromotedFrom;
use cutover_ledger::ReleaseState;
use cutover_runtime::Runtime;
use tokio::sync::mpsc;

use crate::convert;
use crate::ServerEngine;

pub struct AppState {
    pub engine: ServerEngine,
    pub state: StateDir,
    pub stop: tokio::sync::watch::Sender<bool>,
    /// When this server started (pipeline runs older than it are not its own).
    pub started_at: chrono::DateTime<chrono::Utc>,
}

pub(crate) type Shared = Arc<AppState>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/ping", get(ping))
        .route("/v1/status", get(status))
        .route("/v1/history/{env}", get(history))
        .route("/v1/releases/{id}", get(show))
        .route("/v1/releases/{id}/wait", get(wait))
        .route("/v1/rollback-target/{env}", get(rollback_target))
        .route("/v1/logs/{env}", get(logs))
        .route("/v1/logs/{env}/access", get(access_log))
        .route("/v1/deploy", post(deploy))
        .route("/v1/rollback", post(rollback))
        .route("/v1/promote", post(promote))
        .route("/v1/live/{env}", get(live))
        .route("/v1/down", post(down))
        .route("/v1/server/stop", post(server_stop))
        .route("/v1/prune", post(prune))
        .route("/v1/approve", post(approve))
        .route("/v1/reject", post(reject))
        .route("/v1/freeze", post(freeze))
        .route("/v1/unfreeze", post(unfreeze))
        .route("/v1/maintenance", post(maintenance))
        .route("/v1/pause", post(pause))
        .route("/v1/resume", post(resume))
        .route("/v1/abort", post(abort))
        .route("/v1/pipeline/run", post(pipeline_run))
        .route("/v1/checks/run", post(checks_run))
        .route("/v1/checks/verdict", post(checks_verdict))
        .route("/v1/tokens", get(tokens).post(create_token))
        .route("/v1/tokens/revoke", post(revoke_token))
        .route("/v1/refusals", get(refusals))
        .route("/v1/whoami", get(whoami))
        .route("/v1/blobs/missing", post(crate::ship::missing))
        .route(
            "/v1/blobs/{digest}",
            get(crate::ship::get_blob).put(crate::ship::put_blob),
        )
        .route(
            "/v1/artifacts",
            axum::routing::put(crate::ship::put_artifact),
        )
        .route(
            "/v1/artifacts/{app}/{version}",
            get(crate::ship::get_artifact),
        )
        .route("/v1/passed/{env}/{version}", get(crate::ship::passed))
        .route("/v1/checks/{sha}", get(checks_of))
        .route("/v1/pipeline/runs", get(pipeline_list))
        .route("/v1/pipeline/runs/{id}", get(pipeline_show))
        .with_state(state)
}

/// An error answer: a [`Refusal`] with a status code.
fn error(status: StatusCode, message: impl Into<String>, hint: Option<String>) -> Response {
    (status, Json(Refusal::new(message, hint))).into_response()
}

/// An engine's outcome as the wire's.
fn answer(outcome: Outcome) -> Json<cutover_api::Outcome> {
    Json(convert::outcome(outcome))
}

async fn ping(State(app): State<Shared>) -> Json<Ping> {
    Json(Ping {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        state_dir: app.state.path.display().to_string(),
        binary_replaced: cutover_daemon::started_exe().is_some_and(|exe| exe.replaced()),
    })
}

async fn status(State(app): State<Shared>) -> Response {
    let engine = &app.engine;
    let mut names: Vec<String> = engine.with_ledger(|l| l.environments()).unwrap_or_default();
    let working = Config::load(&app.state.repo_root().join(cutover_config::CONFIG_FILE)).ok();
    if let Some(cfg) = &working {
        for name in cfg.environments.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names.sort();
    let all_instances = engine.runtime().list().await.unwrap_or_default();
    let acme = cutover_engine::Edge::certificates(engine.edge()).await;
    let mut environments = Vec::new();
    for name in names {
        let live = engine.with_ledger(|l| l.live(&name)).ok().flatten();
        let previous = engine
            .with_ledger(|l| l.rollback_target(&name))
            .ok()
            .flatten();
        let config = live
            .as_ref()
            .and_then(|r| Config::parse(&r.snapshot.config_text, "snapshot").ok())
            .or_else(|| working.clone());
        let env_cfg = config.as_ref().and_then(|c| c.environments.get(&name));
        let listen = env_cfg.map(|e| e.listen.to_string());
        let hosts = env_cfg.map(|e| e.hosts.clone()).unwrap_or_default();
        let certificates = env_cfg
            .map(|e| crate::certificates::of_environment(e, &acme))
            .unwrap_or_default();
        let serving: Vec<_> = engine
            .serving_instances(&name)
            .await
            .into_iter()
            .map(|i| i.id)
            .collect();
        let instances = all_instances
            .iter()
            .filter(|i| i.env == name)
            .map(|i| convert::instance(i, serving.contains(&i.id)))
            .collect();
        let (maintenance, paused) =
            convert::edge_hold(engine.with_ledger(|l| l.edge_hold(&name)).ok().flatten());
        environments.push(EnvironmentView {
            server: None,
            unreachable: None,
            name: name.clone(),
            listen,
            hosts,
            live: live.as_ref().map(convert::live),
            previous: previous.as_ref().map(convert::release_ref),
            instances,
            awaiting_approval: engine
                .with_ledger(|l| l.awaiting(&name))
                .unwrap_or_default()
                .iter()
                .map(convert::release_ref)
                .collect(),
            frozen: engine
                .with_ledger(|l| l.frozen(&name))
                .ok()
                .flatten()
                .map(convert::freeze),
            maintenance,
            paused,
            certificates,
        });
    }
    Json(StatusView { environments }).into_response()
}

async fn history(
    State(app): State<Shared>,
    Path(env): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    match app
        .engine
        .with_ledger(|l| l.history(&env, q.limit.unwrap_or(50)))
    {
        Ok(releases) => Json(HistoryView {
            environment: env,
            releases: releases.iter().map(convert::release).collect(),
        })
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    }
}

async fn show(State(app): State<Shared>, Path(id): Path<i64>) -> Response {
    let engine = &app.engine;
    let release = match engine.with_ledger(|l| l.find(id)) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("there is no release {id}"),
                Some("list releases with: cutover history <env>".into()),
            )
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    };
    let events = engine.with_ledger(|l| l.events(id)).unwrap_or_default();
    let serving: Vec<_> = engine
        .serving_instances(&release.env)
        .await
        .into_iter()
        .map(|i| i.id)
        .collect();
    let instances = engine
        .runtime()
        .list()
        .await
        .unwrap_or_default()
        .iter()
        // A rollback inside a monitor window serves with the instances it switched back to.
        .filter(|i| {
            i.release == id || (release.state == ReleaseState::Live && serving.contains(&i.id))
        })
        .map(|i| convert::instance(i, serving.contains(&i.id)))
        .collect();
    Json(ShowView {
        release: convert::release(&release),
        config: convert::snapshot(&release),
        events: events.iter().map(convert::event).collect(),
        instances,
    })
    .into_response()
}

async fn wait(State(app): State<Shared>, Path(id): Path<i64>) -> Json<cutover_api::Outcome> {
    answer(app.engine.wait_monitor(id).await)
}

async fn rollback_target(
    State(app): State<Shared>,
    Path(env): Path<String>,
    Query(q): Query<RollbackTargetQuery>,
) -> Response {
    match app.engine.rollback_target(&env, q.to.as_deref()) {
        Ok(r) => Json(TargetView {
            release: convert::release(&r),
            config_text: r.snapshot.config_text.clone(),
        })
        .into_response(),
        Err(outcome) => error(StatusCode::CONFLICT, outcome.message, outcome.hint),
    }
}

/// The release live in an environment (`null`: none) with its committed config, so that a
/// promotion's caller can resolve that config's secrets. The promotion itself takes what is
/// live when it holds the target's lock, whatever this said.
async fn live(State(app): State<Shared>, Path(env): Path<String>) -> Response {
    match app.engine.with_ledger(|l| l.live(&env)) {
        Ok(live) => Json(live.map(|r| TargetView {
            release: convert::release(&r),
            config_text: r.snapshot.config_text.clone(),
        }))
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    }
}

async fn logs(
    State(app): State<Shared>,
    Path(env): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Response {
    let runtime = app.engine.runtime();
    let mut out = Vec::new();
    for instance in runtime
        .list()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i.env == env)
    {
        let lines = runtime
            .logs(&instance.id, q.lines.unwrap_or(50))
            .await
            .unwrap_or_default();
        out.push(InstanceLogs {
            id: instance.id,
            release: instance.release,
            log_file: instance.log_file.map(|f| f.display().to_string()),
            lines,
        });
    }
    Json(out).into_response()
}

async fn access_log(
    State(app): State<Shared>,
    Path(env): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Response {
    let file = app.state.access_log(&env);
    let lines = q.lines.unwrap_or(50);
    let read = file.clone();
    let tail = tokio::task::spawn_blocking(move || cutover_daemon::log::tail(&read, lines))
        .await
        .map_err(std::io::Error::other)
        .and_then(|tail| tail);
    match tail {
        Ok(lines) => Json(cutover_api::AccessLogView {
            env,
            log_file: file.display().to_string(),
            lines,
        })
        .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not read the access log {}: {e}", file.display()),
            None,
        ),
    }
}

async fn approve(State(app): State<Shared>, Json(body): Json<GateBody>) -> Response {
    let choice = cutover_engine::GateChoice {
        release: body.release,
        older: body.older,
    };
    stream_outcome(
        move |engine, tx| async move { engine.approve(&body.env, &body.by, choice, &tx).await },
        app.engine.clone(),
    )
}

async fn reject(
    State(app): State<Shared>,
    Json(body): Json<GateBody>,
) -> Json<cutover_api::Outcome> {
    let choice = cutover_engine::GateChoice {
        release: body.release,
        older: true,
    };
    let reason = body.reason.unwrap_or_else(|| "no reason given".into());
    answer(app.engine.reject(&body.env, &body.by, &reason, choice))
}

async fn freeze(
    State(app): State<Shared>,
    Json(body): Json<EnvBody>,
) -> Json<cutover_api::Outcome> {
    let reason = body.reason.unwrap_or_else(|| "no reason given".into());
    answer(app.engine.freeze(&body.env, &body.by, &reason))
}

/// The longest pause: requests held longer than clients wait help nobody.
const MAX_PAUSE_MS: u64 = 10 * 60 * 1000;

async fn maintenance(State(app): State<Shared>, Json(body): Json<MaintenanceBody>) -> Response {
    let message = body.message.unwrap_or_default();
    if body.on && message.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "maintenance needs a message for the people it turns away",
            Some("write: cutover maintenance ENV on --message \"Back at 14:00\"".into()),
        );
    }
    answer(
        app.engine
            .maintenance(&body.env, body.on, &message, &body.by)
            .await,
    )
    .into_response()
}

async fn pause(State(app): State<Shared>, Json(body): Json<PauseBody>) -> Response {
    let max_ms = body.max_ms.unwrap_or(30_000);
    if max_ms == 0 || max_ms > MAX_PAUSE_MS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("--max of {max_ms} ms is out of range"),
            Some("pause for 1s to 10m, e.g. --max 30s".into()),
        );
    }
    let max = std::time::Duration::from_millis(max_ms);
    answer(app.engine.pause(&body.env, max, &body.by).await).into_response()
}

async fn resume(State(app): State<Shared>, Json(body): Json<EnvBody>) -> Response {
    answer(app.engine.resume(&body.env).await).into_response()
}

async fn unfreeze(
    State(app): State<Shared>,
    Json(body): Json<EnvBody>,
) -> Json<cutover_api::Outcome> {
    answer(app.engine.unfreeze(&body.env))
}

async fn abort(State(app): State<Shared>, Json(body): Json<EnvBody>) -> Json<cutover_api::Outcome> {
    answer(app.engine.abort(&body.env, &body.by))
}

async fn pipeline_run(State(app): State<Shared>, Json(body): Json<RunRequest>) -> Response {
    let state = app.state.clone();
    stream_outcome(
        move |engine, tx| async move { crate::pipeline::run(engine, state, body, tx).await },
        app.engine.clone(),
    )
}

async fn create_token(State(app): State<Shared>, Json(body): Json<TokenBody>) -> Response {
    let valid = !body.name.is_empty()
        && body
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if !valid {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{:?} is not a name for a token", body.name),
            Some("use the person's login, e.g. alice".into()),
        );
    }
    match app.engine.with_ledger(|l| {
        let role = body.role.unwrap_or(Role::Deploy);
        l.create_token(&body.name, role.as_str(), &body.by)
    }) {
        Ok(token) => Json(TokenCreated {
            name: body.name,
            token,
        })
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    }
}

async fn whoami(caller: Option<axum::Extension<crate::auth::Caller>>) -> Json<cutover_api::WhoAmI> {
    Json(match caller {
        Some(axum::Extension(crate::auth::Caller(name, role))) => {
            cutover_api::WhoAmI { name, role }
        }
        None => cutover_api::WhoAmI {
            name: cutover_daemon::current_user(),
            role: Role::Admin,
        },
    })
}

async fn refusals(State(app): State<Shared>) -> Response {
    match app.engine.with_ledger(|l| l.refusals(100)) {
        Ok(list) => Json(RefusalsView {
            refusals: list.into_iter().map(convert::refusal).collect(),
        })
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    }
}

async fn tokens(State(app): State<Shared>) -> Response {
    match app.engine.with_ledger(|l| l.tokens()) {
        Ok(list) => Json(
            list.into_iter()
                .map(|(name, role, created_at)| TokenEntry {
                    created_at,
                    name,
                    role: Role::parse(&role).unwrap_or(Role::Read),
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    }
}

async fn revoke_token(State(app): State<Shared>, Json(body): Json<TokenBody>) -> Response {
    match app.engine.with_ledger(|l| l.revoke_token(&body.name)) {
        Ok(true) => Json(Revoked { revoked: body.name }).into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("{} has no token", body.name),
            None,
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    }
}

async fn checks_run(State(app): State<Shared>, Json(body): Json<ChecksBody>) -> Response {
    let state = app.state.clone();
    stream_outcome(
        move |engine, tx| async move {
            crate::pipeline::run_checks_only(engine, state, body.rev, tx).await
        },
        app.engine.clone(),
    )
}

/// Whether a commit's checks let it be built and deployed (the checks gate of `build` and
/// `deploy`).
async fn checks_verdict(
    State(app): State<Shared>,
    Json(query): Json<VerdictQuery>,
) -> Json<Verdict> {
    Json(crate::policy::verdict(&app.engine, &app.state, &query))
}

/// The latest check results of a commit (empty: its checks never ran).
async fn checks_of(State(app): State<Shared>, Path(sha): Path<String>) -> Response {
    match app.engine.with_ledger(|l| l.checks(&sha)) {
        Ok(records) => {
            Json(records.into_iter().map(convert::check).collect::<Vec<_>>()).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    }
}

async fn pipeline_list(State(app): State<Shared>, Query(q): Query<RunsQuery>) -> Response {
    match app.engine.with_ledger(|l| l.runs(q.limit.unwrap_or(20))) {
        Ok(runs) => Json(RunsView {
            runs: runs.into_iter().map(convert::run).collect(),
        })
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    }
}

async fn pipeline_show(State(app): State<Shared>, Path(id): Path<i64>) -> Response {
    let run = match app.engine.with_ledger(|l| l.run(id)) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!("there is no pipeline run {id}"),
                None,
            )
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    };
    let checks = app
        .engine
        .with_ledger(|l| l.checks(&run.sha))
        .unwrap_or_default();
    let events = std::fs::read_to_string(crate::pipeline::events_file(&app.state, id))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<RunEvent>(l).ok())
        .collect();
    Json(RunView {
        run: convert::run(run),
        checks: checks.into_iter().map(convert::check).collect(),
        events,
    })
    .into_response()
}

/// `POST /v1/deploy`. The server decides what must happen first: an image a container
/// environment would pull by digest is published here if it never was (the pipeline publishes
/// in the server too, so one rule serves every caller). The commit's author, who may not
/// approve the release, is looked up here unless the caller says.
async fn deploy(State(app): State<Shared>, Json(body): Json<DeployBody>) -> Response {
    let state = app.state.clone();
    let author = body
        .author
        .or_else(|| crate::policy::author(&state, &body.app, &body.version));
    // What the caller read on other servers counts only for the version it deploys.
    let passed_elsewhere = body
        .passed_elsewhere
        .iter()
        .filter(|p| p.version == body.version)
        .map(|p| (p.environment.clone(), p.server.clone()))
        .collect();
    let request = DeployRequest {
        env: body.env,
        app: body.app,
        version: body.version,
        overrides: body.overrides,
        secrets: body.secrets,
        requested_by: body.requested_by,
        queue: body.queue,
        artifact_login: body.registry_login,
        trigger: body.trigger,
        author,
        skip_checks: body.skip_checks,
        passed_elsewhere,
        promoted_from: body.promoted_from.map(|from| PromotedFrom {
            release: from.release,
            env: format!("{} on {}", from.environment, from.server),
            digest: from.digest,
        }),
    };
    stream_outcome(
        move |engine, tx| async move {
            let published = crate::policy::publish_if_needed(
                &state,
                &request.app,
                &request.version,
                &request.env,
                request.artifact_login.clone(),
                &tx,
            )
            .await;
            match published {
                Ok(()) => engine.deploy(request, &tx).await,
                Err(outcome) => outcome,
            }
        },
        app.engine.clone(),
    )
}

async fn rollback(State(app): State<Shared>, Json(body): Json<RollbackBody>) -> Response {
    let request = RollbackRequest {
        env: body.env,
        to: body.to,
        secrets: body.secrets,
        requested_by: body.requested_by,
        queue: body.queue,
        artifact_login: body.registry_login,
    };
    stream_outcome(
        move |engine, tx| async move { engine.rollback(request, &tx).await },
        app.engine.clone(),
    )
}

/// `POST /v1/promote`: exactly the release live in `from`, to `to`, as a promotion of it.
async fn promote(State(app): State<Shared>, Json(body): Json<PromoteBody>) -> Response {
    let request = PromoteRequest {
        from: body.from,
        to: body.to,
        secrets: body.secrets,
        requested_by: body.requested_by,
        queue: body.queue,
        artifact_login: body.registry_login,
    };
    stream_outcome(
        move |engine, tx| async move { engine.promote(request, &tx).await },
        app.engine.clone(),
    )
}

/// How often a long command's answer says the server is still there (the CLI gives up on a
/// remote server after 15 s of silence).
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

fn stream_outcome<F, Fut>(work: F, engine: ServerEngine) -> Response
where
    F: FnOnce(ServerEngine, mpsc::UnboundedSender<Progress>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Outcome> + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
    let (line_tx, line_rx) = mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        let forward_tx = line_tx.clone();
        let forward = tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let _ = forward_tx.send(to_line(&convert::line(p)));
            }
        });
        // A heartbeat while the work runs, so that a client can tell a quiet deploy (a long
        // health check) from a dead connection; it stops before the outcome, which ends the
        // answer.
        let beat_tx = line_tx.clone();
        let heartbeat = tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            tick.tick().await;
            loop {
                tick.tick().await;
                if beat_tx.send(to_line(&Line::Heartbeat)).is_err() {
                    break;
                }
            }
        });
        let outcome = work(engine, tx).await;
        heartbeat.abort();
        let _ = forward.await;
        let _ = line_tx.send(to_line(&Line::Outcome(convert::outcome(outcome))));
    });
    let stream = futures_util::stream::unfold(line_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn to_line(line: &Line) -> Bytes {
    let mut s = serde_json::to_string(line).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    Bytes::from(s)
}

async fn prune(State(app): State<Shared>, Json(body): Json<PruneBody>) -> Response {
    match crate::prune::run(&app.engine, &body).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => match e.downcast::<Refusal>() {
            Ok(refusal) => (StatusCode::BAD_REQUEST, Json(refusal)).into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
        },
    }
}

/// Stops this server and nothing else: the instances and the edge serve on, and the next
/// command (or `cutover server restart`) starts a server that takes them over. Refused while a
/// change of an environment or a pipeline run is under way: a stop would interrupt it.
async fn server_stop(State(app): State<Shared>) -> Response {
    let mut under_way: Vec<String> = app
        .engine
        .busy()
        .into_iter()
        .map(|(env, who)| format!("{env}: {who}"))
        .collect();
    let started = app.started_at;
    let runs = app.engine.with_ledger(|l| l.runs(50)).unwrap_or_default();
    under_way.extend(
        runs.iter()
            .filter(|r| r.state == "running" && r.started_at >= started)
            .map(|r| format!("pipeline run {} of {}", r.id, short(&r.sha))),
    );
    if !under_way.is_empty() {
        return error(
            StatusCode::CONFLICT,
            format!(
                "the server is busy; a stop now would interrupt {}",
                under_way.join("; ")
            ),
            Some(
                "wait for it to finish (`cutover status`), then stop or restart the server".into(),
            ),
        );
    }
    let _ = app.stop.send(true);
    Json(Stopped { stopped: true }).into_response()
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

async fn down(State(app): State<Shared>) -> Response {
    app.engine.shut_down_everything().await;
    let _ = app.stop.send(true);
    Json(Stopped { stopped: true }).into_response()
}
