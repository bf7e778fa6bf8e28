//! The CLI side of the server's local API: HTTP/1.1 over the state dir's unix socket, and
//! starting the server in the background when none runs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use cutover_api::{Line, Outcome, Refusal};
use cutover_daemon::{FileLock, StateDir};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub struct Client {
    socket: PathBuf,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    /// Connects to the state dir's server, starting one in the background if none answers.
    pub async fn connect_or_start(state: &StateDir) -> anyhow::Result<Client> {
        let client = Client {
            socket: state.socket(),
        };
        if client.ping().await {
            return Ok(client);
        }
        state
            .create()
            .with_context(|| format!("creating the state dir {}", state.path.display()))?;
        let start_lock = state.start_lock();
        let _lock = tokio::task::spawn_blocking(move || FileLock::acquire(&start_lock)).await??;
        if client.ping().await {
            return Ok(client);
        }
        let exe = std::env::current_exe().context("finding the cutover binary")?;
        let mut command = std::process::Command::new(exe);
        command.arg("server").arg("--state-dir").arg(&state.path);
        let pid =
            cutover_daemon::spawn_detached(command, None).context("starting the cutover server")?;
        let started = Instant::now();
        while started.elapsed() < SERVER_START_TIMEOUT {
            if client.ping().await {
                eprintln!(
                    "cutover: started the server in the background (pid {pid}, state dir {}); `cutover down` stops it",
                    state.path.display()
                );
                return Ok(client);
            }
            if !cutover_daemon::pid_alive(pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(state.log_file()).unwrap_or_default();
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!(
            "the cutover server did not come up within {} s{}",
            SERVER_START_TIMEOUT.as_secs(),
            if tail.is_empty() {
                String::new()
            } else {
                format!(":\n  {}", tail.join("\n  "))
            }
        )
    }

    /// Connects only if a server already runs.
    pub async fn connect_existing(state: &StateDir) -> Option<Client> {
        let client = Client {
            socket: state.socket(),
        };
        client.ping().await.then_some(client)
    }

    async fn ping(&self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.send("GET", "/v1/ping", None)).await,
            Ok(Ok((StatusCode::OK, _)))
        )
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(StatusCode, Incoming)> {
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::UnixStream::connect(&self.socket),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "the cutover server does not answer on {}",
                self.socket.display()
            )
        })?
        .with_context(|| {
            format!(
                "connecting to the cutover server at {}",
                self.socket.display()
            )
        })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "cutover")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let response = sender.send_request(request).await?;
        Ok((response.status(), response.into_body()))
    }

    /// A JSON request and its JSON answer; a non-2xx answer becomes a [`Refusal`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        self.call_within(REQUEST_TIMEOUT, method, path, body).await
    }

    /// [`Client::call`] with its own time limit, for answers that wait (a monitor window).
    pub async fn call_within<T: DeserializeOwned>(
        &self,
        limit: Duration,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let body = body.map(serde_json::to_vec).transpose()?;
        let answer = async {
            let (status, incoming) = self.send(method, path, body).await?;
            let bytes = incoming.collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(limit, answer).await.map_err(|_| {
            anyhow!(
                "the cutover server did not answer {method} {path} within {} s",
                limit.as_secs()
            )
        })??;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<Refusal>(&bytes) {
                Ok(refusal) => refusal.into(),
                Err(_) => anyhow!(
                    "the server answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                ),
            });
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("reading the server's answer to {method} {path}"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call("GET", path, None::<&()>).await
    }

    /// A long command: feeds every progress line to `on_line` and returns the outcome.
    pub async fn stream(
        &self,
        path: &str,
        body: &impl Serialize,
        mut on_line: impl FnMut(&Line),
    ) -> anyhow::Result<Outcome> {
        let (status, mut incoming) = self
            .send("POST", path, Some(serde_json::to_vec(body)?))
            .await?;
        let mut buffer: Vec<u8> = Vec::new();
        let mut outcome = None;
        while let Some(frame) = incoming.frame().await {
            let frame = frame.context("the cutover server closed the connection mid-answer")?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buffer.extend_from_slice(data);
            while let Some(pos) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=pos).collect();
                if !status.is_success() {
                    continue;
                }
                match serde_json::from_slice::<Line>(&line) {
                    Ok(Line::Outcome(o)) => outcome = Some(o),
                    Ok(other) => on_line(&other),
                    Err(_) => {}
                }
            }
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&buffer).to_string();
            return Err(match serde_json::from_str::<Refusal>(&text) {
                Ok(refusal) => refusal.into(),
                Err(_) => anyhow!("the server answered {status}: {text}"),
            });
        }
        outcome.ok_or_else(|| {
            anyhow!("the cutover server ended the answer without an outcome; see `cutover history`")
        })
    }
}
