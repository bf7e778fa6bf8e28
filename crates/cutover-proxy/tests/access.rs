//! The access log: one JSON line per request, whoever answered it.

mod support;

use std::time::{Duration, Instant};

use cutover_proxy::{Limits, Upstream};
use serde_json::Value;

use support::*;

/// The access log's lines once it holds `n` of them.
async fn lines(proxy: &Proxy, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(proxy.access_log()).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON document"))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} lines of {n}: {text}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_answer_is_one_json_line_naming_the_upstream_release_and_request() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "access").await;
    let client = keep_alive_client();

    // Nothing live: the edge answers itself.
    assert_eq!(get(&client, &proxy.url("/first")).await.unwrap().0, 503);

    let app = upstream("app").await;
    let named = vec![Upstream::new(app, 100).named("access-r7-1-ab12", 7)];
    let limits = Limits {
        max_body: 4,
        ..Limits::default()
    };
    proxy
        .client
        .set(proxy.route_with(named, limits))
        .await
        .unwrap();
    let request = hyper::Request::get(proxy.url("/echo?secret=no"))
        .header("host", "tasks.example")
        .header("x-request-id", "req-1")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let (status, body) = send(&client, request).await.unwrap();
    assert_eq!(status, 200);
    let request = hyper::Request::post(proxy.url("/big"))
        .body(http_body_util::Full::new(bytes::Bytes::from("too big")))
        .unwrap();
    assert_eq!(send(&client, request).await.unwrap().0, 413);

    let lines = lines(&proxy, 3).await;
    let [none, served, refused] = &lines[..] else {
        panic!("{lines:?}")
    };
    assert_eq!(none["status"], 503);
    assert_eq!(none["path"], "/first");
    assert_eq!(none["upstream"], Value::Null);
    assert_eq!(none["request_id"].as_str().unwrap().len(), 32);

    assert_eq!(served["status"], 200);
    assert_eq!(served["method"], "GET");
    assert_eq!(served["host"], "tasks.example");
    assert_eq!(
        served["path"], "/echo",
        "no query string: it may hold secrets"
    );
    assert_eq!(served["bytes"], body.len());
    assert_eq!(served["upstream"], app.to_string());
    assert_eq!(served["instance"], "access-r7-1-ab12");
    assert_eq!(served["release"], 7);
    assert_eq!(served["request_id"], "req-1");
    assert!(served["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(
        chrono::DateTime::parse_from_rfc3339(served["time"].as_str().unwrap()).is_ok(),
        "{served}"
    );

    assert_eq!(refused["status"], 413);
    assert_eq!(refused["method"], "POST");
    assert_eq!(refused["upstream"], Value::Null);
    proxy.stop().await;
}
