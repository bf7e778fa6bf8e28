//! End-to-end tests of the edge proxy over real sockets: the proxy runs `run()` on a thread,
//! upstreams are tiny hyper (or raw TCP) servers in the test.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cutover_proxy::protocol::{
    ErrorCode, Hold, Reply, RouteStatus, UpstreamStatus, DEFAULT_WEIGHT,
};
use cutover_proxy::{Limits, ProxyClient, ProxyError, ProxyOptions, Route, RouteKey, Upstream};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

mod support;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxies_requests_with_forwarded_headers_503_and_502() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "staging").await;
    let client = keep_alive_client();

    // No upstream yet.
    let (status, body) = get(&client, &proxy.url("/")).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "no version of the app is live in staging\n");

    let a = upstream("A").await;
    assert_eq!(proxy.switch(&[a]).await, 2);
    assert_eq!(
        get(&client, &proxy.url("/")).await.unwrap(),
        (StatusCode::OK, "A".into())
    );

    let request = Request::post(proxy.url("/echo?x=1"))
        .header("host", "app.example")
        .header("x-custom", "yes")
        .header("x-forwarded-for", "10.1.2.3")
        .body(Full::new(Bytes::from_static(b"hello body")))
        .unwrap();
    let (status, body) = send(&client, request).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("POST /echo?x=1\n"), "{body}");
    assert!(body.contains("x-custom: yes\n"), "{body}");
    assert!(body.contains("host: app.example\n"), "{body}");
    assert!(
        body.contains("x-forwarded-for: 10.1.2.3, 127.0.0.1\n"),
        "{body}"
    );
    assert!(body.contains("x-forwarded-proto: http\n"), "{body}");
    assert!(body.contains("x-forwarded-host: app.example\n"), "{body}");
    assert!(body.ends_with("\nhello body"), "{body}");

    // A dead upstream: bind a port, then free it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    proxy.switch(&[dead]).await;
    let (status, body) = get(&client, &proxy.url("/")).await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains(&dead.to_string()), "{body}");
    let request = Request::post(proxy.url("/"))
        .body(Full::new(Bytes::from("x")))
        .unwrap();
    assert_eq!(
        send(&client, request).await.unwrap().0,
        StatusCode::BAD_GATEWAY
    );

    let mut status = proxy.client.status().await.unwrap();
    assert_eq!(status.generation, 3);
    assert_eq!(status.bound(proxy.addr), Some(proxy.addr));
    // Its failed connects are reported; being the route's only upstream, it is tried anyway.
    let ejected = status.routes[0].upstreams[0].ejected.take();
    assert!(
        ejected
            .as_ref()
            .is_some_and(|e| e.times == 1 && e.error.contains("refused")),
        "{ejected:?}"
    );
    assert_eq!(
        status.routes,
        vec![RouteStatus {
            hold: None,
            route: proxy.route(),
            app: String::new(),
            listen: proxy.addr,
            hosts: Vec::new(),
            upstreams: vec![UpstreamStatus {
                addr: dead,
                weight: DEFAULT_WEIGHT,
                inflight: 0,
                ejected: None,
            }],
        }]
    );
    assert!(status.draining.is_empty(), "{status:?}");
    assert_eq!(status.pid, std::process::id());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_over_several_upstreams_and_retry_skips_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "rr").await;
    let (a, b) = (upstream("A").await, upstream("B").await);
    proxy.switch(&[a, b]).await;
    let client = keep_alive_client();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(get(&client, &proxy.url("/")).await.unwrap().1);
    }
    assert!(
        seen.contains(&"A".to_string()) && seen.contains(&"B".to_string()),
        "{seen:?}"
    );

    // A GET to a dead upstream is retried once on the other one.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    proxy.switch(&[dead, a]).await;
    for _ in 0..6 {
        assert_eq!(
            get(&client, &proxy.url("/")).await.unwrap(),
            (StatusCode::OK, "A".into())
        );
    }
    proxy.stop().await;
}

/// A lost node (SYNs dropped) costs the connect timeout once, not on every request routed to it:
/// the edge skips it while the other upstream answers, shows it in `status`, and tries it again
/// when its ejection ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_that_cannot_be_reached_is_skipped_until_it_answers_again() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "health").await;
    let a = upstream("A").await;
    let (lost, _queued) = blackhole().await;
    let b = lost.local_addr().unwrap();
    // B first in turn.
    proxy.switch(&[b, a]).await;
    let client = fresh_client();

    // The first request goes to B, waits for the connect timeout, and is retried on A.
    let started = Instant::now();
    assert_eq!(
        get(&client, &proxy.url("/")).await.unwrap(),
        (StatusCode::OK, "A".into())
    );
    let first = started.elapsed();
    assert!(
        first >= Duration::from_millis(1500),
        "B was tried: {first:?}"
    );

    // Then B is skipped: every request, whatever its method, is answered by A at once.
    let started = Instant::now();
    for i in 0..20 {
        let answer = if i % 2 == 0 {
            get(&client, &proxy.url("/")).await.unwrap()
        } else {
            let post = Request::post(proxy.url("/"))
                .body(Full::new(Bytes::from("a body")))
                .unwrap();
            send(&client, post).await.unwrap()
        };
        assert_eq!(answer, (StatusCode::OK, "A".into()), "request {i}");
    }
    let rest = started.elapsed();
    assert!(rest < Duration::from_secs(1), "20 requests took {rest:?}");

    // `status` says so.
    let status = proxy.client.status().await.unwrap();
    let upstreams = &status.route(&proxy.route()).unwrap().upstreams;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let ejected = upstreams
        .iter()
        .find(|u| u.addr == b)
        .and_then(|u| u.ejected.clone())
        .unwrap_or_else(|| panic!("B is not shown ejected: {status:?}"));
    assert_eq!(ejected.times, 1, "{ejected:?}");
    assert!(!ejected.error.is_empty(), "{ejected:?}");
    assert!(
        ejected.until_ms > now && ejected.until_ms <= now + 10_000,
        "{ejected:?} (now {now})"
    );
    assert!(upstreams
        .iter()
        .find(|u| u.addr == a)
        .unwrap()
        .ejected
        .is_none());

    // B's node comes back. Nothing goes to it before its ejection ends; then one request tries
    // it, and it takes its turn again.
    serve(lost, "B");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, name) = get(&client, &proxy.url("/")).await.unwrap();
        assert_eq!(code, StatusCode::OK);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        if name == "B" {
            assert!(
                now >= ejected.until_ms,
                "B was tried before its ejection ended"
            );
            break;
        }
        assert!(Instant::now() < deadline, "B never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(get(&client, &proxy.url("/")).await.unwrap().1);
    }
    assert_eq!(seen.iter().filter(|n| *n == "B").count(), 2, "{seen:?}");
    let status = proxy.client.status().await.unwrap();
    assert!(
        status.routes[0]
            .upstreams
            .iter()
            .all(|u| u.ejected.is_none()),
        "{status:?}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn switching_under_load_loses_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Arc::new(Proxy::start(dir.path(), "load").await);
    let (a, b) = (upstream("A").await, upstream("B").await);
    proxy.switch(&[a]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for i in 0..6 {
        let (proxy, stop, done) = (proxy.clone(), stop.clone(), done.clone());
        load.push(tokio::spawn(async move {
            let client = if i % 2 == 0 {
                keep_alive_client()
            } else {
                fresh_client()
            };
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match get(&client, &proxy.url("/")).await {
                    Ok((StatusCode::OK, body)) if body == "A" || body == "B" => {}
                    other => failures.push(format!("{other:?}")),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failures
        }));
    }

    let checker = keep_alive_client();
    for round in 0..20 {
        let (target, name) = if round % 2 == 0 { (b, "B") } else { (a, "A") };
        tokio::time::sleep(Duration::from_millis(15)).await;
        proxy.switch(&[target]).await;
        // Every request that starts after the set reaches the new upstream, on a kept-alive
        // connection as on a fresh one.
        assert_eq!(get(&checker, &proxy.url("/")).await.unwrap().1, name);
        assert_eq!(get(&fresh_client(), &proxy.url("/")).await.unwrap().1, name);
    }
    stop.store(true, Ordering::SeqCst);
    for task in load {
        let failures = task.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
    assert!(done.load(Ordering::SeqCst) > 100, "too little load");
    Arc::try_unwrap(proxy).ok().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_waits_for_a_slow_request() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "drain").await;
    let (a, b) = (upstream("A").await, upstream("B").await);
    proxy.switch(&[a]).await;

    let url = proxy.url("/slow");
    let slow = tokio::spawn(async move { get(&keep_alive_client(), &url).await });
    // Wait until the slow request is in flight to A.
    let deadline = Instant::now() + Duration::from_secs(2);
    while proxy.client.status().await.unwrap().inflight(a) != 1 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.switch(&[b]).await;
    let started = Instant::now();
    let outcome = proxy
        .client
        .drain(&[a], Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(outcome.drained && outcome.remaining == 0, "{outcome:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "drain returned too early"
    );
    assert_eq!(slow.await.unwrap().unwrap(), (StatusCode::OK, "A".into()));
    assert_eq!(
        get(&keep_alive_client(), &proxy.url("/")).await.unwrap().1,
        "B"
    );

    // A drain that times out says how many requests remain.
    let url = proxy.url("/slow");
    let slow = tokio::spawn(async move { get(&keep_alive_client(), &url).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let outcome = proxy
        .client
        .drain(&[b], Some(Duration::from_millis(50)))
        .await
        .unwrap();
    assert!(!outcome.drained && outcome.remaining == 1, "{outcome:?}");
    assert_eq!(slow.await.unwrap().unwrap(), (StatusCode::OK, "B".into()));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_and_generation_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let a = upstream("A").await;
    let proxy = Proxy::start(dir.path(), "persist").await;
    proxy.switch(&[a]).await;
    assert_eq!(proxy.switch(&[a]).await, 3);
    let (options, addr) = (proxy.options.clone(), proxy.addr);
    assert!(options.pid_file.exists());
    proxy.stop().await;
    assert!(!options.pid_file.exists(), "pid file left behind");
    assert!(cutover_proxy::running_pid(&options).is_none());
    assert!(matches!(
        ProxyClient::for_options(&options).status().await,
        Err(ProxyError::NotRunning { .. })
    ));

    let proxy = Proxy::resume(dir.path(), "persist", addr).await;
    assert_eq!(
        get(&keep_alive_client(), &proxy.url("/")).await.unwrap(),
        (StatusCode::OK, "A".into())
    );
    let status = proxy.client.status().await.unwrap();
    assert_eq!(
        (status.generation, status.serving(&proxy.route())),
        (3, vec![a])
    );
    assert_eq!(proxy.switch(&[]).await, 4);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listen_address_in_use_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "busy").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let before = proxy.client.status().await.unwrap();
    let route = Route::new(RouteKey::new(&proxy.owner, "other"), addr);
    for refused in [
        proxy.client.check(route.clone()).await.unwrap_err(),
        proxy.client.set(route).await.unwrap_err(),
    ] {
        let ProxyError::Refused { error } = &refused else {
            panic!("{refused}")
        };
        assert_eq!(error.code, ErrorCode::ListenFailed);
        assert_eq!(error.field.as_deref(), Some("listen"));
        assert_eq!(
            error.message,
            format!("{addr} is in use by another program")
        );
        assert!(error.hint.as_deref().unwrap().contains("change `listen`"));
    }
    assert_eq!(proxy.client.status().await.unwrap(), before);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_edge_in_the_same_directory_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "twice").await;
    let options = ProxyOptions::new(&dir.path().join("edge"));
    let error = tokio::task::spawn_blocking(move || cutover_proxy::run(options))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, ProxyError::AlreadyRunning { .. }),
        "{error}"
    );
    proxy.client.status().await.unwrap();
    proxy.stop().await;
}

/// An upstream that closes the connection after every response without saying so.
async fn rude_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = stream
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nrude")
                    .await;
                let _ = stream.get_mut().shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gets_are_retried_when_a_kept_alive_upstream_connection_was_closed() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "retry").await;
    proxy.switch(&[rude_upstream().await]).await;
    let client = keep_alive_client();
    for i in 0..200 {
        let result = get(&client, &proxy.url("/")).await;
        assert_eq!(result, Ok((StatusCode::OK, "rude".into())), "request {i}");
    }
    // Concurrent ones too.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = proxy.url("/");
        tasks.push(tokio::spawn(async move {
            let client = keep_alive_client();
            for _ in 0..25 {
                assert_eq!(get(&client, &url).await.unwrap().1, "rude");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    proxy.stop().await;
}

/// One line on an admin connection, one reply line back.
async fn ask(stream: &mut BufReader<tokio::net::UnixStream>, line: &str) -> String {
    use tokio::io::AsyncBufReadExt;
    stream.get_mut().write_all(line.as_bytes()).await.unwrap();
    stream.get_mut().write_all(b"\n").await.unwrap();
    let mut reply = String::new();
    stream.read_line(&mut reply).await.unwrap();
    reply.trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_admin_requests_get_a_typed_error_change_nothing_and_the_proxy_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "admin").await;
    let a = upstream("A").await;
    proxy.switch(&[a]).await;
    let before = std::fs::read(&proxy.options.routes_file).unwrap();
    let stream = tokio::net::UnixStream::connect(&proxy.options.admin_socket)
        .await
        .unwrap();
    let mut stream = BufReader::new(stream);
    let listen = proxy.addr;
    let key = format!("{{\"owner\":{:?},\"env\":\"admin\"}}", proxy.owner);
    let set = |route: &str, upstreams: &str| {
        format!("{{\"op\":\"set\",\"route\":{route},\"listen\":\"{listen}\",\"upstreams\":{upstreams}}}")
    };
    let one = format!("[{{\"addr\":\"{a}\",\"weight\":100}}]");
    let cases: Vec<(String, ErrorCode, Option<&str>, &str)> = vec![
        ("this is not json".into(), ErrorCode::NotJson, None, "not a JSON object"),
        ("[1,2,3]".into(), ErrorCode::NotJson, None, "not a JSON object"),
        ("{\"op\":\"explode\"}".into(), ErrorCode::UnknownOp, Some("op"), "unknown op `explode`"),
        ("{\"op\":7}".into(), ErrorCode::BadRequest, Some("op"), "not a string"),
        ("{\"upstreams\":[]}".into(), ErrorCode::BadRequest, Some("op"), "no op"),
        (
            set(&key, "[{\"addr\":\"not an address\",\"weight\":1}]"),
            ErrorCode::BadRequest,
            None,
            "invalid socket address",
        ),
        (
            set(&key, &format!("[{{\"addr\":\"{a}\"}}]")),
            ErrorCode::BadRequest,
            None,
            "missing field `weight`",
        ),
        (
            set(&key, &format!("[{{\"addr\":\"{a}\",\"weight\":-1}}]")),
            ErrorCode::BadRequest,
            None,
            "-1",
        ),
        (
            set(
                &key,
                &format!("[{{\"addr\":\"{a}\",\"weight\":90}},{{\"addr\":\"127.0.0.1:1\",\"weight\":1001}}]"),
            ),
            ErrorCode::BadRequest,
            Some("upstreams[1].weight"),
            "weight 1001 of 127.0.0.1:1 is out of range",
        ),
        (
            set(
                &key,
                &format!("[{{\"addr\":\"{a}\",\"weight\":90}},{{\"addr\":\"{a}\",\"weight\":10}}]"),
            ),
            ErrorCode::BadRequest,
            Some("upstreams[1].addr"),
            "is listed twice",
        ),
        (
            set(&format!("{{\"owner\":{:?},\"env\":\"\"}}", proxy.owner), &one),
            ErrorCode::BadRequest,
            Some("route.env"),
            "names no environment",
        ),
        (
            set("{\"owner\":\"\",\"env\":\"admin\"}", &one),
            ErrorCode::BadRequest,
            Some("route.owner"),
            "names no owner",
        ),
        (set("{\"env\":\"admin\"}", &one), ErrorCode::BadRequest, None, "missing field `owner`"),
        (
            format!("{{\"op\":\"set\",\"route\":{key},\"upstreams\":[]}}"),
            ErrorCode::BadRequest,
            None,
            "missing field `listen`",
        ),
        (
            format!("{{\"op\":\"set\",\"route\":{key},\"listen\":\"{listen}\",\"hosts\":[\"Tasks.Example\"],\"upstreams\":[]}}"),
            ErrorCode::BadRequest,
            Some("hosts[0]"),
            "not a lowercase host name",
        ),
        (
            set(&format!("{{\"owner\":{:?},\"env\":\"admin\",\"host\":\"x\"}}", proxy.owner), &one),
            ErrorCode::BadRequest,
            None,
            "unknown field `host`",
        ),
        (
            // Another app on the address, which this route takes for every host.
            set("{\"owner\":\"/srv/other/.cutover\",\"env\":\"admin\"}", &one),
            ErrorCode::Claimed,
            Some("listen"),
            "is taken for every host by an app (state dir",
        ),
        (
            format!("{{\"op\":\"set\",\"route\":{key},\"listen\":\"{listen}\",\"upstreams\":[],\"extra\":1}}"),
            ErrorCode::BadRequest,
            None,
            "unknown field `extra`",
        ),
    ];
    for (line, code, field, says) in cases {
        let reply = ask(&mut stream, &line).await;
        let Ok(Reply::Error(error)) = serde_json::from_str::<Reply>(&reply) else {
            panic!("{line}: not an error reply: {reply}");
        };
        assert_eq!(error.code, code, "{line}: {reply}");
        assert_eq!(error.field.as_deref(), field, "{line}: {reply}");
        assert!(error.message.contains(says), "{line}: {reply}");
        assert!(
            error.hint.as_deref().is_some_and(|h| !h.is_empty()),
            "{line}: {reply}"
        );
    }
    // Nothing changed: the same routes on disk and in service.
    assert_eq!(std::fs::read(&proxy.options.routes_file).unwrap(), before);
    let status = proxy.client.status().await.unwrap();
    assert_eq!(
        (status.generation, status.serving(&proxy.route())),
        (2, vec![a])
    );

    // Good requests on the same connection as the bad ones, as they are on the wire.
    let reply = ask(&mut stream, &set(&key, &one)).await;
    assert_eq!(reply, "{\"reply\":\"set\",\"generation\":3}");
    let reply = ask(&mut stream, "{\"op\":\"status\"}").await;
    // The edge runs in this process: its binary is this test's.
    let expected = format!(
        "{{\"reply\":\"status\",\"protocol\":5,\"version\":\"{}\",\"exe\":{},\"pid\":{},\
         \"listeners\":[{{\"listen\":\"{listen}\",\"bound\":\"{listen}\"}}],\
         \"generation\":3,\"routes\":[{{\"route\":{key},\"listen\":\"{listen}\",\"upstreams\":\
         [{{\"addr\":\"{a}\",\"weight\":100,\"inflight\":0}}]}}],\"draining\":{{}}}}",
        cutover_proxy::VERSION,
        serde_json::to_string(&std::env::current_exe().unwrap()).unwrap(),
        std::process::id()
    );
    assert_eq!(reply, expected);
    let reply = ask(
        &mut stream,
        &format!("{{\"op\":\"drain\",\"upstreams\":[\"{a}\"],\"timeout_ms\":10}}"),
    )
    .await;
    assert_eq!(
        reply,
        "{\"reply\":\"drain\",\"drained\":true,\"remaining\":0,\"closed\":0}"
    );
    drop(stream);

    // The client hands the typed error back, and it reads as `error: … hint: …` does.
    let refused = proxy
        .client
        .set(proxy.route_with(vec![Upstream::new(a, 5000)], Limits::default()))
        .await
        .unwrap_err();
    let ProxyError::Refused { error, .. } = &refused else {
        panic!("{refused}");
    };
    assert_eq!(
        (error.code, error.field.as_deref()),
        (ErrorCode::BadRequest, Some("upstreams[0].weight"))
    );
    assert_eq!(
        refused.to_string(),
        format!(
            "the edge refused: upstreams[0].weight: weight 5000 of {a} \
             is out of range (hint: a weight is 0 (no new requests) to 1000; weights are \
             relative, e.g. 90 and 10)"
        )
    );

    assert_eq!(
        get(&keep_alive_client(), &proxy.url("/")).await.unwrap(),
        (StatusCode::OK, "A".into())
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_without_an_edge_says_it_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let options = ProxyOptions::new(dir.path());
    let error = ProxyClient::new(&options.admin_socket)
        .status()
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("the edge is not running (admin socket"),
        "{message}"
    );
    assert!(cutover_proxy::running_pid(&options).is_none());
}

#[test]
fn spawn_reports_a_process_that_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let error = cutover_proxy::spawn(Path::new("/nonexistent/cutover"), dir.path()).unwrap_err();
    assert!(matches!(error, ProxyError::StartFailed { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn response_bodies_are_streamed_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "stream").await;
    proxy.switch(&[trickling_upstream().await]).await;
    let started = Instant::now();
    let request = Request::get(proxy.url("/"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = keep_alive_client().request(request).await.unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"first");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "the first part waited for the whole body"
    );
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"second");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_lets_a_request_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "graceful").await;
    let a = upstream("A").await;
    proxy.switch(&[a]).await;
    let url = proxy.url("/slow");
    let slow = tokio::spawn(async move { get(&keep_alive_client(), &url).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = proxy.addr;
    proxy.stop().await;
    assert_eq!(slow.await.unwrap().unwrap(), (StatusCode::OK, "A".into()));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening"
    );
}

/// Sends `total` GETs from `tasks` concurrent keep-alive clients; returns how many each upstream
/// answered (by body).
async fn tally(
    proxy: &Proxy,
    tasks: usize,
    total: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut running = Vec::new();
    for _ in 0..tasks {
        let url = proxy.url("/");
        running.push(tokio::spawn(async move {
            let client = keep_alive_client();
            let mut bodies = Vec::new();
            for _ in 0..total / tasks {
                let (status, body) = get(&client, &url).await.unwrap();
                assert_eq!(status, StatusCode::OK, "{body}");
                bodies.push(body);
            }
            bodies
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    for task in running {
        for body in task.await.unwrap() {
            *counts.entry(body).or_default() += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weights_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "weights").await;
    let (a, b) = (upstream("A").await, upstream("B").await);

    // 90/10 over 1,000 requests, from 4 clients at once.
    assert_eq!(proxy.set(&[(a, 90), (b, 10)]).await, 2);
    let counts = tally(&proxy, 4, 1000).await;
    let (to_a, to_b) = (counts["A"], counts["B"]);
    assert_eq!(to_a + to_b, 1000, "{counts:?}");
    assert!((870..=930).contains(&to_a), "{counts:?}");
    let status = proxy.client.status().await.unwrap();
    let weights: Vec<_> = status.routes[0]
        .upstreams
        .iter()
        .map(|u| (u.addr, u.weight))
        .collect();
    assert_eq!(weights, vec![(a, 90), (b, 10)]);

    // 100/0: every request to A.
    proxy.set(&[(a, 100), (b, 0)]).await;
    let counts = tally(&proxy, 4, 400).await;
    assert_eq!(counts.get("A"), Some(&400), "{counts:?}");
    assert_eq!(status.serving(&proxy.route()), vec![a, b]);
    assert_eq!(
        proxy.client.status().await.unwrap().serving(&proxy.route()),
        vec![a]
    );

    // Equal weights: round-robin.
    proxy.set(&[(a, 1), (b, 1)]).await;
    let counts = tally(&proxy, 1, 100).await;
    assert_eq!((counts["A"], counts["B"]), (50, 50), "{counts:?}");

    // Only weight 0: nothing takes new requests.
    proxy.set(&[(a, 0), (b, 0)]).await;
    let (status, body) = get(&keep_alive_client(), &proxy.url("/")).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_weight_0_upstream_gets_no_new_requests_and_is_drained() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "canary").await;
    let (a, b) = (upstream("A").await, upstream("B").await);
    proxy.set(&[(a, 50), (b, 50)]).await;

    // A slow request in flight to B.
    let url = proxy.url("/slow");
    let slow = tokio::spawn(async move {
        let client = keep_alive_client();
        loop {
            // Round-robin: at most two tries reach B.
            let answer = get(&client, &url).await.unwrap();
            if answer.1 == "B" {
                return answer;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    while proxy.client.status().await.unwrap().inflight(b) != 1 {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached B"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // B goes to weight 0: still in the route, its request still counted, nothing new for it.
    proxy.set(&[(a, 100), (b, 0)]).await;
    let status = proxy.client.status().await.unwrap();
    assert_eq!(
        status.route(&proxy.route()).unwrap().upstreams,
        vec![
            UpstreamStatus {
                addr: a,
                weight: 100,
                inflight: 0,
                ejected: None,
            },
            UpstreamStatus {
                addr: b,
                weight: 0,
                inflight: 1,
                ejected: None,
            },
        ]
    );
    assert!(status.draining.is_empty(), "{status:?}");
    let counts = tally(&proxy, 2, 100).await;
    assert_eq!(counts.get("A"), Some(&100), "{counts:?}");

    let started = Instant::now();
    let outcome = proxy
        .client
        .drain(&[b], Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(outcome.drained && outcome.remaining == 0, "{outcome:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "drain returned before B's request ended"
    );
    assert_eq!(slow.await.unwrap(), (StatusCode::OK, "B".into()));
    assert_eq!(proxy.client.status().await.unwrap().inflight(b), 0);
    proxy.stop().await;
}

#[test]
fn the_routes_files_of_the_older_edges_of_one_environment_are_read_for_the_takeover() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("staging.routes.json");
    assert!(cutover_proxy::legacy_routes(&path, "staging")
        .unwrap()
        .is_none());
    // From before routes and weights (it ignored an upstream listed twice).
    std::fs::write(
        &path,
        "{\"generation\":7,\"upstreams\":[\"127.0.0.1:5\",\"127.0.0.1:5\"]}",
    )
    .unwrap();
    let old = cutover_proxy::legacy_routes(&path, "staging")
        .unwrap()
        .unwrap();
    let (upstreams, limits, hold) = (old.upstreams, old.limits, old.hold);
    let five = SocketAddr::from(([127, 0, 0, 1], 5));
    assert_eq!(upstreams, vec![Upstream::new(five, DEFAULT_WEIGHT)]);
    assert_eq!((limits, hold), (Limits::default(), None));
    // Routes keyed by environment, with limits and a hold.
    std::fs::write(
        &path,
        "{\"generation\":9,\"routes\":[{\"route\":{\"env\":\"staging\"},\"upstreams\":[{\"addr\":\"127.0.0.1:5\",\"weight\":100,\"instance\":\"i\",\"release\":3}],\"limits\":{\"max_body\":10}}],\
          \"holds\":[{\"route\":{\"env\":\"staging\"},\"hold\":{\"kind\":\"maintenance\",\"message\":\"back soon\"}}]}",
    )
    .unwrap();
    let old = cutover_proxy::legacy_routes(&path, "staging")
        .unwrap()
        .unwrap();
    let (upstreams, limits, hold) = (old.upstreams, old.limits, old.hold);
    assert_eq!(upstreams, vec![Upstream::new(five, 100).named("i", 3)]);
    assert_eq!(limits.max_body, 10);
    assert_eq!(
        hold,
        Some(Hold::Maintenance {
            message: "back soon".into(),
            retry_after_s: 60
        })
    );
    std::fs::write(&path, "not json").unwrap();
    let error = cutover_proxy::legacy_routes(&path, "staging").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("not a routes file of an older edge"),
        "{error}"
    );
}

#[test]
fn a_routes_file_that_makes_no_sense_stops_the_start_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let options = ProxyOptions::new(dir.path());
    std::fs::create_dir_all(options.routes_file.parent().unwrap()).unwrap();
    let route = |owner: &str, hosts: &str, weight: u32| {
        format!(
            "{{\"route\":{{\"owner\":\"{owner}\",\"env\":\"e\"}},\"listen\":\"127.0.0.1:1\",\"hosts\":{hosts},\
             \"upstreams\":[{{\"addr\":\"127.0.0.1:2\",\"weight\":{weight}}}]}}"
        )
    };
    for (content, says) in [
        (
            "{\"generation\":1,\"upstreams\":[]}".to_string(),
            "unknown field `upstreams`",
        ),
        (
            format!(
                "{{\"generation\":1,\"routes\":[{}]}}",
                route("/a", "[]", 1001)
            ),
            "routes[0].upstreams[0].weight: weight 1001",
        ),
        (
            format!(
                "{{\"generation\":1,\"routes\":[{},{}]}}",
                route("/a", "[\"x.example\"]", 1),
                route("/b", "[\"x.example\"]", 1)
            ),
            "routes[1].hosts: host x.example on 127.0.0.1:1 is claimed by an app (state dir /a)",
        ),
    ] {
        std::fs::write(&options.routes_file, &content).unwrap();
        let error = cutover_proxy::run(options.clone()).unwrap_err().to_string();
        assert!(
            error.contains(&format!(
                "{} is not a valid routes file: ",
                options.routes_file.display()
            )) && error.contains(says),
            "{content}: {error}"
        );
        assert!(!options.pid_file.exists());
    }
}

#[tokio::test]
async fn an_edge_of_an_older_cutover_is_told_apart_and_can_be_stopped() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let options = ProxyOptions::new(dir.path());
    cutover_daemon::prepare_socket_dir(&options.admin_socket).unwrap();
    let listener = tokio::net::UnixListener::bind(&options.admin_socket).unwrap();
    // The first protocol: `ok` and one list of upstreams.
    let old_edge = tokio::spawn(async move {
        let mut asked = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            let mut stream = BufReader::new(stream);
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
            let stop = line.contains("shutdown");
            let reply: &[u8] = if stop {
                b"{\"ok\":true}\n"
            } else {
                b"{\"ok\":true,\"env\":\"old\",\"listen\":\"127.0.0.1:1\",\"pid\":1,\"generation\":3,\"upstreams\":[\"127.0.0.1:2\"],\"inflight\":{}}\n"
            };
            stream.get_mut().write_all(reply).await.unwrap();
            asked.push(line.trim_end().to_string());
            if stop {
                return asked;
            }
        }
        asked
    });
    let client = ProxyClient::for_options(&options);
    let error = client.status().await.unwrap_err();
    assert!(matches!(error, ProxyError::BadReply { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("the edge sent a reply that makes no sense"),
        "{error}"
    );
    client.shutdown().await.unwrap();
    assert_eq!(
        old_edge.await.unwrap(),
        vec!["{\"op\":\"status\"}", "{\"op\":\"shutdown\"}"]
    );
}
