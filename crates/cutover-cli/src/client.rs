//! The CLI side of the server's API: HTTP/1.1 over the state dir's unix socket (starting the
//! server in the background when none runs), or HTTPS to a cutover server on another machine
//! (`cutover-http`, its certificate pinned by fingerprint, a bearer token on every call).

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
    transport: Transport,
}

enum Transport {
    Local {
        socket: PathBuf,
    },
    Remote {
        url: String,
        http: cutover_http::Client,
        token: String,
    },
}

/// An answer's body, read chunk by chunk.
enum Answer {
    Local(Incoming),
    Remote(cutover_http::Response),
}

impl Answer {
    async fn chunk(&mut self) -> anyhow::Result<Option<Bytes>> {
        match self {
            Answer::Local(incoming) => loop {
                let Some(frame) = incoming.frame().await else {
                    return Ok(None);
                };
                let frame = frame.context("the cutover server closed the connection mid-answer")?;
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            },
            Answer::Remote(response) => response.chunk().await.map_err(|e| {
                anyhow!(
                    "the connection to the cutover server broke off mid-answer: {}",
                    cutover_http::classify(&e)
                )
            }),
        }
    }

    async fn all(mut self) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a long command's answer from a remote server may stay silent: the server sends a
/// heartbeat every 5 s, so this much silence is a dead connection (a link that went down sends
/// no reset).
pub const SILENCE_LIMIT: Duration = Duration::from_secs(15);

impl Client {
    /// Connects to the state dir's server, starting one in the background if none answers.
    pub async fn connect_or_start(state: &StateDir) -> anyhow::Result<Client> {
        Client::connect_or_start_with(state, &[]).await
    }

    /// [`Client::connect_or_start`], a server started with `args` (its serving options).
    pub async fn connect_or_start_with(
        state: &StateDir,
        args: &[String],
    ) -> anyhow::Result<Client> {
        let client = Client::local(state);
        if let Some(ping) = client.pinged().await {
            if ping.binary_replaced {
                eprintln!(
                    "cutover: the server (pid {}) runs a binary that was replaced on disk since it started; `cutover server restart` moves it, and the machine's edge, to the new one",
                    ping.pid
                );
            }
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
        command
            .arg("server")
            .arg("--state-dir")
            .arg(&state.path)
            .args(args);
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
        let client = Client::local(state);
        client.ping().await.then_some(client)
    }

    fn local(state: &StateDir) -> Client {
        Client {
            transport: Transport::Local {
                socket: state.socket(),
            },
        }
    }

    /// A client of the cutover server at `url` (`https://host:port`), trusting exactly the
    /// certificate `fingerprint` names and sending `token`.
    pub fn remote(url: &str, fingerprint: &str, token: &str) -> anyhow::Result<Client> {
        let options = cutover_http::ClientOptions {
            verify: cutover_http::Verify::Pinned {
                fingerprint: fingerprint.to_string(),
            },
            connect_timeout: CONNECT_TIMEOUT,
            // Long commands stream for as long as they take; each call sets its own limit.
            timeout: None,
            max_redirects: 0,
            pool: true,
            proxy_from_env: true,
        };
        let http = cutover_http::client(&options)?;
        Ok(Client {
            transport: Transport::Remote {
                url: url.trim_end_matches('/').to_string(),
                http,
                token: token.to_string(),
            },
        })
    }

    /// Where this client's server is, for messages: its URL, or "this machine".
    pub fn server(&self) -> String {
        match &self.transport {
            Transport::Local { .. } => "this machine".into(),
            Transport::Remote { url, .. } => url.clone(),
        }
    }

    /// What the server says of itself, if it answers.
    async fn pinged(&self) -> Option<cutover_api::Ping> {
        let answer =
            tokio::time::timeout(Duration::from_secs(2), self.send("GET", "/v1/ping", None)).await;
        let Ok(Ok((StatusCode::OK, body))) = answer else {
            return None;
        };
        serde_json::from_slice(&body.all().await.ok()?).ok()
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
    ) -> anyhow::Result<(StatusCode, Answer)> {
        self.send_typed(method, path, body, "application/json")
            .await
    }

    async fn send_typed(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> anyhow::Result<(StatusCode, Answer)> {
        let (socket, url, http, token) = match &self.transport {
            Transport::Local { socket } => (socket, "", None, ""),
            Transport::Remote { url, http, token } => {
                (&PathBuf::new(), url.as_str(), Some(http), token.as_str())
            }
        };
        if let Some(http) = http {
            let method = cutover_http::Method::from_bytes(method.as_bytes())?;
            let response = http
                .request(method, format!("{url}{path}"))
                .bearer_auth(token)
                .header("content-type", content_type)
                .body(body.unwrap_or_default())
                .send()
                .await
                .map_err(|e| unreachable(url, &e))?;
            let status = StatusCode::from_u16(response.status().as_u16())?;
            return Ok((status, Answer::Remote(response)));
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(socket))
            .await
            .map_err(|_| anyhow!("the cutover server does not answer on {}", socket.display()))?
            .with_context(|| format!("connecting to the cutover server at {}", socket.display()))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "cutover")
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let response = sender.send_request(request).await?;
        Ok((response.status(), Answer::Local(response.into_body())))
    }

    /// Uploads a blob to a remote server with `PUT`, streamed (never whole in memory); a
    /// non-2xx answer becomes a [`Refusal`].
    pub async fn put_blob(
        &self,
        path: &str,
        body: cutover_http::reqwest::Body,
        len: u64,
    ) -> anyhow::Result<()> {
        let Transport::Remote { url, http, token } = &self.transport else {
            bail!("blobs are uploaded to remote servers only");
        };
        let response = http
            .put(format!("{url}{path}"))
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .header("content-length", len)
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable(url, &e))?;
        let status = StatusCode::from_u16(response.status().as_u16())?;
        let body = Answer::Remote(response).all().await?;
        if !status.is_success() {
            return Err(refusal(status, &body));
        }
        Ok(())
    }

    /// A blob of a remote server, as a body to stream on (to another server), and its length.
    pub async fn get_blob(&self, path: &str) -> anyhow::Result<(cutover_http::reqwest::Body, u64)> {
        let Transport::Remote { url, http, token } = &self.transport else {
            bail!("blobs are fetched from remote servers only");
        };
        let response = http
            .get(format!("{url}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| unreachable(url, &e))?;
        let status = StatusCode::from_u16(response.status().as_u16())?;
        if !status.is_success() {
            let body = Answer::Remote(response).all().await?;
            return Err(refusal(status, &body));
        }
        let len = response.content_length().unwrap_or(0);
        Ok((
            cutover_http::reqwest::Body::wrap_stream(response.bytes_stream()),
            len,
        ))
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
            let (status, answer) = self.send(method, path, body).await?;
            let bytes = answer.all().await?;
            anyhow::Ok((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(limit, answer).await.map_err(|_| {
            anyhow!(
                "the cutover server ({}) did not answer {method} {path} within {} s",
                self.server(),
                limit.as_secs()
            )
        })??;
        if !status.is_success() {
            return Err(refusal(status, &bytes));
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("reading the server's answer to {method} {path}"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call("GET", path, None::<&()>).await
    }

    /// A long command: feeds every progress line to `on_line` and returns the outcome. A
    /// connection that breaks off (or, to a remote server, stays silent past
    /// [`SILENCE_LIMIT`] although the server sends a heartbeat every few seconds) is a
    /// [`Broken`] error naming the release the server had created, if it had.
    pub async fn stream(
        &self,
        path: &str,
        body: &impl Serialize,
        mut on_line: impl FnMut(&Line),
    ) -> anyhow::Result<Outcome> {
        let (status, mut answer) = self
            .send("POST", path, Some(serde_json::to_vec(body)?))
            .await?;
        let mut buffer: Vec<u8> = Vec::new();
        let mut outcome = None;
        let mut release = None;
        let remote = matches!(self.transport, Transport::Remote { .. });
        loop {
            let chunk = if remote {
                match tokio::time::timeout(SILENCE_LIMIT, answer.chunk()).await {
                    Ok(chunk) => chunk,
                    Err(_) => Err(anyhow!(
                        "nothing came from the server for {} s",
                        SILENCE_LIMIT.as_secs()
                    )),
                }
            } else {
                answer.chunk().await
            };
            let data = match chunk {
                Ok(Some(data)) => data,
                Ok(None) => break,
                Err(cause) if status.is_success() && outcome.is_none() => {
                    return Err(Broken {
                        server: self.server(),
                        release,
                        cause: cause.to_string(),
                    }
                    .into())
                }
                Err(cause) => return Err(cause),
            };
            buffer.extend_from_slice(&data);
            while let Some(pos) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=pos).collect();
                if !status.is_success() {
                    continue;
                }
                match serde_json::from_slice::<Line>(&line) {
                    Ok(Line::Outcome(o)) => outcome = Some(o),
                    Ok(Line::Release { id }) => release = Some(id),
                    Ok(Line::Heartbeat) => {}
                    Ok(other) => on_line(&other),
                    Err(_) => {}
                }
            }
        }
        if !status.is_success() {
            return Err(refusal(status, &buffer));
        }
        match outcome {
            Some(outcome) => Ok(outcome),
            None => Err(Broken {
                server: self.server(),
                release,
                cause: "the answer ended without an outcome".into(),
            }
            .into()),
        }
    }
}

/// The connection of a long command broke off before its outcome: the server carries the
/// command on (a deploy runs to its end without its client), so what happened is to be
/// followed, not assumed.
#[derive(Debug, thiserror::Error)]
#[error("the connection to the cutover server {server} broke off: {cause}")]
pub struct Broken {
    pub server: String,
    /// The release the server had created, when it had said so.
    pub release: Option<i64>,
    pub cause: String,
}

/// A non-2xx answer as the error it carries.
fn refusal(status: StatusCode, body: &[u8]) -> anyhow::Error {
    match serde_json::from_slice::<Refusal>(body) {
        Ok(refusal) => refusal.into(),
        Err(_) => anyhow!(
            "the server answered {status}: {}",
            String::from_utf8_lossy(body)
        ),
    }
}

/// A remote server that could not be reached (as opposed to one that answered no): said as a
/// refusal, with what to do.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.message)]
pub struct Unreachable(pub Refusal);

/// A remote server that could not be reached, and what to do.
fn unreachable(url: &str, e: &cutover_http::reqwest::Error) -> anyhow::Error {
    let failure = cutover_http::classify(e);
    let hint = match &failure {
        cutover_http::Failure::Certificate(_) => {
            "if the server's certificate changed on purpose, log in again with the fingerprint `cutover server info` shows on the server"
        }
        cutover_http::Failure::NoTls => "the address answers plain HTTP: is it the webhook listener? use the one `cutover server --listen` serves",
        _ => "is `cutover server --listen` running there, and the address right?",
    };
    Unreachable(Refusal::new(
        format!("cannot reach the cutover server at {url}: {failure}"),
        Some(hint.to_string()),
    ))
    .into()
}
