//! Requests the edge answers itself and never passes on, sent over raw sockets (an HTTP
//! library would not send them).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

/// Sends `raw` on a fresh connection and reads until the edge closes it (or 5 s pass).
async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the edge kept the connection open: {answer:?}"
    );
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_host_headers_get_400_and_never_reach_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "refusals").await;
    proxy.switch(&[upstream("app").await]).await;
    let answer = exchange(
        proxy.addr,
        b"GET /echo HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("more than one Host header"), "{answer}");
    assert!(!answer.contains("x-upstream"), "the app answered: {answer}");
    // One Host is fine.
    let answer = exchange(
        proxy.addr,
        b"GET /echo HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    proxy.stop().await;
}
