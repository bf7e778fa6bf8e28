//! `cutover edge upgrade` between real processes: under steady load (kept-alive and fresh
//! connections) no request fails, and a WebSocket open on the old edge stays open until the
//! drain timeout, then closes cleanly (1001).
//!
//! This test binary has no harness: started as `<self> proxy --edge-dir D [--takeover]
//! --detach` it plays the `cutover proxy` role, otherwise it runs the test.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_proxy::protocol::DEFAULT_WEIGHT;
use cutover_proxy::{Limits, ProxyClient, ProxyOptions, Route, RouteKey, Upstream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use support::*;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("proxy") {
        std::process::exit(proxy_role(&args[2..]));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(an_upgrade_under_load_drops_nothing_and_drains_websockets());
    println!("upgrade: ok");
}

/// A WebSocket echo server.
async fn websocket_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() && socket.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// GETs `url` until `stop`, counting answers that are 200 "app" and the rest (with the first
/// few failures kept to show).
fn load(
    client: TestClient,
    url: String,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            match get(&client, &url).await {
                Ok((status, body)) if status == 200 && body == "app" => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                other => failed.lock().unwrap().push(format!("{other:?}")),
            }
        }
    })
}

async fn an_upgrade_under_load_drops_nothing_and_drains_websockets() {
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let edge = dir.path().join("edge");
    let options = ProxyOptions::new(&edge);
    let first = cutover_proxy::spawn(&exe, &edge).expect("spawn");
    let client = ProxyClient::for_options(&options);

    let (http_addr, ws_addr) = (free_addr(), free_addr());
    let limits = Limits {
        drain_timeout_ms: 2000,
        ..Limits::default()
    };
    let mut http = Route::new(RouteKey::new("/srv/app/.cutover", "production"), http_addr);
    http.upstreams = vec![Upstream::new(upstream("app").await, DEFAULT_WEIGHT)];
    http.limits = limits;
    let mut ws = Route::new(RouteKey::new("/srv/app/.cutover", "ws"), ws_addr);
    ws.upstreams = vec![Upstream::new(websocket_upstream().await, DEFAULT_WEIGHT)];
    ws.limits = limits;
    client.set(http).await.unwrap();
    client.set(ws).await.unwrap();

    // A WebSocket through the first edge.
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{ws_addr}/ws"))
        .await
        .expect("the WebSocket opens");
    socket.send(Message::text("before")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap().into_text().unwrap(),
        "before"
    );

    // Steady load: 4 clients on kept-alive connections, 2 opening a connection per request.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let url = format!("http://{http_addr}/");
    let mut tasks = Vec::new();
    for i in 0..6 {
        let client = if i < 4 {
            keep_alive_client()
        } else {
            fresh_client()
        };
        tasks.push(load(
            client,
            url.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Two upgrades in a row, each under the load.
    let mut old = first;
    for _ in 0..2 {
        let before = ok.load(Ordering::Relaxed);
        let (exe, edge) = (exe.clone(), edge.clone());
        let done = tokio::task::spawn_blocking(move || cutover_proxy::upgrade(&exe, &edge))
            .await
            .unwrap()
            .expect("the upgrade");
        assert_eq!(done.old_pid, old);
        assert_ne!(done.new_pid, old);
        assert!(!done.restarted);
        let status = client.status().await.unwrap();
        assert_eq!(status.pid, done.new_pid);
        assert_eq!(status.routes.len(), 2);
        assert_eq!(status.listeners.len(), 2, "{status:?}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(ok.load(Ordering::Relaxed) > before + 20, "the load goes on");
        old = done.new_pid;
    }

    // The WebSocket stays on the first edge, which drains: still open…
    socket.send(Message::text("during")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap().into_text().unwrap(),
        "during"
    );
    assert!(
        cutover_daemon::pid_alive(first),
        "the first edge still drains"
    );
    // …until the drain timeout (2 s), then closed cleanly.
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                other => panic!("the WebSocket ended without a Close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("closed within the drain timeout");
    assert_eq!(closed, Some(CloseCode::Away));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(8);
    while cutover_daemon::pid_alive(first) {
        assert!(Instant::now() < deadline, "the first edge did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    let ok = ok.load(Ordering::Relaxed);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );
    println!("upgrade: {ok} requests, 0 failed, across 2 upgrades");

    // A new WebSocket goes to the edge that serves now.
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{ws_addr}/ws"))
        .await
        .expect("the WebSocket opens on the new edge");
    socket.send(Message::text("after")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap().into_text().unwrap(),
        "after"
    );
    drop(socket);
    client.shutdown().await.unwrap();
}
