//! WebSockets through the edge across a real cut-over and a real rollback, with a real client
//! library (tungstenite) and the tasks-app's `/ws` echo.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::support::*;

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket through the staging edge; returns it and the version that answered.
fn open(lab: &Lab) -> (Socket, String) {
    let (socket, response) = tungstenite::connect(format!("ws://{}/ws", lab.listen))
        .expect("the WebSocket handshake passes through the edge");
    let version = response.headers()["x-app-version"]
        .to_str()
        .unwrap()
        .to_string();
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
    }
    (socket, version)
}

#[track_caller]
fn echo(socket: &mut Socket, text: &str) {
    socket.send(Message::text(text)).unwrap();
    let reply = socket.read().expect("an echo");
    assert_eq!(reply.into_text().unwrap().as_str(), text);
}

#[test]
fn open_websockets_stay_on_their_version_through_a_cut_over_and_a_rollback() {
    // A long monitor window: the rollback switches back to the warm previous version. A short
    // drain timeout: how long open WebSockets may stay on a version that no longer serves.
    let lab = Lab::with(|s| s.monitor = "60s".into());
    let config = format!(
        "{}\n[environments.staging.edge]\ndrain_timeout = \"3s\"\n",
        lab.config()
    );
    let v1 = lab.commit_config(&config, "drain WebSockets for 3 s");
    lab.deploy().expect(0);
    let (mut on_v1, version) = open(&lab);
    assert_eq!(version, v1);
    echo(&mut on_v1, "before");

    // The cut-over: the open WebSocket stays on v1, a new one goes to v2.
    let v2 = lab.commit("second");
    lab.deploy().expect(0);
    lab.assert_serving(&v2);
    echo(&mut on_v1, "during the cut-over");
    let (mut on_v2, version) = open(&lab);
    assert_eq!(version, v2);
    echo(&mut on_v2, "on the new version");

    // The rollback: v1 serves again; the WebSocket on v2 stays there until v2 is drained.
    lab.run(&["rollback", "staging"]).expect(0);
    lab.assert_serving(&v1);
    let (mut again_v1, version) = open(&lab);
    assert_eq!(version, v1);
    echo(&mut on_v2, "still on v2");
    echo(&mut on_v1, "never interrupted");

    // Past the drain timeout (3 s) the edge closes it cleanly (1001), before v2 stops.
    let started = Instant::now();
    let frame = loop {
        match on_v2.read() {
            Ok(Message::Close(frame)) => break frame,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "the WebSocket on v2 was not closed after the drain timeout"
                );
            }
            Err(e) => panic!("the WebSocket on v2 ended without a Close frame: {e}"),
        }
    };
    let frame = frame.expect("a Close frame with a status");
    assert_eq!(frame.code, CloseCode::Away, "{frame:?}");
    echo(&mut on_v1, "after the drain");
    echo(&mut again_v1, "after the drain too");
    lab.assert_serving(&v1);
    lab.run(&["down"]).expect(0);
}

/// WebSockets over HTTP/2 (RFC 8441): many on one TLS connection, each a stream opened by an
/// extended CONNECT, with hyper's HTTP/2 client and tokio-tungstenite on top.
mod over_http2 {
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};
    use http_body_util::{BodyExt, Empty};
    use hyper::client::conn::http2::SendRequest;
    use hyper::{Method, Request, StatusCode};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    use crate::support::*;
    use cutover_http::testing::TestCa;

    const HOST: &str = "tasks.example.com";
    type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

    /// One HTTP/2 connection over TLS to the edge (ALPN h2 only, trusting `ca`).
    async fn connect(port: u16, ca: &TestCa) -> SendRequest<Empty<Bytes>> {
        let tls = tls(port, ca, b"h2").await;
        let (mut sender, mut connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("an HTTP/2 handshake with the edge");
        // A first request while the connection runs here, so that its SETTINGS can be read.
        let first = tokio::select! {
            body = get(&mut sender, port) => body,
            ended = &mut connection => panic!("the HTTP/2 connection ended: {ended:?}"),
        };
        assert!(first.contains("tasks-app"), "{first}");
        assert!(
            connection.is_extended_connect_protocol_enabled(),
            "the edge's SETTINGS enable extended CONNECT (RFC 8441 §3)"
        );
        tokio::spawn(connection);
        sender
    }

    /// A TLS connection to the edge that agreed on `alpn`, nothing sent on it yet.
    async fn tls(
        port: u16,
        ca: &TestCa,
        alpn: &[u8],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let config = cutover_http::testing::client_trusting(&ca.pem(), &[alpn]);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("a TLS handshake with the edge");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        tls
    }

    /// A plain GET on the connection: the version that answered.
    async fn get(sender: &mut SendRequest<Empty<Bytes>>, port: u16) -> String {
        let request = Request::get(format!("https://{HOST}:{port}/"))
            .body(Empty::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// An extended CONNECT (RFC 8441 §4) for a WebSocket at `path`.
    fn websocket_request(port: u16, path: &str) -> Request<Empty<Bytes>> {
        let mut request = Request::builder()
            .method(Method::CONNECT)
            .uri(format!("https://{HOST}:{port}{path}"))
            .header("sec-websocket-version", "13")
            .body(Empty::new())
            .unwrap();
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        request
    }

    /// A WebSocket to `/ws`, and the version that answered.
    async fn open(sender: &mut SendRequest<Empty<Bytes>>, port: u16) -> (Ws, String) {
        let request = websocket_request(port, "/ws");
        let mut response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{response:?}");
        assert!(
            !response.headers().contains_key("sec-websocket-accept")
                && !response.headers().contains_key("upgrade"),
            "HTTP/1.1 handshake headers stay at the edge: {response:?}"
        );
        assert!(
            response.headers().contains_key("x-request-id"),
            "{response:?}"
        );
        let version = response.headers()["x-app-version"]
            .to_str()
            .unwrap()
            .to_string();
        let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
        (ws, version)
    }

    /// An extended CONNECT for a WebSocket at `path` that the app is not expected to accept.
    async fn connect_to(
        sender: &mut SendRequest<Empty<Bytes>>,
        port: u16,
        path: &str,
    ) -> (StatusCode, String) {
        let request = websocket_request(port, path);
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn echo(ws: &mut Ws, text: &str) {
        ws.send(Message::text(text)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an echo within 5 s")
            .expect("an open WebSocket")
            .expect("a message");
        assert_eq!(reply.into_text().unwrap().as_str(), text);
    }

    /// A lab whose staging serves HTTPS for [`HOST`] with a certificate of its own CA, and
    /// drains WebSockets for 3 s; deployed. Its first version, and the CA.
    fn https_lab() -> (Lab, String, TestCa) {
        let lab = Lab::with(|s| s.monitor = "60s".into());
        let ca = TestCa::new("lab CA");
        let certs = lab.repo.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let site = ca.issue(&[HOST]);
        std::fs::write(certs.join("site.crt"), &site.cert_pem).unwrap();
        std::fs::write(certs.join("site.key"), &site.key_pem).unwrap();
        let config = format!(
            "{}hosts = [\"{HOST}\"]\ntls = {{ cert = \"certs/site.crt\", key = \"certs/site.key\" }}\n\n[environments.staging.edge]\ndrain_timeout = \"3s\"\n",
            lab.config()
        );
        let v1 = lab.commit_config(&config, "https, WebSockets drained for 3 s");
        lab.deploy().expect(0);
        (lab, v1, ca)
    }

    #[test]
    fn websockets_over_http2_stay_on_their_version_through_a_cut_over_and_a_rollback() {
        let (lab, v1, ca) = https_lab();
        let port = lab.listen.port();
        let rt = tokio::runtime::Runtime::new().unwrap();

        // The edge offers extended CONNECT in its SETTINGS; one connection carries them all.
        let mut h2 = rt.block_on(connect(port, &ca));
        assert!(rt
            .block_on(get(&mut h2, port))
            .contains(&format!("tasks-app {v1}")));
        let (mut on_v1, version) = rt.block_on(open(&mut h2, port));
        assert_eq!(version, v1);
        rt.block_on(echo(&mut on_v1, "before"));
        // An app that does not switch: its refusal is passed on; a success that is not
        // `101 Switching Protocols` must not open a tunnel (502).
        let (status, body) = rt.block_on(connect_to(&mut h2, port, "/tasks/nope/nope"));
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, body) = rt.block_on(connect_to(&mut h2, port, "/"));
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert!(body.contains("not 101 Switching Protocols"), "{body}");
        rt.block_on(echo(&mut on_v1, "beside refused ones"));

        // The cut-over: the open WebSocket stays on v1, a new one on the same connection goes
        // to v2, and so does a plain request beside them.
        let v2 = lab.commit("second");
        lab.deploy().expect(0);
        rt.block_on(echo(&mut on_v1, "during the cut-over"));
        let (mut on_v2, version) = rt.block_on(open(&mut h2, port));
        assert_eq!(version, v2);
        rt.block_on(echo(&mut on_v2, "on the new version"));
        assert!(rt
            .block_on(get(&mut h2, port))
            .contains(&format!("tasks-app {v2}")));

        // The rollback: v1 serves new ones again; the one on v2 stays until v2 is drained.
        lab.run(&["rollback", "staging"]).expect(0);
        let (mut again_v1, version) = rt.block_on(open(&mut h2, port));
        assert_eq!(version, v1);
        rt.block_on(echo(&mut on_v2, "still on v2"));
        rt.block_on(echo(&mut on_v1, "never interrupted"));

        // Past the drain timeout (3 s) the edge closes it with a Close frame (1001).
        let started = Instant::now();
        let next = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(20), on_v2.next()).await });
        let frame = match next.expect("the WebSocket on v2 was not closed after the drain timeout")
        {
            Some(Ok(Message::Close(frame))) => frame,
            other => panic!("the WebSocket on v2 ended without a Close frame: {other:?}"),
        };
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(frame.expect("a status").code, CloseCode::Away);
        rt.block_on(echo(&mut on_v1, "after the drain"));
        rt.block_on(echo(&mut again_v1, "after the drain too"));
        assert!(rt
            .block_on(get(&mut h2, port))
            .contains(&format!("tasks-app {v1}")));

        // `cutover edge upgrade`: the old edge says GOAWAY on this connection, yet its open
        // WebSockets go on; a new connection reaches the new edge with WebSockets too.
        lab.run(&["edge", "upgrade"])
            .expect(0)
            .says(&["edge upgraded", "handed its listening sockets"]);
        rt.block_on(echo(&mut on_v1, "through the edge upgrade"));
        let mut fresh = rt.block_on(connect(port, &ca));
        let (mut on_new_edge, version) = rt.block_on(open(&mut fresh, port));
        assert_eq!(version, v1);
        rt.block_on(echo(&mut on_new_edge, "on the new edge"));
        rt.block_on(echo(&mut again_v1, "still open on the old edge"));
        drop((on_v1, again_v1, h2, on_new_edge, fresh));
        lab.run(&["down"]).expect(0);
    }

    /// Connections the old edge accepted just before `cutover edge upgrade` whose first request
    /// comes after it (their TLS handshake done, nothing sent yet: a client between its connect
    /// and its request) are served by the old edge, HTTP/2 and HTTP/1.1 alike, not closed.
    #[test]
    fn a_connection_accepted_just_before_an_edge_upgrade_gets_its_answer() {
        let (lab, v1, ca) = https_lab();
        let port = lab.listen.port();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (h2, h1) = rt.block_on(async {
            (
                tls(port, &ca, b"h2").await,
                tls(port, &ca, b"http/1.1").await,
            )
        });
        lab.run(&["edge", "upgrade"])
            .expect(0)
            .says(&["edge upgraded", "handed its listening sockets"]);
        let body = rt.block_on(async {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(h2))
                    .await
                    .expect("the old edge still speaks HTTP/2 on it");
            tokio::spawn(connection);
            tokio::time::timeout(Duration::from_secs(5), get(&mut sender, port))
                .await
                .expect("an answer within 5 s")
        });
        assert!(body.contains(&format!("tasks-app {v1}")), "{body}");
        let (status, body) = rt.block_on(async {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(h1))
                .await
                .unwrap();
            tokio::spawn(connection);
            let request = Request::get("/")
                .header("host", HOST)
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = sender
                .send_request(request)
                .await
                .expect("the old edge answers the request on it");
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        });
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains(&format!("tasks-app {v1}")), "{body}");
        lab.run(&["down"]).expect(0);
    }

    /// The browser on this machine for the browser tests, if any: `CUTOVER_REQUIRE_BROWSER=1`
    /// (CI) makes its absence a failure.
    fn browser() -> Option<String> {
        let found = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|b| {
                std::process::Command::new("sh")
                    .args(["-c", &format!("command -v {b}")])
                    .output()
                    .is_ok_and(|o| o.status.success())
            });
        if found.is_none() {
            assert!(
                std::env::var_os("CUTOVER_REQUIRE_BROWSER").is_none(),
                "CUTOVER_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)"
            );
            eprintln!("skipped: no chromium on this machine (apt-get install chromium)");
        }
        found.map(str::to_string)
    }

    /// A real browser (headless Chromium) opens a WebSocket through the edge: over the HTTP/2
    /// connection it already has (RFC 8441), which the edge's access log shows as a CONNECT.
    #[test]
    fn a_browser_opens_its_websocket_over_http2_through_the_edge() {
        let Some(browser) = browser() else {
            return;
        };
        let (lab, v1, _ca) = https_lab();
        let port = lab.listen.port();
        let origin = format!("https://{HOST}:{port}");
        let page = lab.repo.join("browser.html");
        // The page first fetches from the edge (an HTTP/2 connection that Chromium then reuses
        // for WebSockets, once the edge's SETTINGS allow it; with credentials, as a WebSocket
        // has them: Chromium keeps connections with and without apart), echoes a message, and
        // says how that went by one more request, which the edge's access log shows.
        std::fs::write(
            &page,
            format!(
                r#"<!doctype html><body><script>
const say = (what) => fetch("{origin}/browser-says/" + what, {{mode: "no-cors", credentials: "include"}});
const open = (attempt) => {{
  const ws = new WebSocket("wss://{HOST}:{port}/ws");
  ws.onopen = () => ws.send("hello from the browser");
  ws.onmessage = (e) => {{ say(e.data === "hello from the browser" ? "echoed-" + attempt : "wrong-echo"); ws.close(); }};
  ws.onerror = () => attempt < 2 ? say("retrying").then(() => open(attempt + 1)) : say("websocket-error");
}};
fetch("{origin}/", {{mode: "no-cors", credentials: "include"}}).then(() => open(1)).catch(() => say("fetch-failed"));
</script></body>"#
            ),
        )
        .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut command = std::process::Command::new(&browser);
        command.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            // The lab's CA is not in the browser's store; the test trusts the edge itself.
            "--ignore-certificate-errors",
            &format!("--host-resolver-rules=MAP {HOST} 127.0.0.1"),
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("file://{}", page.display()),
        ]);
        let browsing = Browser::start(command, profile.path());
        let access = || {
            lab.run(&["logs", "staging", "--access", "-n", "100"])
                .expect(0)
                .stdout
        };
        // The page tries a second WebSocket when its first one errors, as an app reconnects:
        // once in several CI runs (never here) the first one errored; the logs say it.
        let said = (0..150).find_map(|_| {
            std::thread::sleep(Duration::from_millis(200));
            let log = access();
            log.lines()
                .find(|l| l.contains("/browser-says/") && !l.contains("/browser-says/retrying"))
                .map(str::to_string)
        });
        let output = browsing.stop();
        let said = said.unwrap_or_else(|| {
            panic!(
                "the page said nothing in 30 s: {output}\naccess log:\n{}",
                access()
            )
        });
        let log = access();
        if log.contains("/browser-says/retrying") {
            eprintln!(
                "warning: the browser's first WebSocket errored and it tried again\naccess log:\n{log}\nedge log:\n{}",
                std::fs::read_to_string(lab.edge_dir().join("edge.log")).unwrap_or_default()
            );
        }
        assert!(
            said.contains("/browser-says/echoed"),
            "{said}\n{output}\naccess log:\n{}\nedge log:\n{}",
            access(),
            std::fs::read_to_string(lab.edge_dir().join("edge.log")).unwrap_or_default()
        );

        // What the edge saw: the page's fetch and the WebSocket, both to v1, the WebSocket as
        // an extended CONNECT on the HTTP/2 connection (an HTTP/1.1 one would be a GET).
        let lines = access();
        let ws = lines
            .lines()
            .filter(|l| l.contains("\"path\":\"/ws\""))
            .find(|l| !l.contains("\"status\":5"))
            .unwrap_or_else(|| panic!("no WebSocket in the access log: {lines}"));
        assert!(ws.contains("\"method\":\"CONNECT\""), "{ws}");
        assert!(ws.contains("\"status\":200"), "{ws}");
        assert!(
            !ws.contains("\"request_id\":\"\""),
            "logged with its id: {ws}"
        );
        let release = lab.staging()["live"]["release"].as_i64().unwrap();
        assert!(ws.contains(&format!("\"release\":{release}")), "{ws}");
        assert!(lines.contains(&format!("\"release\":{release}")), "{lines}");
        let _ = v1;
        lab.run(&["down"]).expect(0);
    }

    /// A browser running until the test has seen what it wanted; its output kept in a file
    /// (a pipe nobody reads would stall it).
    struct Browser {
        child: std::process::Child,
        out: std::path::PathBuf,
    }

    impl Browser {
        fn start(mut command: std::process::Command, dir: &std::path::Path) -> Browser {
            let out = dir.join("browser-output.txt");
            let file = std::fs::File::create(&out).unwrap();
            let child = command
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .expect("starting the browser");
            Browser { child, out }
        }

        /// Stops it; what it printed.
        fn stop(mut self) -> String {
            let _ = self.child.kill();
            let _ = self.child.wait();
            std::fs::read_to_string(&self.out).unwrap_or_default()
        }
    }

    impl Drop for Browser {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
