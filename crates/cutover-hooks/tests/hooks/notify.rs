use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use cutover_hooks::{
    Format, Notification, Notifier, Receiver as Sink, ReleaseEvent, RetryPolicy, USER_AGENT,
};
use cutover_http::testing::{TestCa, TestServer};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One request as a receiver saw it.
#[derive(Debug, Clone)]
struct Hit {
    content_type: Option<String>,
    user_agent: Option<String>,
    path: String,
    body: Bytes,
    /// The status it was answered with.
    status: u16,
}

/// A real HTTP receiver on 127.0.0.1 answering the given statuses in turn, then 200.
struct Receiver {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    async fn start(statuses: Vec<u16>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let statuses = Arc::new(statuses);
        let recorded = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let hits = recorded.clone();
                let statuses = statuses.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let hits = hits.clone();
                        let statuses = statuses.clone();
                        async move {
                            let header = |name: &str| {
                                req.headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string)
                            };
                            let content_type = header("content-type");
                            let user_agent = header("user-agent");
                            let path = req.uri().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let mut hits = hits.lock().unwrap();
                            let status = statuses.get(hits.len()).copied().unwrap_or(200);
                            hits.push(Hit {
                                content_type,
                                user_agent,
                                path,
                                body,
                                status,
                            });
                            let mut response = Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, hits }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// The events answered with 2xx, in arrival order.
    fn delivered(&self) -> Vec<ReleaseEvent> {
        self.hits()
            .iter()
            .filter(|h| (200..300).contains(&h.status))
            .filter_map(
                |h| match serde_json::from_slice::<Notification>(&h.body).unwrap() {
                    Notification::Release(e) => Some(e),
                    Notification::PipelineRun(_) | Notification::Certificate(_) => None,
                },
            )
            .collect()
    }
}

/// A port nothing listens on: connections are refused.
async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/hook")
}

/// A receiver that accepts connections and never answers.
async fn black_hole_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    format!("http://{addr}/hook")
}

fn event(release: i64, state: &str) -> ReleaseEvent {
    ReleaseEvent {
        app: "tasks".into(),
        environment: "production".into(),
        release,
        version: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c".into(),
        digest: format!("sha256:{}", "ab".repeat(32)),
        state: state.into(),
        reason: (state == "failed").then(|| "health check timed out".into()),
        at: Utc
            .with_ymd_and_hms(2025, 5, 1, 12, 0, release as u32 % 60)
            .unwrap(),
    }
}

#[tokio::test]
async fn retried_until_delivered_and_dead_receivers_are_given_up_on() {
    let flaky = Receiver::start(vec![500, 500]).await;
    let dead = dead_url().await;
    let notifier = Notifier::new(vec![flaky.url(), dead.clone()]);

    let sent = event(7, "live");
    let started = Instant::now();
    notifier.notify(sent.clone());
    notifier.flush(Duration::from_secs(15)).await;
    // Backoff: 200 ms before the 2nd try, 1 s before the 3rd.
    assert!(
        started.elapsed() >= Duration::from_millis(1150),
        "{:?}",
        started.elapsed()
    );

    let hits = flaky.hits();
    assert_eq!(
        hits.iter().map(|h| h.status).collect::<Vec<_>>(),
        [500, 500, 200],
        "delivered on the 3rd try"
    );
    for hit in &hits {
        assert_eq!(hit.content_type.as_deref(), Some("application/json"));
        assert_eq!(hit.user_agent.as_deref(), Some(USER_AGENT));
        assert!(USER_AGENT.starts_with("cutover/"));
        assert_eq!(hit.path, "/hook");
    }
    assert_eq!(flaky.delivered(), [sent]);

    let failures = notifier.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, dead);
    assert!(failures[0].1.contains("3 tries"), "{}", failures[0].1);
    assert!(failures[0].1.contains("connect"), "{}", failures[0].1);
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_gets_exactly_three_tries() {
    let broken = Receiver::start(vec![503; 10]).await;
    let notifier = Notifier::new(vec![broken.url()]);
    notifier.notify(event(1, "failed"));
    notifier.flush(Duration::from_secs(15)).await;
    assert_eq!(broken.hits().len(), 3);
    let failures = notifier.failures();
    assert_eq!(failures.len(), 1);
    assert!(failures[0].1.contains("HTTP 503"), "{}", failures[0].1);
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_per_try() {
    let url = black_hole_url().await;
    let policy = RetryPolicy {
        tries: 2,
        backoff: vec![Duration::from_millis(10)],
        timeout: Duration::from_millis(200),
    };
    let notifier = Notifier::with_policy(vec![url.clone()], policy);
    let started = Instant::now();
    notifier.notify(event(1, "live"));
    notifier.flush(Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let failures = notifier.failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, url);
    assert!(
        failures[0].1.contains("no response within 200 ms"),
        "{}",
        failures[0].1
    );
    assert!(failures[0].1.contains("2 tries"), "{}", failures[0].1);
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let refusing = Receiver::start(vec![404; 10]).await;
    let notifier = Notifier::new(vec![refusing.url()]);
    notifier.notify(event(1, "live"));
    notifier.flush(Duration::from_secs(15)).await;
    assert_eq!(refusing.hits().len(), 1);
    assert!(notifier.failures()[0].1.contains("HTTP 404"));
}

#[tokio::test]
async fn notify_returns_at_once_and_a_dead_receiver_delays_nobody() {
    let live = Receiver::start(vec![]).await;
    let notifier = Notifier::new(vec![dead_url().await, black_hole_url().await, live.url()]);

    let started = Instant::now();
    for release in 1..=3 {
        notifier.notify(event(release, "live"));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(5), "notify took {took:?}");

    // The live receiver has all three long before the others give up on even the first.
    let deadline = Instant::now() + Duration::from_secs(1);
    while live.delivered().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the live receiver waited on the dead ones"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(notifier.failures().is_empty());
}

#[tokio::test]
async fn events_to_one_url_arrive_in_order() {
    // The first try fails, so later events queue up behind its retries.
    let receiver = Receiver::start(vec![500]).await;
    let notifier = Notifier::new(vec![receiver.url()]);
    let states = ["awaiting-approval", "live", "failed", "rolled-back", "live"];
    let sent: Vec<ReleaseEvent> = states
        .iter()
        .enumerate()
        .map(|(i, s)| event(i as i64 + 1, s))
        .collect();
    for e in &sent {
        notifier.notify(e.clone());
    }
    notifier.flush(Duration::from_secs(15)).await;
    assert_eq!(receiver.delivered(), sent);
    assert!(notifier.failures().is_empty());
}

#[tokio::test]
async fn clones_share_queues_and_failures() {
    let receiver = Receiver::start(vec![]).await;
    let dead = dead_url().await;
    let a = Notifier::new(vec![receiver.url(), dead]);
    let b = a.clone();
    a.notify(event(1, "live"));
    b.notify(event(2, "live"));
    b.flush(Duration::from_secs(15)).await;
    assert_eq!(receiver.delivered(), [event(1, "live"), event(2, "live")]);
    assert_eq!(a.failures().len(), 2);
}

fn ca_file(ca: &TestCa, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cutover-hooks-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    ca.write(&dir.join(name))
}

fn ok(_: &cutover_http::testing::Recorded) -> cutover_http::testing::Answer {
    (200, vec![], vec![])
}

/// An HTTPS receiver trusted through `ca_bundle` gets each format, with the configured
/// headers; the JSON one names the event's kind.
#[tokio::test]
async fn https_receivers_get_each_format_with_their_headers() {
    let ca = TestCa::new("notify test CA");
    let server = TestServer::start(Some(&ca.issue(&["127.0.0.1"])), ok);
    let bundle = ca_file(&ca, "ca-formats.pem");
    let sink = |path: &str, format: Format| Sink {
        url: server.url(true, path),
        format,
        headers: vec![("Authorization".into(), "Bearer s3cret-token".into())],
        ca_bundle: Some(bundle.clone()),
    };
    let notifier = Notifier::new(vec![
        sink("/json", Format::Json),
        sink("/slack", Format::Slack),
        sink("/teams", Format::Teams),
    ]);
    let mut failed = event(8, "failed");
    failed.reason = Some("health check failed 3 times in a row".into());
    notifier.notify(failed);
    notifier.flush(Duration::from_secs(15)).await;
    assert!(notifier.failures().is_empty(), "{:?}", notifier.failures());

    let hits = server.requests();
    let body = |path: &str| -> serde_json::Value {
        let hit = hits.iter().find(|h| h.path == path).expect(path);
        assert_eq!(hit.method, "POST");
        assert_eq!(hit.header("authorization"), Some("Bearer s3cret-token"));
        assert_eq!(hit.header("content-type"), Some("application/json"));
        assert_eq!(hit.header("user-agent"), Some(USER_AGENT));
        serde_json::from_slice(&hit.body).unwrap()
    };
    let json = body("/json");
    assert_eq!(json["kind"], "release");
    assert_eq!(json["state"], "failed");
    assert_eq!(json["release"], 8);

    let line = "tasks: release 8 (0d1a26e67d8f) failed in production: health check failed 3 times in a row";
    assert_eq!(body("/slack"), serde_json::json!({ "text": line }));

    let teams = body("/teams");
    assert_eq!(teams["type"], "message");
    let attachment = &teams["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["body"][0]["type"], "TextBlock");
    assert_eq!(card["body"][0]["text"], line);
    let facts = card["body"][1]["facts"].as_array().unwrap();
    assert!(facts
        .iter()
        .any(|f| f["title"] == "Environment" && f["value"] == "production"));
}

/// Not trusted (no ca_bundle), a redirect to another host, a receiver that speaks no TLS, a
/// URL that is not http(s): each fails at once, clearly, and is not retried; no secret shows.
#[tokio::test]
async fn untrusted_redirecting_and_plain_receivers_fail_clearly() {
    let ca = TestCa::new("notify test CA");
    let tls = TestServer::start(Some(&ca.issue(&["127.0.0.1"])), ok);
    let plain = TestServer::start(None, ok);
    let elsewhere = format!("http://localhost:{}/stolen", plain.addr.port());
    let redirecting = TestServer::start(None, move |_| {
        (307, vec![("location".into(), elsewhere.clone())], vec![])
    });
    let with_secret = |url: String| Sink {
        headers: vec![("Authorization".into(), "Bearer s3cret-token".into())],
        ..Sink::json(url)
    };
    let notifier = Notifier::new(vec![
        with_secret(tls.url(true, "/hook")),
        with_secret(redirecting.url(false, "/hook")),
        with_secret(plain.url(true, "/hook")),
        with_secret("ftp://127.0.0.1/hook".into()),
    ]);
    let started = Instant::now();
    notifier.notify(event(1, "live"));
    notifier.flush(Duration::from_secs(15)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let failures = notifier.failures();
    assert_eq!(failures.len(), 4, "{failures:?}");
    let of = |url: String| {
        failures
            .iter()
            .find(|(u, _)| *u == url)
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("{url} in {failures:?}"))
    };
    let e = of(tls.url(true, "/hook"));
    assert!(e.contains("unknown CA") && e.contains("ca_bundle"), "{e}");
    let e = of(redirecting.url(false, "/hook"));
    assert!(e.contains("another host") && e.contains("localhost"), "{e}");
    let e = of(plain.url(true, "/hook"));
    assert!(
        e.contains("does not speak TLS") && e.contains("http://"),
        "{e}"
    );
    assert!(of("ftp://127.0.0.1/hook".into()).contains("not an http(s) URL"));
    assert_eq!(tls.requests().len(), 0);
    assert_eq!(redirecting.requests().len(), 1, "not retried");
    assert!(plain.requests().is_empty(), "the redirect was not followed");
    assert!(!format!("{failures:?}").contains("s3cret"), "{failures:?}");
}

#[tokio::test]
async fn flush_with_nothing_queued_returns_at_once() {
    let notifier = Notifier::new(Vec::<String>::new());
    notifier.notify(event(1, "live"));
    let started = Instant::now();
    notifier.flush(Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_millis(100));
}

#[test]
fn notify_outside_a_runtime_does_not_panic() {
    let notifier = Notifier::new(vec!["http://127.0.0.1:9/".to_string()]);
    notifier.notify(event(1, "live"));
    assert!(notifier.failures()[0].1.contains("tokio runtime"));
}
