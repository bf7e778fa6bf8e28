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
