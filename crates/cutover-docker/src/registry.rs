//! Talking to an OCI registry directly (distribution API v2), for what the engine API does not
//! tell: which digest a tag points at *now*.
//!
//! Over cutover's one HTTP client stack (`cutover-http`: reqwest on rustls). HTTPS, verified
//! against the system's roots plus `[registry] ca_bundle`, is the default; `insecure` allows
//! plain HTTP and any certificate (as Docker's insecure-registries); a loopback registry is
//! tried over HTTPS first and over HTTP only when it speaks no TLS at all, never after a
//! certificate error. Auth as real registries do it: anonymous, basic, and the bearer-token
//! challenge of Docker Hub, GHCR and GitLab, with tokens kept until they expire.
//!
//! Why not an OCI client crate: the one thing needed is `HEAD /v2/<name>/manifests/<tag>` (the
//! engine pushes and pulls); `oci-client` would bring a second HTTP stack with its own TLS
//! settings, and neither its scheme choice (HTTPS or a fixed list of HTTP hosts) nor its errors
//! say what cutover must say (which certificate problem, which fix, which user was refused).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cutover_http::reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use cutover_http::reqwest::{Response, StatusCode, Url};
use cutover_http::{classify, Client, ClientOptions, Failure, Verify};

use crate::{Credentials, DockerError};

/// The manifest media types we accept: a tag's digest is the digest of whichever of these the
/// registry stores, which is the one `docker push` reported.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Docker Hub's names, and the host its API answers on.
const DOCKER_HUB: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A token without `expires_in` lives 60 s (the distribution spec's default).
const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(60);

/// How a registry is reached: `[registry] insecure` and `ca_bundle` (its path already made
/// absolute), and how long one request may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAccess {
    pub insecure: bool,
    pub ca_bundle: Option<PathBuf>,
    pub timeout: Duration,
}

impl Default for RegistryAccess {
    fn default() -> RegistryAccess {
        RegistryAccess {
            insecure: false,
            ca_bundle: None,
            timeout: Duration::from_secs(15),
        }
    }
}

/// `127.0.0.1:5000/team/app` → (`127.0.0.1:5000`, `team/app`); `team/app` → (`docker.io`,
/// `team/app`). The first component is a registry host if it has a `.` or `:` or is
/// `localhost`.
pub fn split_repository(repo: &str) -> (String, String) {
    match repo.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            (host.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), repo.to_string()),
    }
}

/// Where the API of `registry` answers for `name`, as the Docker client resolves it: Docker
/// Hub's API host is `registry-1.docker.io`, and its one-word names live under `library/`.
pub fn api_endpoint(registry: &str, name: &str) -> (String, String) {
    if DOCKER_HUB.contains(&registry.to_ascii_lowercase().as_str()) {
        let name = if name.contains('/') {
            name.to_string()
        } else {
            format!("library/{name}")
        };
        (DOCKER_HUB_API.to_string(), name)
    } else {
        (registry.to_string(), name.to_string())
    }
}

/// Asks the registry which manifest digest `name:tag` points at now (`HEAD
/// /v2/<name>/manifests/<tag>`). `None`: the registry does not know the tag (or the name).
pub async fn registry_digest(
    registry: &str,
    name: &str,
    tag: &str,
    creds: Option<&Credentials>,
    access: &RegistryAccess,
) -> Result<Option<String>, DockerError> {
    let registry = registry.trim();
    if registry.is_empty() || registry.contains('/') {
        return Err(DockerError::InvalidReference {
            reference: registry.to_string(),
            detail: "a registry is `host[:port]`, without a scheme".into(),
        });
    }
    let (host, name) = api_endpoint(registry, name);
    let https = if access.insecure {
        Verify::Nothing
    } else {
        Verify::Roots {
            ca_bundle: access.ca_bundle.clone(),
        }
    };
    // Plain HTTP only where Docker would use it too, and only when the peer speaks no TLS.
    let http_allowed = access.insecure || cutover_http::is_loopback(&host);
    let session = Session {
        client: client(&https, access)?,
        host: host.clone(),
        creds,
    };
    let url = format!("https://{host}/v2/{name}/manifests/{tag}");
    match session.head_manifest(&url, &name).await {
        Err(Fault::Transport(Failure::NoTls)) if http_allowed => {
            let session = Session {
                client: client(&Verify::Nothing, access)?,
                ..session
            };
            let url = format!("http://{host}/v2/{name}/manifests/{tag}");
            session
                .head_manifest(&url, &name)
                .await
                .map_err(|f| f.into_error(&host, access))
        }
        result => result.map_err(|f| f.into_error(&host, access)),
    }
}

/// One client per way of verifying, built once: connections to a registry are reused.
fn client(verify: &Verify, access: &RegistryAccess) -> Result<Client, DockerError> {
    static CLIENTS: OnceLock<Mutex<HashMap<(Verify, Duration), Client>>> = OnceLock::new();
    let key = (verify.clone(), access.timeout);
    let mut clients = CLIENTS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(c) = clients.get(&key) {
        return Ok(c.clone());
    }
    let options = ClientOptions {
        verify: verify.clone(),
        connect_timeout: access.timeout,
        timeout: Some(access.timeout),
        ..ClientOptions::default()
    };
    let c = cutover_http::client(&options).map_err(|e| DockerError::Registry {
        registry: "(all)".into(),
        detail: format!("{e}\nhint: fix [registry] ca_bundle (a PEM file of CA certificates)"),
    })?;
    clients.insert(key, c.clone());
    Ok(c)
}

/// Why a registry conversation failed, before it is worded for the registry.
enum Fault {
    Transport(Failure),
    Error(DockerError),
}

impl Fault {
    fn into_error(self, host: &str, access: &RegistryAccess) -> DockerError {
        match self {
            Fault::Error(e) => e,
            Fault::Transport(f) => transport_error(host, f, access),
        }
    }
}

fn transport_error(host: &str, failure: Failure, access: &RegistryAccess) -> DockerError {
    match failure {
        Failure::Certificate(why) => DockerError::RegistryTls {
            registry: host.to_string(),
            detail: format!("its TLS certificate is not trusted: {why}"),
        },
        Failure::NoTls => DockerError::RegistryTls {
            registry: host.to_string(),
            detail: "it does not speak TLS (a plain-HTTP registry?)".into(),
        },
        Failure::Timeout => DockerError::RegistryUnreachable {
            registry: host.to_string(),
            detail: format!("no answer within {}s", access.timeout.as_secs_f32()),
        },
        other => DockerError::RegistryUnreachable {
            registry: host.to_string(),
            detail: other.to_string(),
        },
    }
}

/// A bearer token and when it stops being used.
struct Token {
    value: String,
    until: Instant,
}

/// (registry host, repository, user): a token is scoped to one repository.
type TokenKey = (String, String, String);

/// The tokens in use, by [`TokenKey`].
fn tokens() -> &'static Mutex<HashMap<TokenKey, Token>> {
    static TOKENS: OnceLock<Mutex<HashMap<TokenKey, Token>>> = OnceLock::new();
    TOKENS.get_or_init(Mutex::default)
}

struct Session<'a> {
    client: Client,
    host: String,
    creds: Option<&'a Credentials>,
}

impl Session<'_> {
    fn user(&self) -> String {
        self.creds.map_or(String::new(), |c| c.username.clone())
    }

    fn who(&self) -> String {
        match self.creds {
            Some(c) => format!("user {}", c.username),
            None => "an anonymous client".to_string(),
        }
    }

    async fn head(&self, url: &str, auth: Option<&str>) -> Result<Response, Fault> {
        let mut req = self.client.head(url).header(ACCEPT, MANIFEST_ACCEPT);
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        req.send().await.map_err(|e| Fault::Transport(classify(&e)))
    }

    async fn head_manifest(&self, url: &str, name: &str) -> Result<Option<String>, Fault> {
        let key = (self.host.clone(), name.to_string(), self.user());
        let cached = {
            let tokens = tokens().lock().unwrap_or_else(|e| e.into_inner());
            tokens
                .get(&key)
                .filter(|t| t.until > Instant::now())
                .map(|t| format!("Bearer {}", t.value))
        };
        let mut resp = self.head(url, cached.as_deref()).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            tokens()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let auth = if challenge.to_ascii_lowercase().starts_with("bearer") {
                let token = self.bearer_token(&challenge).await?;
                let auth = format!("Bearer {}", token.value);
                tokens()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, token);
                auth
            } else {
                let Some(c) = self.creds else {
                    return Err(Fault::Error(DockerError::AuthRefused {
                        registry: self.host.clone(),
                        detail: format!("HEAD {url} needs credentials (HTTP 401)"),
                    }));
                };
                basic(c)
            };
            resp = self.head(url, Some(&auth)).await?;
            if matches!(
                resp.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) {
                return Err(Fault::Error(DockerError::AuthRefused {
                    registry: self.host.clone(),
                    detail: format!(
                        "HEAD {url} refused {} (HTTP {})",
                        self.who(),
                        resp.status().as_u16()
                    ),
                }));
            }
        }
        let host = self.host.clone();
        match resp.status() {
            StatusCode::OK => {
                let digest = resp
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                match digest {
                    Some(d) => Ok(Some(d)),
                    None => Err(Fault::Error(DockerError::Registry {
                        registry: host,
                        detail: format!(
                            "HEAD {url} answered without a Docker-Content-Digest header"
                        ),
                    })),
                }
            }
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::FORBIDDEN => Err(Fault::Error(DockerError::AuthRefused {
                registry: host,
                detail: format!("HEAD {url} refused {} (HTTP 403)", self.who()),
            })),
            s => Err(Fault::Error(DockerError::Registry {
                registry: host,
                detail: format!("HEAD {url}: unexpected HTTP {}", s.as_u16()),
            })),
        }
    }

    /// The token flow of `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`, as Docker
    /// Hub documents it: `GET <realm>?service=…&scope=…`, with basic auth when there are
    /// credentials, answering `{"token": …, "expires_in": …}`.
    async fn bearer_token(&self, challenge: &str) -> Result<Token, Fault> {
        let params = parse_challenge(challenge);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let refused = |detail: String| {
            Fault::Error(DockerError::AuthRefused {
                registry: self.host.clone(),
                detail,
            })
        };
        let Some(realm) = get("realm") else {
            return Err(refused(format!(
                "its bearer challenge names no realm: {challenge}"
            )));
        };
        let realm_url = match Url::parse(realm) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => {
                return Err(Fault::Error(DockerError::Registry {
                    registry: self.host.clone(),
                    detail: format!("its token realm {realm:?} is not an http(s) URL"),
                }))
            }
        };
        let mut query = Vec::new();
        for key in ["service", "scope"] {
            if let Some(v) = get(key) {
                query.push((key, v));
            }
        }
        let mut req = self.client.get(realm_url.clone()).query(&query);
        if let Some(c) = self.creds {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        let realm_shown = cutover_http::origin(&realm_url) + realm_url.path();
        let resp = req.send().await.map_err(|e| match classify(&e) {
            Failure::Certificate(why) => Fault::Error(DockerError::RegistryTls {
                registry: self.host.clone(),
                detail: format!(
                    "the certificate of its token service {realm_shown} is not trusted: {why}"
                ),
            }),
            other => Fault::Error(DockerError::RegistryUnreachable {
                registry: self.host.clone(),
                detail: format!("its token service {realm_shown}: {other}"),
            }),
        })?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(refused(format!(
                "its token service {realm_shown} refused {} (HTTP {})",
                self.who(),
                status.as_u16()
            )));
        }
        let body = resp.bytes().await.unwrap_or_default();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let text: String = text.trim().chars().take(200).collect();
            return Err(Fault::Error(DockerError::Registry {
                registry: self.host.clone(),
                detail: format!(
                    "its token service {realm_shown} answered HTTP {}{}",
                    status.as_u16(),
                    if text.is_empty() {
                        String::new()
                    } else {
                        format!(": {text}")
                    }
                ),
            }));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let Some(value) = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
        else {
            return Err(refused(format!(
                "its token service {realm_shown} answered without a token"
            )));
        };
        let life = v
            .get("expires_in")
            .and_then(|e| e.as_u64())
            .map_or(DEFAULT_TOKEN_LIFE, Duration::from_secs);
        // Stop using it a little before it expires (clocks differ, requests take time).
        let margin = (life / 10).min(Duration::from_secs(10));
        Ok(Token {
            value: value.to_string(),
            until: Instant::now() + life.saturating_sub(margin),
        })
    }
}

fn basic(c: &Credentials) -> String {
    use base64::Engine as _;
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn parse_challenge(challenge: &str) -> Vec<(String, String)> {
    let rest = challenge
        .split_once(' ')
        .map(|(_, r)| r)
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(' ' | ',')) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                value.push(c);
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        out.push((key.trim().to_string(), value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_split_at_the_registry_host() {
        assert_eq!(
            split_repository("127.0.0.1:5000/tasks-app"),
            ("127.0.0.1:5000".into(), "tasks-app".into())
        );
        assert_eq!(
            split_repository("localhost/a/b"),
            ("localhost".into(), "a/b".into())
        );
        assert_eq!(
            split_repository("team/app"),
            ("docker.io".into(), "team/app".into())
        );
    }

    #[test]
    fn docker_hub_names_resolve_as_the_docker_client_resolves_them() {
        assert_eq!(
            api_endpoint("docker.io", "nginx"),
            ("registry-1.docker.io".into(), "library/nginx".into())
        );
        assert_eq!(
            api_endpoint("index.docker.io", "team/app"),
            ("registry-1.docker.io".into(), "team/app".into())
        );
        assert_eq!(
            api_endpoint("ghcr.io", "app"),
            ("ghcr.io".into(), "app".into())
        );
    }

    #[test]
    fn bearer_challenges_parse() {
        let p = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull""#,
        );
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1], ("service".into(), "registry".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull".into()));
    }
}
