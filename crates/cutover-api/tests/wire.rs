//! The JSON shapes users and scripts depend on, byte for byte.

use chrono::{TimeZone, Utc};
use cutover_api::{HookAnswer, Line, Outcome, Refusal, RunEvent, RunEventKind};

#[test]
fn progress_and_outcome_lines_keep_their_shape() {
    let step = serde_json::to_string(&Line::step("cutting over")).unwrap();
    assert_eq!(step, r#"{"type":"step","message":"cutting over"}"#);
    let detail = serde_json::to_string(&Line::detail("probe 1: 500")).unwrap();
    assert_eq!(detail, r#"{"type":"detail","message":"probe 1: 500"}"#);
    // The release a command created, and the heartbeat of a quiet answer.
    let named = serde_json::to_string(&Line::Release { id: 7 }).unwrap();
    assert_eq!(named, r#"{"type":"release","id":7}"#);
    let beat = serde_json::to_string(&Line::Heartbeat).unwrap();
    assert_eq!(beat, r#"{"type":"heartbeat"}"#);
    assert_eq!(
        serde_json::from_str::<Line>(&beat).unwrap(),
        Line::Heartbeat
    );
    let done = Line::Outcome(Outcome {
        exit_code: 0,
        release: Some(7),
        message: "live".into(),
        hint: None,
        logs: Vec::new(),
    });
    assert_eq!(
        serde_json::to_string(&done).unwrap(),
        r#"{"type":"outcome","exit_code":0,"release":7,"message":"live"}"#
    );
    let failed = Line::Outcome(Outcome {
        exit_code: 3,
        release: None,
        message: "failed".into(),
        hint: Some("see logs".into()),
        logs: vec!["boom".into()],
    });
    let text = serde_json::to_string(&failed).unwrap();
    assert_eq!(
        text,
        r#"{"type":"outcome","exit_code":3,"release":null,"message":"failed","hint":"see logs","logs":["boom"]}"#
    );
    assert_eq!(serde_json::from_str::<Line>(&text).unwrap(), failed);
}

#[test]
fn a_refusal_is_error_and_hint() {
    let r = Refusal::new("env is busy", Some("pass --queue".to_string()));
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"{"error":"env is busy","hint":"pass --queue"}"#
    );
    let bare: Refusal = serde_json::from_str(r#"{"error":"no"}"#).unwrap();
    assert_eq!(bare, Refusal::new("no", None));
}

#[test]
fn run_events_are_kept_with_an_offset_time_and_read_without_one() {
    let at = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
    let event = RunEvent::new(&Line::step("checks: 2"), at).unwrap();
    let text = serde_json::to_string(&event).unwrap();
    assert_eq!(
        text,
        r#"{"at":"2025-01-02T03:04:05+00:00","message":"checks: 2","type":"step"}"#
    );
    assert_eq!(serde_json::from_str::<RunEvent>(&text).unwrap(), event);
    let old: RunEvent = serde_json::from_str(r#"{"type":"detail","message":"x"}"#).unwrap();
    assert_eq!((old.at, old.kind), (None, RunEventKind::Detail));
    let outcome = Line::Outcome(Outcome {
        exit_code: 0,
        release: None,
        message: String::new(),
        hint: None,
        logs: Vec::new(),
    });
    assert!(RunEvent::new(&outcome, at).is_none());
}

#[test]
fn webhook_answers_are_one_key_objects() {
    assert_eq!(
        serde_json::to_string(&HookAnswer::Started("a pipeline run for abc".into())).unwrap(),
        r#"{"started":"a pipeline run for abc"}"#
    );
    assert_eq!(
        serde_json::to_string(&HookAnswer::Ignored("x".into())).unwrap(),
        r#"{"ignored":"x"}"#
    );
}

#[test]
fn a_notification_names_its_kind_beside_the_event_fields() {
    let event = cutover_api::ReleaseEvent {
        app: "tasks".into(),
        environment: "staging".into(),
        release: 7,
        version: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c".into(),
        digest: "sha256:ab".into(),
        state: "live".into(),
        reason: None,
        at: Utc.with_ymd_and_hms(2025, 5, 1, 12, 0, 0).unwrap(),
    };
    let n = cutover_api::Notification::from(event);
    let text = serde_json::to_string(&n).unwrap();
    assert_eq!(
        text,
        r#"{"kind":"release","app":"tasks","environment":"staging","release":7,"version":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c","digest":"sha256:ab","state":"live","reason":null,"at":"2025-05-01T12:00:00Z"}"#
    );
    assert_eq!(
        serde_json::from_str::<cutover_api::Notification>(&text).unwrap(),
        n
    );
}

#[test]
fn the_access_log_view_keeps_its_shape() {
    let view = cutover_api::AccessLogView {
        env: "staging".into(),
        log_file: "/s/logs/access-staging.log".into(),
        lines: vec![r#"{"status":200}"#.into()],
    };
    assert_eq!(
        serde_json::to_string(&view).unwrap(),
        r#"{"env":"staging","log_file":"/s/logs/access-staging.log","lines":["{\"status\":200}"]}"#
    );
}

#[test]
fn an_environment_names_its_hosts_after_its_address() {
    let env = cutover_api::EnvironmentView {
        name: "production".into(),
        listen: Some("0.0.0.0:443".into()),
        hosts: vec!["tasks.example.com".into(), "www.tasks.example.com".into()],
        live: None,
        previous: None,
        instances: Vec::new(),
        awaiting_approval: Vec::new(),
        frozen: None,
        maintenance: None,
        paused: None,
        server: None,
        unreachable: None,
        certificates: Vec::new(),
    };
    let text = serde_json::to_string(&env).unwrap();
    assert_eq!(
        text,
        r#"{"name":"production","listen":"0.0.0.0:443","hosts":["tasks.example.com","www.tasks.example.com"],"live":null,"previous":null,"instances":[],"awaiting_approval":[],"frozen":null}"#
    );
    // An older server's answer has no hosts: every name.
    let older: cutover_api::EnvironmentView = serde_json::from_str(
        r#"{"name":"staging","listen":"127.0.0.1:8001","live":null,"previous":null,"instances":[]}"#,
    )
    .unwrap();
    assert!(older.hosts.is_empty());
}
