//! The proxy as a real process: `spawn`, `running_pid`, SIGTERM and a taken listen address.
//!
//! This test binary has no harness: started as `<self> proxy --edge-dir D --detach` it plays
//! the `cutover proxy` role (as the CLI does), otherwise it runs the tests.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use cutover_proxy::protocol::ErrorCode;
use cutover_proxy::protocol::DEFAULT_WEIGHT;
use cutover_proxy::{ProxyClient, ProxyError, ProxyOptions, Route, RouteKey, Upstream};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("proxy") {
        std::process::exit(support::proxy_role(&args[2..]));
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    spawn_serve_and_stop_on_sigterm(&runtime);
    println!("spawn: ok");
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// A one-response-per-connection upstream on a thread.
fn upstream(body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    addr
}

fn http_get(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the proxy");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

fn spawn_serve_and_stop_on_sigterm(runtime: &tokio::runtime::Runtime) {
    let exe = std::env::current_exe().expect("current exe");
    let dir = tempfile::tempdir().expect("tempdir");
    let edge = dir.path().join("edge");
    let listen = free_port();
    let options = ProxyOptions::new(&edge);

    let pid = cutover_proxy::spawn(&exe, &edge).expect("spawn");
    assert_eq!(cutover_proxy::running_pid(&options), Some(pid));
    let client = ProxyClient::new(&options.admin_socket);
    let status = runtime.block_on(client.status()).expect("status");
    assert_eq!(status.pid, pid);
    assert!(status.listeners.is_empty(), "{status:?}");
    // Its directory is its owner's only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&edge).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);

    let app = upstream("hello from the app");
    let mut route = Route::new(RouteKey::new("/srv/a/.cutover", "staging"), listen);
    route.upstreams = vec![Upstream::new(app, DEFAULT_WEIGHT)];
    runtime.block_on(client.set(route)).expect("set");
    let response = http_get(listen);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("hello from the app"), "{response}");

    // A second start finds the edge that runs: one edge per directory.
    assert_eq!(cutover_proxy::spawn(&exe, &edge).expect("spawn again"), pid);

    // An address another program holds is refused, and nothing changes.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut other = Route::new(
        RouteKey::new("/srv/b/.cutover", "staging"),
        taken.local_addr().unwrap(),
    );
    other.upstreams = vec![Upstream::new(app, DEFAULT_WEIGHT)];
    let error = runtime.block_on(client.set(other)).unwrap_err();
    assert!(
        matches!(&error, ProxyError::Refused { error } if error.code == ErrorCode::ListenFailed),
        "{error}"
    );
    assert!(
        error.to_string().contains("in use by another program"),
        "{error}"
    );
    assert_eq!(runtime.block_on(client.status()).unwrap().routes.len(), 1);

    // SIGTERM stops it cleanly.
    assert!(cutover_daemon::signal(pid, libc::SIGTERM));
    let deadline = Instant::now() + Duration::from_secs(5);
    while cutover_daemon::pid_alive(pid) {
        assert!(Instant::now() < deadline, "proxy ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!options.pid_file.exists(), "pid file left behind");
    assert_eq!(cutover_proxy::running_pid(&options), None);
    let error = runtime.block_on(client.status()).unwrap_err();
    assert!(
        error.to_string().starts_with("the edge is not running"),
        "{error}"
    );
    let log = std::fs::read_to_string(&options.log_file).unwrap_or_default();
    assert!(log.contains("SIGTERM"), "{log}");
}
