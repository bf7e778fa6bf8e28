//! What the edge proxy's tests share: a proxy running `run()` on a thread, tiny hyper
//! upstreams, and HTTP clients.
#![allow(dead_code)] // each test binary uses its own part

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cutover_proxy::protocol::DEFAULT_WEIGHT;
use cutover_proxy::{Limits, ProxyClient, ProxyError, ProxyOptions, Route, RouteKey, Upstream};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub options: ProxyOptions,
    pub client: ProxyClient,
    /// The address of the environment's route (a free port).
    pub addr: SocketAddr,
    pub env: String,
    pub owner: String,
    pub thread: JoinHandle<Result<(), ProxyError>>,
}

/// A port nothing listens on now.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}

impl Proxy {
    /// Starts an edge in `dir`/edge with one route, `env` of the owner `dir`, on a free port
    /// with no upstream yet (503), and waits until it answers.
    pub async fn start(dir: &Path, env: &str) -> Proxy {
        let proxy = Proxy::resume(dir, env, free_addr()).await;
        proxy
            .client
            .set(proxy.route_with(Vec::new(), Limits::default()))
            .await
            .unwrap();
        proxy
    }

    /// Starts the edge in `dir`/edge again, serving what its routes file says; `addr` is the
    /// address of the route of `env` the tests use.
    pub async fn resume(dir: &Path, env: &str, addr: SocketAddr) -> Proxy {
        let options = ProxyOptions::new(&dir.join("edge"));
        let for_thread = options.clone();
        let thread = std::thread::spawn(move || cutover_proxy::run(for_thread));
        let client = ProxyClient::for_options(&options);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match client.status().await {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline || thread.is_finished() => {
                    panic!("proxy did not start: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        Proxy {
            options,
            client,
            addr,
            env: env.to_string(),
            owner: dir.to_string_lossy().into_owned(),
            thread,
        }
    }

    /// The access log of the route (as an app's state dir keeps it).
    pub fn access_log(&self) -> std::path::PathBuf {
        Path::new(&self.owner).join(format!("access-{}.log", self.env))
    }

    /// The route this proxy's tests serve: its environment.
    pub fn route(&self) -> RouteKey {
        RouteKey::new(&self.owner, &self.env)
    }

    /// The whole route of [`Proxy::route`] with `upstreams` and `limits`.
    pub fn route_with(&self, upstreams: Vec<Upstream>, limits: Limits) -> Route {
        let mut route = Route::new(self.route(), self.addr);
        route.upstreams = upstreams;
        route.limits = limits;
        route.access_log = Some(self.access_log());
        route
    }

    /// Routes the environment to `upstreams` by weight; returns the generation.
    pub async fn set(&self, upstreams: &[(SocketAddr, u32)]) -> u64 {
        self.set_limited(upstreams, Limits::default()).await
    }

    /// [`Proxy::set`] with limits.
    pub async fn set_limited(&self, upstreams: &[(SocketAddr, u32)], limits: Limits) -> u64 {
        let upstreams = upstreams
            .iter()
            .map(|&(addr, weight)| Upstream::new(addr, weight))
            .collect();
        self.client
            .set(self.route_with(upstreams, limits))
            .await
            .unwrap()
    }

    /// Routes the environment to `upstreams`, each at the default weight (what the engine does).
    pub async fn switch(&self, upstreams: &[SocketAddr]) -> u64 {
        let weighted: Vec<_> = upstreams.iter().map(|&a| (a, DEFAULT_WEIGHT)).collect();
        self.set(&weighted).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(self) {
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
pub async fn upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve(listener, name);
    addr
}

/// Answers on `listener` as [`upstream`] does.
pub fn serve(listener: TcpListener, name: &'static str) {
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
}

/// A listening socket that drops every new connection's SYN, as a lost node does (its accept
/// queue is full: a connect to it times out rather than being refused). The connection that
/// fills the queue comes back with it; [`serve`] on the listener makes it answer again.
pub async fn blackhole() -> (TcpListener, std::net::TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let filler = tokio::task::spawn_blocking(move || {
        let filler = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .expect("the first connection is queued");
        let dropped = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300));
        assert!(
            dropped.is_err(),
            "a connect to a full accept queue should time out"
        );
        filler
    })
    .await
    .unwrap();
    (listener, filler)
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn keep_alive_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn fresh_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

pub async fn get(client: &TestClient, url: &str) -> Result<(StatusCode, String), String> {
    let request = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    send(client, request).await
}

pub async fn send(
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

/// An upstream that sends its body in two parts, 400 ms apart.
pub async fn trickling_upstream() -> SocketAddr {
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

/// Sends `raw` on a fresh connection and reads until the edge closes it (or 5 s pass).
pub async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
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

/// What `cutover proxy --edge-dir D [--takeover] [--detach]` does (crates/cutover/src/roles.rs),
/// for the test binaries without a harness that start the edge as a real process.
pub fn proxy_role(args: &[String]) -> i32 {
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_default()
    };
    let mut options = ProxyOptions::new(&std::path::PathBuf::from(value("--edge-dir")));
    options.takeover = args.iter().any(|a| a == "--takeover");
    if args.iter().any(|a| a == "--detach") {
        if let Err(e) = cutover_daemon::detach(Some(&options.log_file)) {
            eprintln!("error: could not detach the edge: {e}");
            return 1;
        }
    }
    match cutover_proxy::run(options) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: edge: {e}");
            1
        }
    }
}
