//! Upgraded connections through the edge over real sockets: WebSockets with a real client and
//! server library (tokio-tungstenite), and a plain HTTP/1.1 `Upgrade` to a protocol the edge
//! knows nothing about.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use support::*;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket echo server that names itself in the handshake's `X-Upstream` header.
async fn websocket_upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // tungstenite's callback type, whose error is a whole response.
                #[allow(clippy::result_large_err)]
                let named = |_: &Request, mut response: Response| {
                    response
                        .headers_mut()
                        .insert("x-upstream", name.parse().unwrap());
                    Ok(response)
                };
                let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, named).await
                else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if (message.is_text() || message.is_binary())
                        && socket.send(message).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Opens a WebSocket through the edge; returns it and the upstream that answered.
async fn open(proxy: &Proxy) -> (Socket, String) {
    let (socket, response) = tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.addr))
        .await
        .expect("the WebSocket handshake passes through the edge");
    let upstream = response.headers()["x-upstream"]
        .to_str()
        .unwrap()
        .to_string();
    (socket, upstream)
}

async fn echo(socket: &mut Socket, text: &str) -> String {
    socket.send(Message::text(text)).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("an echo within 5 s")
        .expect("the socket is open")
        .expect("a message");
    reply.into_text().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websockets_pass_stay_on_their_upstream_across_a_switch_and_close_cleanly_when_drained() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "ws").await;
    let (blue, green) = (
        websocket_upstream("blue").await,
        websocket_upstream("green").await,
    );
    proxy.switch(&[blue]).await;

    let (mut old, upstream) = open(&proxy).await;
    assert_eq!(upstream, "blue");
    assert_eq!(echo(&mut old, "hello").await, "hello");
    let big = "x".repeat(200_000);
    assert_eq!(echo(&mut old, &big).await, big);
    let status = proxy.client.status().await.unwrap();
    assert_eq!(
        status.inflight(blue),
        1,
        "an open WebSocket counts in flight"
    );

    // The cut-over: new WebSockets go to green, the open one stays on blue.
    proxy.switch(&[green]).await;
    let (mut new, upstream) = open(&proxy).await;
    assert_eq!(upstream, "green");
    assert_eq!(echo(&mut old, "still here").await, "still here");
    assert_eq!(echo(&mut new, "new").await, "new");
    let status = proxy.client.status().await.unwrap();
    assert_eq!(status.draining.get(&blue), Some(&1), "{status:?}");

    // The drain waits out its timeout for the open WebSocket, then closes it with 1001.
    let started = Instant::now();
    let outcome = proxy
        .client
        .drain(&[blue], Some(Duration::from_millis(300)))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(!outcome.drained, "{outcome:?}");
    assert_eq!((outcome.closed, outcome.remaining), (1, 0), "{outcome:?}");
    match tokio::time::timeout(Duration::from_secs(5), old.next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => {
            assert_eq!(frame.code, CloseCode::Away);
            assert_eq!(frame.reason.as_str(), "going away");
        }
        other => panic!("expected a Close frame (1001), got {other:?}"),
    }
    // The client answered the Close; the connection then ended.
    let end = tokio::time::timeout(Duration::from_secs(5), old.next()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");

    // The WebSocket on green was not touched.
    assert_eq!(echo(&mut new, "green lives").await, "green lives");
    new.close(None).await.unwrap();
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_the_edge_closes_open_websockets_with_going_away() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "ws-stop").await;
    proxy.switch(&[websocket_upstream("blue").await]).await;
    let (mut socket, _) = open(&proxy).await;
    assert_eq!(echo(&mut socket, "a").await, "a");
    let stopping = tokio::spawn(proxy.stop());
    match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a Close frame (1001), got {other:?}"),
    }
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_refused_by_the_app_gets_the_app_s_answer_and_a_dead_app_502() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "ws-refused").await;
    // A plain HTTP upstream: it answers the upgrade request as an ordinary GET.
    proxy.switch(&[upstream("plain").await]).await;
    let error = tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.addr))
        .await
        .unwrap_err();
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["x-upstream"], "plain");
        }
        other => panic!("expected the app's answer, got {other:?}"),
    }
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    proxy.switch(&[dead]).await;
    match tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 502)
        }
        other => panic!("expected 502, got {other:?}"),
    }
    let status = proxy.client.status().await.unwrap();
    assert_eq!(status.inflight(dead), 0);
    proxy.stop().await;
}

/// An upstream that switches to a made-up line protocol: it answers every line in capitals.
async fn shouting_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                assert!(head.contains("upgrade: shout\r\n"), "{head}");
                assert!(head.contains("connection: upgrade\r\n"), "{head}");
                stream
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: shout\r\nConnection: Upgrade\r\n\r\n",
                    )
                    .await
                    .unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let loud = buf[..n].to_ascii_uppercase();
                            if stream.write_all(&loud).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_http_1_1_upgrade_passes_through_as_a_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "shout").await;
    let upstream = shouting_upstream().await;
    proxy.switch(&[upstream]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET /talk HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: shout\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "{head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: shout\r\n"), "{head}");
    for line in ["hello\n", "and again\n"] {
        stream.write_all(line.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; line.len()];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer, line.to_uppercase().as_bytes());
    }
    // Closing the client's side ends the tunnel: it no longer counts in flight.
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.client.status().await.unwrap().inflight(upstream) > 0 {
        assert!(Instant::now() < deadline, "the tunnel stayed open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.stop().await;
}
