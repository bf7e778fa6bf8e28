//! End-to-end tests of the edge proxy over real sockets: the proxy runs `run()` on a thread,
//! upstreams are tiny hyper (or raw TCP) servers in the test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cutover_proxy::{ProxyClient, ProxyError, ProxyOptions};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

struct Proxy {
    options: ProxyOptions,
    client: ProxyClient,
    addr: SocketAddr,
    thread: JoinHandle<Result<(), ProxyError>>,
}

impl Proxy {
    /// Starts a proxy on a free port and waits until it answers.
    async fn start(state_dir: &Path, env: &str) -> Proxy {
        let options = ProxyOptions::new(state_dir, env, SocketAddr::from(([127, 0, 0, 1], 0)));
        let for_thread = options.clone();
        let thread = std::thread::spawn(move || cutover_proxy::run(for_thread));
        let client = ProxyClient::for_options(&options);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match client.status().await {
                Ok(status) => {
                    return Proxy {
                        options,
                        client,
                        addr: status.listen,
                        thread,
                    }
                }
                Err(e) if Instant::now() > deadline || thread.is_finished() => {
                    panic!("proxy did not start: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(self) {
        self.client.shutdown().await.unwrap();
        let result = tokio::task::spawn_blocking(move || self.thread.join())
            .await
            .unwrap()
            .unwrap();
        result.unwrap();
    }
}

/// A hyper upstream that answers with its name. `/slow` waits 500 ms; `/echo` returns the
/// method, the request headers and the body.
async fn upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    let path = req.uri().path().to_string();
                    if path == "/slow" {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    let body = if path == "/echo" {
                        let mut text = format!("{} {}\n", req.method(), req.uri());
                        for (k, v) in req.headers() {
                            text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
                        }
                        let bytes = req.into_body().collect().await.unwrap().to_bytes();
                        text.push('\n');
                        text.push_str(&String::from_utf8_lossy(&bytes));
                        text
                    } else {
                        name.to_string()
                    };
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    response
                        .headers_mut()
                        .insert("x-upstream", name.parse().unwrap());
                    Ok::<_, Infallible>(response)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn keep_alive_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn fresh_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

async fn get(client: &TestClient, url: &str) -> Result<(StatusCode, String), String> {
    let request = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    send(client, request).await
}

async fn send(
    client: &TestClient,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, String), String> {
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

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
    assert_eq!(proxy.client.set_upstreams(&[a]).await.unwrap(), 1);
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
    proxy.client.set_upstreams(&[dead]).await.unwrap();
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

    let status = proxy.client.status().await.unwrap();
    assert_eq!(status.env, "staging");
    assert_eq!(status.generation, 2);
    assert_eq!(status.upstreams, vec![dead]);
    assert_eq!(status.inflight.get(&dead), Some(&0));
    assert_eq!(status.pid, std::process::id());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_over_several_upstreams_and_retry_skips_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "rr").await;
    let (a, b) = (upstream("A").await, upstream("B").await);
    proxy.client.set_upstreams(&[a, b]).await.unwrap();
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
    proxy.client.set_upstreams(&[dead, a]).await.unwrap();
    for _ in 0..6 {
        assert_eq!(
            get(&client, &proxy.url("/")).await.unwrap(),
            (StatusCode::OK, "A".into())
        );
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn switching_under_load_loses_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Arc::new(Proxy::start(dir.path(), "load").await);
    let (a, b) = (upstream("A").await, upstream("B").await);
    proxy.client.set_upstreams(&[a]).await.unwrap();

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
        proxy.client.set_upstreams(&[target]).await.unwrap();
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
    proxy.client.set_upstreams(&[a]).await.unwrap();

    let url = proxy.url("/slow");
    let slow = tokio::spawn(async move { get(&keep_alive_client(), &url).await });
    // Wait until the slow request is in flight to A.
    let deadline = Instant::now() + Duration::from_secs(2);
    while proxy.client.status().await.unwrap().inflight.get(&a) != Some(&1) {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.client.set_upstreams(&[b]).await.unwrap();
    let started = Instant::now();
    let outcome = proxy
        .client
        .drain(&[a], Duration::from_secs(5))
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
        .drain(&[b], Duration::from_millis(50))
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
    proxy.client.set_upstreams(&[a]).await.unwrap();
    assert_eq!(proxy.client.set_upstreams(&[a]).await.unwrap(), 2);
    let options = proxy.options.clone();
    assert!(options.pid_file.exists());
    proxy.stop().await;
    assert!(!options.pid_file.exists(), "pid file left behind");
    assert!(cutover_proxy::running_pid(&options).is_none());
    assert!(matches!(
        ProxyClient::for_options(&options).status().await,
        Err(ProxyError::NotRunning { .. })
    ));

    let proxy = Proxy::start(dir.path(), "persist").await;
    assert_eq!(
        get(&keep_alive_client(), &proxy.url("/")).await.unwrap(),
        (StatusCode::OK, "A".into())
    );
    let status = proxy.client.status().await.unwrap();
    assert_eq!((status.generation, status.upstreams), (2, vec![a]));
    assert_eq!(proxy.client.set_upstreams(&[]).await.unwrap(), 3);
    proxy.stop().await;
}

#[test]
fn a_listen_address_in_use_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let options = ProxyOptions::new(dir.path(), "busy", addr);
    let error = cutover_proxy::run(options.clone()).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("listen address {addr} is already in use")
    );
    assert!(!options.pid_file.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_proxy_for_the_same_env_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "twice").await;
    let options = ProxyOptions::new(dir.path(), "twice", SocketAddr::from(([127, 0, 0, 1], 0)));
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
    proxy
        .client
        .set_upstreams(&[rude_upstream().await])
        .await
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_admin_requests_get_ok_false_and_the_proxy_keeps_working() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "admin").await;
    let a = upstream("A").await;
    let stream = tokio::net::UnixStream::connect(&proxy.options.admin_socket)
        .await
        .unwrap();
    let mut stream = BufReader::new(stream);
    async fn ask(
        stream: &mut BufReader<tokio::net::UnixStream>,
        line: String,
    ) -> serde_json::Value {
        stream.get_mut().write_all(line.as_bytes()).await.unwrap();
        let mut reply = String::new();
        stream.read_line(&mut reply).await.unwrap();
        serde_json::from_str(&reply).unwrap()
    }
    for bad in [
        "this is not json\n",
        "{\"op\":\"explode\"}\n",
        "{\"op\":\"set\",\"upstreams\":[\"not an address\"]}\n",
        "[1,2,3]\n",
    ] {
        let reply = ask(&mut stream, bad.to_string()).await;
        assert_eq!(reply["ok"], false, "{bad}: {reply}");
        assert!(
            reply["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{reply}"
        );
    }
    // Several requests on one connection, the same connection as the bad ones.
    let reply = ask(
        &mut stream,
        format!("{{\"op\":\"set\",\"upstreams\":[\"{a}\"]}}\n"),
    )
    .await;
    assert_eq!(reply, serde_json::json!({"ok": true, "generation": 1}));
    let reply = ask(&mut stream, "{\"op\":\"status\"}\n".to_string()).await;
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["env"], "admin");
    assert_eq!(reply["upstreams"], serde_json::json!([a.to_string()]));
    assert_eq!(reply["inflight"][a.to_string()], 0);
    let reply = ask(
        &mut stream,
        format!("{{\"op\":\"drain\",\"upstreams\":[\"{a}\"],\"timeout_ms\":10}}\n"),
    )
    .await;
    assert_eq!(
        reply,
        serde_json::json!({"ok": true, "drained": true, "remaining": 0})
    );
    drop(stream);

    assert_eq!(
        get(&keep_alive_client(), &proxy.url("/")).await.unwrap(),
        (StatusCode::OK, "A".into())
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_without_a_proxy_says_it_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let options = ProxyOptions::new(dir.path(), "staging", SocketAddr::from(([127, 0, 0, 1], 1)));
    let error = ProxyClient::new(&options.admin_socket)
        .status()
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("edge proxy for staging is not running (admin socket"),
        "{message}"
    );
    assert!(cutover_proxy::running_pid(&options).is_none());
}

#[test]
fn spawn_reports_a_process_that_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let error = cutover_proxy::spawn(
        Path::new("/nonexistent/cutover"),
        dir.path(),
        "staging",
        SocketAddr::from(([127, 0, 0, 1], 1)),
    )
    .unwrap_err();
    assert!(matches!(error, ProxyError::StartFailed { .. }), "{error}");
}

/// An upstream that sends its body in two parts, 400 ms apart.
async fn trickling_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(400)).await;
                let _ = stream.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn response_bodies_are_streamed_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), "stream").await;
    proxy
        .client
        .set_upstreams(&[trickling_upstream().await])
        .await
        .unwrap();
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
    proxy.client.set_upstreams(&[a]).await.unwrap();
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
