//! cutover-docker: images and containers through the Docker Engine API (Docker or Podman).
//!
//! - [`Engine`]: a connection to a Docker or Podman engine, API version negotiated.
//! - [`build_image`], [`push`], [`pull_digest`], [`image_exists`], [`remove_image`],
//!   [`list_images`]: the image artifact's life (build once, push, pull by digest only).
//! - [`registry_digest`]: asks the registry itself which digest a tag points at now.
//! - [`DockerRuntime`]: the [`cutover_runtime::Runtime`] that runs one container per instance,
//!   labelled so that a restarted server finds them again.
//!
//! Architecture invariant: nothing here writes a secret anywhere. Instance variables go into the
//! container's environment at create time only; registry credentials travel in the
//! `X-Registry-Auth` header / `Authorization` header and are never part of an error or a log line
//! ([`Credentials`]' `Debug` hides the password).

mod context;
mod image;
mod registry;
mod runtime;

use std::fmt;
use std::time::Duration;

use bollard::Docker;

pub use image::{
    build_image, image_exists, list_images, pull_digest, push, remove_image, BuildSpec,
    ImageSummary,
};
pub use registry::{api_endpoint, registry_digest, split_repository, RegistryAccess};
pub use runtime::{
    check_spec, last_lines, parse_time, prepare_image, volume_bind, DockerRuntime, ImagePull,
    LABEL_APP, LABEL_ENV, LABEL_INSTANCE, LABEL_PORT, LABEL_RELEASE, LABEL_STOP_TIMEOUT,
    LABEL_VERSION,
};

/// How long one engine request may take (a build or a push streams for at most this long).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long connecting and negotiating the API version may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which engine speaks at the other end of the socket. Both speak the Docker Engine API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Docker,
    Podman,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Docker => "docker",
            EngineKind::Podman => "podman",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A connection to a container engine, API version negotiated.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    pub kind: EngineKind,
    /// What we connected to (`unix:///var/run/docker.sock`), for errors.
    pub endpoint: String,
    /// The API version both sides speak (e.g. `1.41`).
    pub api_version: String,
}

impl Engine {
    /// Connects to `host` (`unix:///…`, `tcp://…`, `http://…`), else `DOCKER_HOST`, else the
    /// default socket of `kind`, and negotiates the API version.
    ///
    /// An engine that does not answer gives [`DockerError::Unreachable`], naming the endpoint
    /// tried and how to point at another.
    pub async fn connect(host: Option<&str>, kind: EngineKind) -> Result<Engine, DockerError> {
        let endpoint = match host {
            Some(h) if !h.trim().is_empty() => h.trim().to_string(),
            _ => match std::env::var("DOCKER_HOST") {
                Ok(h) if !h.trim().is_empty() => h.trim().to_string(),
                _ => default_socket(kind),
            },
        };
        let unreachable = |detail: String| DockerError::Unreachable {
            endpoint: endpoint.clone(),
            kind,
            detail,
        };
        if let Some(path) = endpoint.strip_prefix("unix://") {
            if !std::path::Path::new(path).exists() {
                return Err(unreachable(format!("socket {path} does not exist")));
            }
        }
        let docker = Docker::connect_with_host(&endpoint)
            .map_err(|e| unreachable(e.to_string()))?
            .with_timeout(REQUEST_TIMEOUT);
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )))
            }
        };
        let api_version = docker.client_version().to_string();
        Ok(Engine {
            docker,
            kind,
            endpoint,
            api_version,
        })
    }

    /// The underlying bollard client, for what this crate does not wrap.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }
}

/// Where an engine of `kind` listens when nothing says otherwise.
pub fn default_socket(kind: EngineKind) -> String {
    match kind {
        EngineKind::Docker => "unix:///var/run/docker.sock".to_string(),
        EngineKind::Podman => {
            // Rootless Podman listens in the user's runtime dir; rootful in /run/podman.
            let uid = unsafe_free_uid();
            match std::env::var("XDG_RUNTIME_DIR") {
                Ok(dir) if uid != Some(0) && !dir.is_empty() => {
                    format!("unix://{dir}/podman/podman.sock")
                }
                _ => "unix:///run/podman/podman.sock".to_string(),
            }
        }
    }
}

/// The current uid, read from /proc (no libc needed).
fn unsafe_free_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Registry credentials. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the {kind} engine at {endpoint}: {detail}\n\
         hint: start the engine, or point cutover at another one with DOCKER_HOST=unix:///… \
         or `[docker] host = \"unix:///…\"` in cutover.toml"
    )]
    Unreachable {
        endpoint: String,
        kind: EngineKind,
        detail: String,
    },
    /// The build context could not be read or packed.
    #[error("build context {path}: {detail}")]
    Context { path: String, detail: String },
    /// A Dockerfile step failed. `output` holds the last lines the build printed.
    #[error("image build failed: {message}\n{}", .output.join("\n"))]
    BuildFailed {
        message: String,
        output: Vec<String>,
    },
    #[error(
        "registry {registry} is unreachable: {detail}\n\
         hint: check [registry] url and that the registry runs"
    )]
    RegistryUnreachable { registry: String, detail: String },
    #[error(
        "registry {registry} refused the credentials (or needs some): {detail}\n\
         hint: set [registry] username/password (secret sources), or log in with \
         `docker login {registry}`"
    )]
    AuthRefused { registry: String, detail: String },
    /// The registry's TLS is not what was expected: an untrusted certificate, or no TLS.
    #[error(
        "registry {registry}: {detail}\n\
         hint: set [registry] ca_bundle to the PEM file of the CA that signed its certificate, \
         or insecure = true to allow plain HTTP and any certificate (as Docker's insecure-registries)"
    )]
    RegistryTls { registry: String, detail: String },
    /// The registry or the engine does not know this image, tag or digest.
    #[error("{reference} not found: {detail}")]
    NotFound { reference: String, detail: String },
    #[error("registry {registry}: {detail}")]
    Registry { registry: String, detail: String },
    #[error("invalid image reference `{reference}`: {detail}")]
    InvalidReference { reference: String, detail: String },
    /// Any other engine error, with what we were doing.
    #[error("{context}: {detail}")]
    Api { context: String, detail: String },
}

impl DockerError {
    pub(crate) fn api(context: impl Into<String>, e: bollard::errors::Error) -> DockerError {
        DockerError::Api {
            context: context.into(),
            detail: engine_message(&e),
        }
    }
}

/// The engine's own message for an error (not bollard's wrapping of it).
pub fn engine_message(e: &bollard::errors::Error) -> String {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError {
            status_code,
            message,
        } => format!("{} (HTTP {status_code})", message.trim()),
        E::DockerStreamError { error } => error.trim().to_string(),
        other => other.to_string(),
    }
}

/// The HTTP status of an engine error, if it is one.
pub fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// A raw `GET <path>` on the engine's socket, for answers bollard's typed models reject
/// (Podman reports a container state `stopped`, which is not in the Docker API's enum).
pub(crate) async fn raw_get(engine: &Engine, path: &str) -> Result<(u16, bytes::Bytes), String> {
    use http_body_util::{BodyExt, Empty};
    let uri = format!("/v{}{path}", engine.api_version);
    let req = hyper::Request::get(&uri)
        .header(hyper::header::HOST, "engine")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    macro_rules! send {
        ($stream:expr) => {{
            let io = hyper_util::rt::TokioIo::new($stream);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, body))
        }};
    }
    if let Some(p) = engine.endpoint.strip_prefix("unix://") {
        let stream = tokio::net::UnixStream::connect(p)
            .await
            .map_err(|e| e.to_string())?;
        send!(stream)
    } else {
        let hostport = engine
            .endpoint
            .trim_start_matches("tcp://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let stream = tokio::net::TcpStream::connect(hostport)
            .await
            .map_err(|e| e.to_string())?;
        send!(stream)
    }
}
