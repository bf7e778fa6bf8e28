//! Health probes: is this instance serving what it should?
//!
//! An HTTP(S) probe opens a fresh connection, sends `GET <path>` and judges the status and, if
//! asked, the body. A TCP connect alone proves nothing (a proxy in front of an app accepts
//! connections before the app listens), so there is no TCP-only probe for HTTP apps.
//!
//! Probes go through cutover's one HTTP client stack (`cutover-http`). Over HTTPS the
//! instance's certificate is not verified unless a CA bundle is given: instances usually have
//! self-signed ones, and the probe goes to an address cutover itself picked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use cutover_http::{ClientOptions, Failure, Verify};

/// How a probe talks to the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

/// What a probe asks of the instance.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    pub path: String,
    /// `None` accepts any 2xx.
    pub status: Option<u16>,
    pub body_contains: Option<String>,
    pub timeout: Duration,
    pub scheme: Scheme,
    /// With `Https`: the CAs that verify the instance's certificate (none given: not verified).
    pub ca_bundle: Option<PathBuf>,
}

/// Why a probe failed, in words for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProbeFailure {
    pub message: String,
    /// The instance answered (with a wrong status or body): it is up and says it is unwell,
    /// as opposed to not listening yet or not answering in time.
    pub answered: bool,
}

impl ProbeFailure {
    fn silent(message: String) -> ProbeFailure {
        ProbeFailure {
            message,
            answered: false,
        }
    }

    fn answered(message: String) -> ProbeFailure {
        ProbeFailure {
            message,
            answered: true,
        }
    }
}

const MAX_RESPONSE: usize = 64 * 1024;

/// The probing client of a check (one per CA bundle, built once): fresh connections, no
/// proxies, no redirects.
fn client_for(check: &HttpCheck) -> Result<cutover_http::Client, ProbeFailure> {
    static CLIENTS: OnceLock<Mutex<HashMap<Option<PathBuf>, cutover_http::Client>>> =
        OnceLock::new();
    let mut clients = CLIENTS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(c) = clients.get(&check.ca_bundle) {
        return Ok(c.clone());
    }
    let options = ClientOptions {
        verify: match &check.ca_bundle {
            Some(path) => Verify::Roots {
                ca_bundle: Some(path.clone()),
            },
            None => Verify::Nothing,
        },
        connect_timeout: check.timeout,
        timeout: None,
        max_redirects: 0,
        pool: false,
        proxy_from_env: false,
    };
    let client = cutover_http::client(&options).map_err(|e| {
        ProbeFailure::silent(format!(
            "GET {}: {e}\nhint: fix [health] ca_bundle (a PEM file of CA certificates)",
            check.path
        ))
    })?;
    clients.insert(check.ca_bundle.clone(), client.clone());
    Ok(client)
}

/// Probes `addr` once.
pub async fn probe(addr: SocketAddr, check: &HttpCheck) -> Result<(), ProbeFailure> {
    match tokio::time::timeout(check.timeout, probe_inner(addr, check)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeFailure::silent(format!(
            "GET {} timed out after {} ms",
            check.path,
            check.timeout.as_millis()
        ))),
    }
}

async fn probe_inner(addr: SocketAddr, check: &HttpCheck) -> Result<(), ProbeFailure> {
    let client = client_for(check)?;
    let scheme = match check.scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    let url = format!("{scheme}://{addr}{}", check.path);
    let mut response = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) => return Err(request_failure(addr, check, &e)),
    };
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while body.len() < MAX_RESPONSE {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    judge(status, &body, check)
}

fn request_failure(
    addr: SocketAddr,
    check: &HttpCheck,
    e: &cutover_http::reqwest::Error,
) -> ProbeFailure {
    let path = &check.path;
    match cutover_http::classify(e) {
        Failure::Refused => ProbeFailure::silent(format!(
            "GET {path}: cannot connect to {addr}: connection refused"
        )),
        Failure::Timeout => ProbeFailure::silent(format!(
            "GET {path} timed out after {} ms",
            check.timeout.as_millis()
        )),
        Failure::NoTls => ProbeFailure::answered(format!(
            "GET {path}: {addr} does not speak TLS\nhint: set [health] scheme = \"http\" if the app serves plain HTTP"
        )),
        Failure::Certificate(why) => ProbeFailure::answered(format!(
            "GET {path}: the certificate of {addr} is not trusted: {why}\nhint: give [health] ca_bundle the CA that signs the instances' certificates, or leave ca_bundle out to not verify them"
        )),
        other => ProbeFailure::silent(format!("GET {path}: {addr}: {other}")),
    }
}

/// Judges a response (its status and the start of its body) against the check.
pub fn judge(status: u16, body: &[u8], check: &HttpCheck) -> Result<(), ProbeFailure> {
    let status_ok = match check.status {
        Some(want) => status == want,
        None => (200..300).contains(&status),
    };
    if !status_ok {
        let want = check.status.map_or("2xx".to_string(), |s| s.to_string());
        return Err(ProbeFailure::answered(format!(
            "GET {} → {status} (expected {want})",
            check.path
        )));
    }
    if let Some(needle) = &check.body_contains {
        if !String::from_utf8_lossy(body).contains(needle.as_str()) {
            return Err(ProbeFailure::answered(format!(
                "GET {} → {status} but the body does not contain {needle:?}",
                check.path
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_http::testing::{TestCa, TestServer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn check() -> HttpCheck {
        HttpCheck {
            path: "/health".into(),
            status: None,
            body_contains: Some("ok".into()),
            timeout: Duration::from_millis(500),
            scheme: Scheme::Http,
            ca_bundle: None,
        }
    }

    async fn serve_once(response: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_2xx_with_the_expected_body_passes() {
        let addr =
            serve_once("HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}").await;
        assert_eq!(probe(addr, &check()).await, Ok(()));
    }

    #[tokio::test]
    async fn a_500_fails_and_says_so() {
        let addr =
            serve_once("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n").await;
        let err = probe(addr, &check()).await.unwrap_err();
        assert!(
            err.message.contains("500") && err.message.contains("2xx"),
            "{err}"
        );
        assert!(err.answered);
    }

    #[tokio::test]
    async fn a_404_fails() {
        let addr = serve_once("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
        assert!(probe(addr, &check())
            .await
            .unwrap_err()
            .message
            .contains("404"));
    }

    #[tokio::test]
    async fn a_wrong_body_fails() {
        let addr = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnope").await;
        assert!(probe(addr, &check())
            .await
            .unwrap_err()
            .message
            .contains("does not contain"));
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        assert!(probe(addr, &check())
            .await
            .unwrap_err()
            .message
            .contains("timed out"));
    }

    #[tokio::test]
    async fn nobody_listening_is_a_connect_failure() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(probe(addr, &check())
            .await
            .unwrap_err()
            .message
            .contains("cannot connect"));
    }

    #[test]
    fn an_exact_status_is_required_when_configured() {
        let mut c = check();
        c.status = Some(204);
        c.body_contains = None;
        assert!(judge(200, b"", &c).is_err());
        assert!(judge(204, b"", &c).is_ok());
    }

    fn healthy(_: &cutover_http::testing::Recorded) -> cutover_http::testing::Answer {
        (200, vec![], b"{\"status\":\"ok\"}".to_vec())
    }

    #[tokio::test]
    async fn https_probes_pass_self_signed_instances_and_verify_with_a_bundle() {
        let ca = TestCa::new("instances CA");
        let server = TestServer::start(Some(&ca.issue(&["instance.internal"])), healthy);
        let mut c = check();
        c.scheme = Scheme::Https;
        // Not verified without a bundle: a self-signed instance passes.
        assert_eq!(probe(server.addr, &c).await, Ok(()));

        // With a bundle the certificate is verified, and this one names another host.
        let dir = std::env::temp_dir().join(format!("cutover-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        c.ca_bundle = Some(ca.write(&dir.join("ca.pem")));
        let err = probe(server.addr, &c).await.unwrap_err();
        assert!(
            err.message.contains("not trusted") && err.message.contains("ca_bundle"),
            "{err}"
        );
        let good = TestServer::start(Some(&ca.issue(&["127.0.0.1"])), healthy);
        assert_eq!(probe(good.addr, &c).await, Ok(()));

        // An instance that speaks plain HTTP is told apart, with the fix.
        let plain = TestServer::start(None, healthy);
        c.ca_bundle = None;
        let err = probe(plain.addr, &c).await.unwrap_err();
        assert!(
            err.message.contains("does not speak TLS") && err.message.contains("scheme"),
            "{err}"
        );
        assert!(err.answered);

        // A bundle that is not one is named.
        std::fs::write(dir.join("bad.pem"), "nope").unwrap();
        c.ca_bundle = Some(dir.join("bad.pem"));
        let err = probe(good.addr, &c).await.unwrap_err();
        assert!(err.message.contains("bad.pem"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
