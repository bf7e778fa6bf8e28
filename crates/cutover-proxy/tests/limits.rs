//! The route's limits, each with its clear answer, over real sockets: 413, 504, idle and
//! header timeouts, and the request id.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cutover_proxy::Limits;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

async fn start(env: &str, limits: Limits) -> (tempfile::TempDir, Proxy, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), env).await;
    let app = upstream("app").await;
    proxy.set_limited(&[(app, 100)], limits).await;
    (dir, proxy, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_over_max_body_gets_413_whether_announced_or_chunked() {
    let limits = Limits {
        max_body: 10,
        ..Limits::default()
    };
    let (_dir, proxy, _) = start("max-body", limits).await;
    let answer = exchange(
        proxy.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains("over 10 bytes (max_body)"), "{answer}");
    assert!(!answer.contains("x-upstream"), "{answer}");
    let answer = exchange(
        proxy.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    // At the limit it passes.
    let answer = exchange(
        proxy.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhelloworld",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.ends_with("\nhelloworld"), "{answer}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_slower_than_upstream_timeout_gets_504() {
    let limits = Limits {
        upstream_timeout_ms: 200,
        ..Limits::default()
    };
    let (_dir, proxy, _) = start("slow", limits).await;
    let client = fresh_client();
    let started = Instant::now();
    let (status, body) = get(&client, &proxy.url("/slow")).await.unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.contains("within 0.2 s (upstream_timeout"), "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "it was retried"
    );
    let request = Request::post(proxy.url("/slow"))
        .body(Full::new(Bytes::from("x")))
        .unwrap();
    assert_eq!(
        send(&client, request).await.unwrap().0,
        StatusCode::GATEWAY_TIMEOUT
    );
    // A quick answer is not affected.
    assert_eq!(
        get(&client, &proxy.url("/")).await.unwrap().0,
        StatusCode::OK
    );
    proxy.stop().await;
}

/// Reads one whole response (with a Content-Length body) from a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "{seen:?}");
        seen.push(byte[0]);
        let text = String::from_utf8_lossy(&seen).to_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map(|n| n.trim().parse().unwrap())
                .unwrap_or(0);
            if seen.len() == end + 4 + length {
                return String::from_utf8_lossy(&seen).into_owned();
            }
        }
    }
}

/// Waits until the edge closes `stream`; returns how long that took.
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut rest))
        .await
        .expect("the edge closed the connection")
        .unwrap();
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_close_after_idle_timeout_and_slow_heads_after_header_timeout() {
    let limits = Limits {
        idle_timeout_ms: 400,
        header_timeout_ms: 300,
        ..Limits::default()
    };
    let (_dir, proxy, _) = start("timeouts", limits).await;

    // Kept alive between requests that come in time, closed once idle for 400 ms.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    for _ in 0..3 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut stream)
            .await
            .starts_with("HTTP/1.1 200 "));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = closed_after(&mut stream, Duration::from_secs(3)).await;
    assert!(after >= Duration::from_millis(150), "{after:?}");

    // A connection that never sends anything is idle too.
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let after = closed_after(&mut silent, Duration::from_secs(3)).await;
    assert!(after >= Duration::from_millis(350), "{after:?}");

    // Half a request head, then a byte now and then (slowloris): closed at the header timeout,
    // even though bytes keep coming.
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.write_all(b"s").await.is_err() {
            closed = true;
            break;
        }
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut byte)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickled request head was kept open");
    assert!(started.elapsed() < Duration::from_millis(1500));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_answer_slower_than_idle_timeout_is_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "long-answer").await;
    let limits = Limits {
        idle_timeout_ms: 100,
        header_timeout_ms: 100,
        ..Limits::default()
    };
    // Sends "first", then "second" 400 ms later.
    proxy
        .set_limited(&[(trickling_upstream().await, 100)], limits)
        .await;
    let (status, body) = get(&fresh_client(), &proxy.url("/")).await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "firstsecond"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_request_id_is_kept_or_made_and_reaches_the_app() {
    let (_dir, proxy, _) = start("ids", Limits::default()).await;
    let client = keep_alive_client();
    let request = Request::get(proxy.url("/echo"))
        .header("x-request-id", "abc-123")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("x-request-id: abc-123\n"));

    let mut made = Vec::new();
    for _ in 0..2 {
        let request = Request::get(proxy.url("/echo"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains(&format!("x-request-id: {id}\n")),
            "the app did not get the id"
        );
        made.push(id);
    }
    assert_ne!(made[0], made[1]);
    // A 503 carries one too.
    proxy.switch(&[]).await;
    let response = client
        .request(
            Request::get(proxy.url("/"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["x-request-id"].len(), 32);
    proxy.stop().await;
}
