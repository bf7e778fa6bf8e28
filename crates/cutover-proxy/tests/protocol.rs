//! The admin protocol on the wire: every request and reply, as the proxy and its client write
//! and read them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use cutover_proxy::acme::AcmeSettings;
use cutover_proxy::tls::TlsSource;

use cutover_proxy::protocol::{
    self, AdminError, DrainOutcome, Ejection, ErrorCode, Hold, Limits, ListenerStatus, ProxyStatus,
    Reply, Request, Route, RouteKey, RouteStatus, Upstream, UpstreamStatus, PROTOCOL,
};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn key() -> RouteKey {
    RouteKey::new("/srv/tasks/.cutover", "staging")
}

fn route(upstreams: Vec<Upstream>, limits: Limits) -> Route {
    let mut route = Route::new(key(), addr(8001));
    route.upstreams = upstreams;
    route.limits = limits;
    route
}

fn status() -> ProxyStatus {
    ProxyStatus {
        protocol: PROTOCOL,
        version: "0.1.0".into(),
        exe: None,
        binary_replaced: false,
        stopping: false,
        pid: 42,
        listeners: vec![ListenerStatus {
            listen: addr(8001),
            bound: Some(addr(8001)),
            error: None,
        }],
        generation: 9,
        routes: vec![RouteStatus {
            hold: None,
            route: key(),
            app: "tasks".into(),
            listen: addr(8001),
            hosts: vec!["tasks.example.com".into()],
            upstreams: vec![
                UpstreamStatus {
                    addr: addr(4001),
                    weight: 90,
                    inflight: 3,
                    ejected: None,
                },
                UpstreamStatus {
                    addr: addr(4002),
                    weight: 10,
                    inflight: 0,
                    ejected: Some(Ejection {
                        until_ms: 1_700_000_010_000,
                        times: 1,
                        error: "Connection refused (os error 111)".into(),
                    }),
                },
            ],
        }],
        draining: BTreeMap::from([(addr(4000), 1)]),
        held: 0,
        acme: Vec::new(),
    }
}

fn requests() -> Vec<(Request, &'static str)> {
    vec![
        (Request::Status, r#"{"op":"status"}"#),
        (
            Request::Set(Route {
                app: "tasks".into(),
                hosts: vec!["tasks.example.com".into(), "*.tasks.example.com".into()],
                access_log: Some("/srv/tasks/.cutover/logs/access-staging.log".into()),
                ..route(
                    vec![Upstream::new(addr(4001), 90), Upstream::new(addr(4002), 10)],
                    Limits::default(),
                )
            }),
            r#"{"op":"set","route":{"owner":"/srv/tasks/.cutover","env":"staging"},"app":"tasks","listen":"127.0.0.1:8001","hosts":["tasks.example.com","*.tasks.example.com"],"upstreams":[{"addr":"127.0.0.1:4001","weight":90},{"addr":"127.0.0.1:4002","weight":10}],"access_log":"/srv/tasks/.cutover/logs/access-staging.log"}"#,
        ),
        (
            Request::Set(route(vec![], Limits::default())),
            r#"{"op":"set","route":{"owner":"/srv/tasks/.cutover","env":"staging"},"listen":"127.0.0.1:8001","upstreams":[]}"#,
        ),
        (
            Request::Set(route(
                vec![Upstream::new(addr(4001), 100)],
                Limits {
                    max_body: 1000,
                    upstream_timeout_ms: 5000,
                    idle_timeout_ms: 75_000,
                    header_timeout_ms: 30_000,
                    drain_timeout_ms: 2000,
                    hsts: true,
                },
            )),
            r#"{"op":"set","route":{"owner":"/srv/tasks/.cutover","env":"staging"},"listen":"127.0.0.1:8001","upstreams":[{"addr":"127.0.0.1:4001","weight":100}],"limits":{"max_body":1000,"upstream_timeout_ms":5000,"idle_timeout_ms":75000,"header_timeout_ms":30000,"drain_timeout_ms":2000,"hsts":true}}"#,
        ),
        (
            Request::Set(Route {
                hosts: vec!["tasks.example.com".into()],
                tls: Some(TlsSource::Files {
                    cert: "/srv/tasks/certs/site.pem".into(),
                    key: "/srv/tasks/certs/site.key".into(),
                }),
                http_redirect: Some("0.0.0.0:80".parse().unwrap()),
                ..route(vec![], Limits::default())
            }),
            r#"{"op":"set","route":{"owner":"/srv/tasks/.cutover","env":"staging"},"listen":"127.0.0.1:8001","hosts":["tasks.example.com"],"upstreams":[],"tls":{"kind":"files","cert":"/srv/tasks/certs/site.pem","key":"/srv/tasks/certs/site.key"},"http_redirect":"0.0.0.0:80"}"#,
        ),
        (
            Request::Set(Route {
                hosts: vec!["tasks.example.com".into()],
                tls: Some(TlsSource::Acme),
                acme: Some(AcmeSettings {
                    directory: "https://acme.example/dir".into(),
                    email: Some("ops@example.com".into()),
                    ca_bundle: None,
                    renew_before_secs: 2_592_000,
                }),
                ..route(vec![], Limits::default())
            }),
            r#"{"op":"set","route":{"owner":"/srv/tasks/.cutover","env":"staging"},"listen":"127.0.0.1:8001","hosts":["tasks.example.com"],"upstreams":[],"tls":{"kind":"acme"},"acme":{"directory":"https://acme.example/dir","email":"ops@example.com","renew_before_secs":2592000}}"#,
        ),
        (
            Request::Check(route(vec![], Limits::default())),
            r#"{"op":"check","route":{"owner":"/srv/tasks/.cutover","env":"staging"},"listen":"127.0.0.1:8001","upstreams":[]}"#,
        ),
        (
            Request::Remove {
                owner: "/srv/tasks/.cutover".into(),
                env: Some("staging".into()),
            },
            r#"{"op":"remove","owner":"/srv/tasks/.cutover","env":"staging"}"#,
        ),
        (
            Request::Remove {
                owner: "/srv/tasks/.cutover".into(),
                env: None,
            },
            r#"{"op":"remove","owner":"/srv/tasks/.cutover"}"#,
        ),
        (
            Request::Drain {
                upstreams: vec![addr(4000)],
                timeout_ms: Some(250),
            },
            r#"{"op":"drain","upstreams":["127.0.0.1:4000"],"timeout_ms":250}"#,
        ),
        (
            Request::Hold {
                route: key(),
                hold: Some(Hold::Maintenance {
                    message: "back soon".into(),
                    retry_after_s: 60,
                }),
            },
            r#"{"op":"hold","route":{"owner":"/srv/tasks/.cutover","env":"staging"},"hold":{"kind":"maintenance","message":"back soon","retry_after_s":60}}"#,
        ),
        (
            Request::Hold {
                route: key(),
                hold: Some(Hold::Pause {
                    until_ms: 1_700_000_000_000,
                }),
            },
            r#"{"op":"hold","route":{"owner":"/srv/tasks/.cutover","env":"staging"},"hold":{"kind":"pause","until_ms":1700000000000}}"#,
        ),
        (
            Request::Hold {
                route: key(),
                hold: None,
            },
            r#"{"op":"hold","route":{"owner":"/srv/tasks/.cutover","env":"staging"},"hold":null}"#,
        ),
        (Request::Handover, r#"{"op":"handover"}"#),
        (Request::Shutdown, r#"{"op":"shutdown"}"#),
        (
            Request::Renew {
                host: "tasks.example.com".into(),
            },
            r#"{"op":"renew","host":"tasks.example.com"}"#,
        ),
    ]
}

fn replies() -> Vec<(Reply, &'static str)> {
    vec![
        (
            Reply::Status(status()),
            r#"{"reply":"status","protocol":5,"version":"0.1.0","pid":42,"listeners":[{"listen":"127.0.0.1:8001","bound":"127.0.0.1:8001"}],"generation":9,"routes":[{"route":{"owner":"/srv/tasks/.cutover","env":"staging"},"app":"tasks","listen":"127.0.0.1:8001","hosts":["tasks.example.com"],"upstreams":[{"addr":"127.0.0.1:4001","weight":90,"inflight":3},{"addr":"127.0.0.1:4002","weight":10,"inflight":0,"ejected":{"until_ms":1700000010000,"times":1,"error":"Connection refused (os error 111)"}}]}],"draining":{"127.0.0.1:4000":1}}"#,
        ),
        (
            // Its binary was replaced on disk since it started (left out when not, as an edge
            // before this field says it: the line above).
            Reply::Status(ProxyStatus {
                exe: Some("/usr/local/bin/cutover".into()),
                binary_replaced: true,
                routes: Vec::new(),
                listeners: Vec::new(),
                draining: BTreeMap::new(),
                ..status()
            }),
            r#"{"reply":"status","protocol":5,"version":"0.1.0","exe":"/usr/local/bin/cutover","binary_replaced":true,"pid":42,"listeners":[],"generation":9,"routes":[],"draining":{}}"#,
        ),
        (
            Reply::Set { generation: 10 },
            r#"{"reply":"set","generation":10}"#,
        ),
        (
            Reply::Drain(DrainOutcome {
                drained: false,
                remaining: 2,
                closed: 1,
            }),
            r#"{"reply":"drain","drained":false,"remaining":2,"closed":1}"#,
        ),
        (Reply::Check, r#"{"reply":"check"}"#),
        (
            Reply::Remove {
                generation: 11,
                left: 0,
            },
            r#"{"reply":"remove","generation":11,"left":0}"#,
        ),
        (
            Reply::Handover {
                listeners: vec![addr(80), addr(443)],
            },
            r#"{"reply":"handover","listeners":["127.0.0.1:80","127.0.0.1:443"]}"#,
        ),
        (Reply::Shutdown, r#"{"reply":"shutdown"}"#),
        (
            Reply::Renew {
                host: "tasks.example.com".into(),
                not_after: 1_767_225_600,
            },
            r#"{"reply":"renew","host":"tasks.example.com","not_after":1767225600}"#,
        ),
        (
            Reply::Error(
                AdminError::new(ErrorCode::UnknownOp, "unknown op `explode`")
                    .field("op")
                    .hint("the ops are status, set, drain, shutdown"),
            ),
            r#"{"reply":"error","code":"unknown_op","field":"op","message":"unknown op `explode`","hint":"the ops are status, set, drain, shutdown"}"#,
        ),
        (
            Reply::Error(AdminError::new(ErrorCode::NotSaved, "disk full")),
            r#"{"reply":"error","code":"not_saved","message":"disk full"}"#,
        ),
    ]
}

#[test]
fn requests_round_trip_through_their_wire_form() {
    for (request, wire) in requests() {
        assert_eq!(
            protocol::to_line(&request),
            format!("{wire}\n").into_bytes()
        );
        assert_eq!(
            protocol::parse_request(wire.as_bytes()),
            Ok(request.clone())
        );
        assert_eq!(
            protocol::parse_request(&protocol::to_line(&request)),
            Ok(request)
        );
    }
}

#[test]
fn replies_round_trip_through_their_wire_form() {
    for (reply, wire) in replies() {
        assert_eq!(protocol::to_line(&reply), format!("{wire}\n").into_bytes());
        assert_eq!(protocol::parse_reply(wire), Ok(reply.clone()));
        let line = String::from_utf8(protocol::to_line(&reply)).unwrap();
        assert_eq!(protocol::parse_reply(&line), Ok(reply));
    }
}

#[test]
fn every_op_is_listed_and_named_as_on_the_wire() {
    let mut named: Vec<&str> = requests().iter().map(|(r, _)| r.op()).collect();
    named.dedup();
    assert_eq!(named, Request::OPS);
    for (request, wire) in requests() {
        assert!(
            wire.starts_with(&format!("{{\"op\":\"{}\"", request.op())),
            "{wire}"
        );
    }
}

#[test]
fn a_drain_without_a_timeout_waits_the_routes_drain_timeout() {
    assert_eq!(
        protocol::parse_request(br#"{"op":"drain","upstreams":[]}"#),
        Ok(Request::Drain {
            upstreams: vec![],
            timeout_ms: None
        })
    );
    assert_eq!(Limits::default().drain_timeout_ms, 30_000);
}

#[test]
fn limits_may_be_partly_given_and_none_may_be_0() {
    let request = protocol::parse_request(
        br#"{"op":"set","route":{"owner":"/o","env":"s"},"listen":"127.0.0.1:1","upstreams":[],"limits":{"max_body":5}}"#,
    )
    .unwrap();
    let Request::Set(route) = request else {
        panic!("{request:?}")
    };
    assert_eq!(route.limits.max_body, 5);
    assert_eq!(route.limits.upstream_timeout_ms, 60_000);
    for field in [
        "max_body",
        "upstream_timeout_ms",
        "idle_timeout_ms",
        "header_timeout_ms",
        "drain_timeout_ms",
    ] {
        let line = format!(
            r#"{{"op":"set","route":{{"owner":"/o","env":"s"}},"listen":"127.0.0.1:1","upstreams":[],"limits":{{"{field}":0}}}}"#
        );
        let Ok(Request::Set(route)) = protocol::parse_request(line.as_bytes()) else {
            panic!("{line}")
        };
        let error = route.validate().unwrap_err();
        assert_eq!(
            error.field.as_deref(),
            Some(format!("limits.{field}").as_str())
        );
        assert!(error.hint.is_some());
    }
    let error = protocol::parse_request(
        br#"{"op":"set","route":{"owner":"/o","env":"s"},"listen":"127.0.0.1:1","upstreams":[],"limits":{"max_bdy":5}}"#,
    )
    .unwrap_err();
    assert!(error.message.contains("max_bdy"), "{error}");
}

#[test]
fn a_reply_this_client_cannot_read_is_an_error_not_a_guess() {
    assert!(protocol::parse_reply("").is_err());
    assert!(protocol::parse_reply("\n").is_err());
    assert!(protocol::parse_reply("garbage").is_err());
    // The first protocol's replies.
    assert!(protocol::parse_reply(r#"{"ok":true}"#).is_err());
    assert!(protocol::parse_reply(r#"{"ok":false,"error":"nope"}"#).is_err());
    // An error code of a newer edge still reads as an error.
    assert_eq!(
        protocol::parse_reply(r#"{"reply":"error","code":"brand_new","message":"m"}"#),
        Ok(Reply::Error(AdminError::new(ErrorCode::Other, "m")))
    );
}

#[test]
fn hosts_compare_lowercase_without_port_or_trailing_dot() {
    use cutover_proxy::protocol::normal_host;
    assert_eq!(normal_host("tasks.example.com"), "tasks.example.com");
    assert!(matches!(
        normal_host("tasks.example.com"),
        std::borrow::Cow::Borrowed(_)
    ));
    assert_eq!(normal_host("Tasks.Example.COM.:443"), "tasks.example.com");
    assert_eq!(normal_host("[::1]:8000"), "[::1]");
    assert_eq!(normal_host("[::1]"), "[::1]");
}

#[test]
fn validation_names_the_field_and_the_fix() {
    let route = |env: &str, upstreams: Vec<Upstream>| Route {
        key: RouteKey::new("/srv/a", env),
        upstreams,
        ..Route::new(key(), addr(8001))
    };
    assert_eq!(route("staging", vec![]).validate(), Ok(()));
    let weights_at_the_limits = vec![Upstream::new(addr(1), 0), Upstream::new(addr(2), 1000)];
    assert_eq!(route("staging", weights_at_the_limits).validate(), Ok(()));
    let too_many = (1..=65).map(|p| Upstream::new(addr(p), 1)).collect();
    for (bad, field) in [
        (route(" ", vec![]), "route.env"),
        (
            Route {
                hosts: vec!["Upper.example".into()],
                ..route("staging", vec![])
            },
            "hosts[0]",
        ),
        (
            Route {
                hosts: vec!["a.example".into(), "a.example".into()],
                ..route("staging", vec![])
            },
            "hosts[1]",
        ),
        (
            route("staging", vec![Upstream::new(addr(1), 1001)]),
            "upstreams[0].weight",
        ),
        (route("staging", too_many), "upstreams"),
    ] {
        let error = bad.validate().unwrap_err();
        assert_eq!(error.code, ErrorCode::BadRequest);
        assert_eq!(error.field.as_deref(), Some(field));
        assert!(error.hint.is_some(), "{error}");
    }
}
