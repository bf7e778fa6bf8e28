//! Requests the edge answers itself and never passes on, sent over raw sockets (an HTTP
//! library would not send them).

mod support;

use support::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn content_length_with_transfer_encoding_is_normalised_and_the_connection_closed() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "smuggle").await;
    proxy.switch(&[upstream("app").await]).await;
    // A smuggling attempt: a front end trusting Content-Length would see one request and the
    // back end two. The edge trusts Transfer-Encoding (RFC 9112 §6.3), drops Content-Length,
    // answers once and closes the connection: what follows the body is never read as a request.
    let answer = exchange(
        proxy.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(!answer.contains("/smuggled"), "{answer}");
    assert!(!answer.contains("content-length: 40"), "{answer}");
    assert!(answer.ends_with("\nhello"), "{answer}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_chunked_body_gets_400_not_502() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "chunks").await;
    proxy.switch(&[upstream("app").await]).await;
    for raw in [
        // Not a chunk size.
        &b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"[..],
        // A chunk longer than announced.
        &b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n"[..],
    ] {
        let answer = exchange(proxy.addr, raw).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(answer.contains("the request body is malformed"), "{answer}");
        assert!(answer.to_lowercase().contains("connection: close"), "{answer}");
    }
    // The edge and the app are fine.
    let answer = exchange(
        proxy.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.ends_with("\nhello"), "{answer}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connect_naming_no_protocol_gets_405_the_edge_is_no_forward_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "connect").await;
    proxy.switch(&[upstream("app").await]).await;
    let answer = exchange(
        proxy.addr,
        b"CONNECT internal.example:22 HTTP/1.1\r\nHost: internal.example:22\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
    assert!(answer.contains("CONNECT opens no tunnel here"), "{answer}");
    assert!(!answer.contains("x-upstream"), "the app answered: {answer}");
    proxy.stop().await;
}
