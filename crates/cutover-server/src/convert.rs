//! The one place where engine, ledger and runtime types become wire types (`cutover_api`):
//! explicit conversions, so that neither the engine nor the ledger knows a JSON shape.

use cutover_api as api;
use cutover_engine::{Outcome, Progress};
use cutover_ledger::{CheckRecord, EdgeHold, EdgeHoldKind, Event, Freeze, PipelineRun, Release};
use cutover_runtime::{InstanceInfo, InstanceState};

pub fn outcome(o: Outcome) -> api::Outcome {
    api::Outcome {
        exit_code: o.exit_code,
        release: o.release,
        message: o.message,
        hint: o.hint,
        logs: o.logs,
    }
}

pub fn line(p: Progress) -> api::Line {
    match p {
        Progress::Step { message } => api::Line::Step { message },
        Progress::Detail { message } => api::Line::Detail { message },
        Progress::Release { id } => api::Line::Release { id },
    }
}

/// A progress line back into the engine's progress (an outcome line is none).
pub fn progress(line: api::Line) -> Option<Progress> {
    match line {
        api::Line::Step { message } => Some(Progress::Step { message }),
        api::Line::Detail { message } => Some(Progress::Detail { message }),
        api::Line::Release { id } => Some(Progress::Release { id }),
        api::Line::Outcome(_) | api::Line::Heartbeat => None,
    }
}

pub fn release(r: &Release) -> api::ReleaseView {
    api::ReleaseView {
        id: r.id,
        environment: r.env.clone(),
        version: r.version.clone(),
        artifact: r.artifact.clone(),
        digest: r.digest.clone(),
        kind: r.kind.as_str().into(),
        state: r.state.as_str().into(),
        reason: r.reason.clone(),
        known_good: r.passed_monitor && matches!(r.state.as_str(), "live" | "superseded"),
        restored_from: r.restored_from,
        requested_by: r.requested_by.clone(),
        trigger: r.trigger.clone(),
        approved_by: r.approved_by.clone(),
        approved_at: r.approved_at,
        created_at: r.created_at,
        started_at: r.started_at,
        live_at: r.live_at,
        monitor_until: r.monitor_until,
        ended_at: r.ended_at,
        promoted_from: r.promoted_from.as_ref().map(|p| api::Promotion {
            release: p.release,
            environment: p.env.clone(),
        }),
    }
}

pub fn release_ref(r: &Release) -> api::ReleaseRef {
    api::ReleaseRef {
        release: r.id,
        version: r.version.clone(),
        digest: r.digest.clone(),
        since: r.live_at,
    }
}

pub fn live(r: &Release) -> api::LiveView {
    api::LiveView {
        release: r.id,
        version: r.version.clone(),
        digest: r.digest.clone(),
        since: r.live_at,
        deployed_by: r.requested_by.clone(),
        monitoring_until: if r.passed_monitor {
            None
        } else {
            r.monitor_until
        },
    }
}

pub fn snapshot(r: &Release) -> api::SnapshotView {
    api::SnapshotView {
        config_text: r.snapshot.config_text.clone(),
        overrides: r.snapshot.overrides.clone(),
        secrets: r.snapshot.secrets.clone(),
    }
}

pub fn event(e: &Event) -> api::EventView {
    api::EventView {
        at: e.at,
        kind: e.kind.clone(),
        message: e.message.clone(),
    }
}

/// The hold on an environment's edge as `status` shows it: maintenance, or a pause that has
/// not run out.
pub fn edge_hold(hold: Option<EdgeHold>) -> (Option<api::MaintenanceView>, Option<api::PauseView>) {
    match hold {
        Some(EdgeHold {
            kind: EdgeHoldKind::Maintenance { message },
            by,
            at,
        }) => (Some(api::MaintenanceView { message, by, at }), None),
        Some(EdgeHold {
            kind: EdgeHoldKind::Pause { until },
            by,
            at,
        }) if until > chrono::Utc::now() => (None, Some(api::PauseView { until, by, at })),
        _ => (None, None),
    }
}

pub fn freeze(f: Freeze) -> api::FreezeView {
    api::FreezeView {
        by: f.by,
        reason: f.reason,
        at: f.at,
    }
}

pub fn instance(i: &InstanceInfo, serving: bool) -> api::InstanceView {
    api::InstanceView {
        id: i.id.clone(),
        release: i.release,
        version: i.version.clone(),
        address: i.address,
        pid: i.pid,
        supervisor_pid: i.supervisor_pid,
        state: instance_state(i.state).into(),
        role: if serving { "serving" } else { "standby" }.into(),
        restarts: i.restarts,
        started_at: i.started_at,
        log_file: i.log_file.as_ref().map(|f| f.display().to_string()),
        node: i.node.clone(),
        last_restart: i.exits.last().map(|e| api::RestartView {
            at: e.at,
            reason: e.status.clone(),
        }),
    }
}

fn instance_state(s: InstanceState) -> &'static str {
    match s {
        InstanceState::Starting => "starting",
        InstanceState::Running => "running",
        InstanceState::Restarting => "restarting",
        InstanceState::Stopping => "stopping",
        InstanceState::Stopped => "stopped",
        InstanceState::Unsupervised => "unsupervised",
    }
}

pub fn check(c: CheckRecord) -> api::CheckView {
    api::CheckView {
        name: c.name,
        status: c.status,
        duration_ms: c.duration_ms,
        exit: c.exit,
        log_file: c.log_file,
    }
}

pub fn run(r: PipelineRun) -> api::PipelineRunView {
    api::PipelineRunView {
        id: r.id,
        sha: r.sha,
        trigger: r.trigger,
        requested_by: r.requested_by,
        state: r.state,
        exit_code: r.exit_code,
        message: r.message,
        started_at: r.started_at,
        ended_at: r.ended_at,
    }
}

/// What a `[[notify]]` URL is told of a release state change.
pub fn release_event(r: &Release) -> api::ReleaseEvent {
    api::ReleaseEvent {
        app: r.app.clone(),
        environment: r.env.clone(),
        release: r.id,
        version: r.version.clone(),
        digest: r.digest.clone(),
        state: r.state.as_str().to_string(),
        reason: r.reason.clone(),
        at: chrono::Utc::now(),
    }
}

pub fn refusal(r: cutover_ledger::Refusal) -> cutover_api::RefusedCall {
    cutover_api::RefusedCall {
        at: r.at.unwrap_or_default(),
        token: r.token_name,
        method: r.method,
        path: r.path,
        status: r.status,
        reason: r.reason,
    }
}
