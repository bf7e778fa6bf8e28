//! Health probes: is this instance serving what it should?
//!
//! An HTTP probe opens a fresh connection, sends `GET <path>` and judges the status line and,
//! if asked, the body. A TCP connect alone proves nothing (a proxy in front of an app accepts
//! connections before the app listens), so there is no TCP-only probe for HTTP apps.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a probe asks of the instance.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    pub path: String,
    /// `None` accepts any 2xx.
    pub status: Option<u16>,
    pub body_contains: Option<String>,
    pub timeout: Duration,
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
    let mut stream = TcpStream::connect(addr).await.map_err(|e| {
        ProbeFailure::silent(format!("GET {}: cannot connect to {addr}: {e}", check.path))
    })?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: cutover-health\r\nConnection: close\r\n\r\n",
        check.path
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| ProbeFailure::silent(format!("GET {}: {e}", check.path)))?;
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                if response.len() >= MAX_RESPONSE {
                    break;
                }
            }
            Err(e) if response.is_empty() => {
                return Err(ProbeFailure::silent(format!("GET {}: {e}", check.path)));
            }
            Err(_) => break,
        }
    }
    judge(&response, check)
}

/// Judges a raw HTTP response against the check.
pub fn judge(response: &[u8], check: &HttpCheck) -> Result<(), ProbeFailure> {
    let text = String::from_utf8_lossy(response);
    let status_line = text.lines().next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ProbeFailure::answered(format!(
                "GET {}: not an HTTP response ({:?})",
                check.path,
                status_line.chars().take(60).collect::<String>()
            ))
        })?;
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
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        if !body.contains(needle.as_str()) {
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
    use tokio::net::TcpListener;

    fn check() -> HttpCheck {
        HttpCheck {
            path: "/health".into(),
            status: None,
            body_contains: Some("ok".into()),
            timeout: Duration::from_millis(500),
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
        assert!(judge(b"HTTP/1.1 200 OK\r\n\r\n", &c).is_err());
        assert!(judge(b"HTTP/1.1 204 No Content\r\n\r\n", &c).is_ok());
    }
}
