//! Talking to an OCI registry directly (distribution API v2), for what the engine API does not
//! tell: which digest a tag points at *now*.
//!
//! Plain HTTP (`http://`): what a registry on 127.0.0.1 speaks, and what Docker allows without
//! TLS. A `https://` registry URL is refused with a clear error (no TLS stack in this crate yet).

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::{Credentials, DockerError};

const TIMEOUT: Duration = Duration::from_secs(15);

/// The manifest media types we accept: a tag's digest is the digest of whichever of these the
/// registry stores, which is the one `docker push` reported.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

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

/// Asks the registry which manifest digest `name:tag` points at now (`HEAD
/// /v2/<name>/manifests/<tag>`). `None`: the registry does not know the tag (or the name).
pub async fn registry_digest(
    registry: &str,
    name: &str,
    tag: &str,
    creds: Option<&Credentials>,
) -> Result<Option<String>, DockerError> {
    let (base, host) = base_url(registry)?;
    let url = format!("{base}/v2/{name}/manifests/{tag}");
    let client: Client<_, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let unreachable = |detail: String| DockerError::RegistryUnreachable {
        registry: host.clone(),
        detail,
    };
    let send = |auth: Option<String>| {
        let mut req = Request::builder()
            .method(Method::HEAD)
            .uri(&url)
            .header(ACCEPT, MANIFEST_ACCEPT);
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        let req = req.body(Empty::<Bytes>::new());
        let client = client.clone();
        async move {
            let req = req.map_err(|e| e.to_string())?;
            match tokio::time::timeout(TIMEOUT, client.request(req)).await {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(e)) => Err(format!("{e} ({})", source_chain(&e))),
                Err(_) => Err(format!("no answer within {}s", TIMEOUT.as_secs())),
            }
        }
    };

    let mut resp = send(None).await.map_err(unreachable)?;
    if resp.status() == StatusCode::UNAUTHORIZED {
        let Some(c) = creds else {
            return Err(DockerError::AuthRefused {
                registry: host.clone(),
                detail: format!("HEAD {url} needs credentials (HTTP 401)"),
            });
        };
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let auth = if challenge.to_lowercase().starts_with("bearer") {
            format!(
                "Bearer {}",
                bearer_token(&client, &host, &challenge, c).await?
            )
        } else {
            basic(c)
        };
        resp = send(Some(auth)).await.map_err(unreachable)?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(DockerError::AuthRefused {
                registry: host.clone(),
                detail: format!(
                    "HEAD {url} refused the credentials of user {} (HTTP {})",
                    c.username,
                    resp.status().as_u16()
                ),
            });
        }
    }
    match resp.status() {
        StatusCode::OK => {
            let digest = resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match digest {
                Some(d) => Ok(Some(d)),
                None => Err(DockerError::Registry {
                    registry: host,
                    detail: format!("HEAD {url} answered without a Docker-Content-Digest header"),
                }),
            }
        }
        StatusCode::NOT_FOUND => Ok(None),
        StatusCode::FORBIDDEN => Err(DockerError::AuthRefused {
            registry: host,
            detail: format!("HEAD {url}: HTTP 403"),
        }),
        s => Err(DockerError::Registry {
            registry: host,
            detail: format!("HEAD {url}: unexpected HTTP {}", s.as_u16()),
        }),
    }
}

/// (`http://host:port`, `host:port`) for a registry given as `host:port` or `http://host:port`.
fn base_url(registry: &str) -> Result<(String, String), DockerError> {
    let registry = registry.trim().trim_end_matches('/');
    if let Some(rest) = registry.strip_prefix("https://") {
        return Err(DockerError::Registry {
            registry: rest.to_string(),
            detail: "HTTPS registries are not supported by cutover's digest check yet \
                     (a registry on 127.0.0.1 speaks plain HTTP)"
                .into(),
        });
    }
    let host = registry.strip_prefix("http://").unwrap_or(registry);
    if host.is_empty() || host.contains('/') {
        return Err(DockerError::InvalidReference {
            reference: registry.to_string(),
            detail: "a registry is `host:port`".into(),
        });
    }
    Ok((format!("http://{host}"), host.to_string()))
}

fn basic(c: &Credentials) -> String {
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// The token flow of `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`.
async fn bearer_token<C>(
    client: &Client<C, Empty<Bytes>>,
    registry: &str,
    challenge: &str,
    creds: &Credentials,
) -> Result<String, DockerError>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let params = parse_challenge(challenge);
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let Some(realm) = get("realm") else {
        return Err(DockerError::AuthRefused {
            registry: registry.to_string(),
            detail: format!("bearer challenge without a realm: {challenge}"),
        });
    };
    let mut query = Vec::new();
    for key in ["service", "scope"] {
        if let Some(v) = get(key) {
            query.push(format!("{key}={}", encode(v)));
        }
    }
    let url = if query.is_empty() {
        realm.to_string()
    } else {
        format!("{realm}?{}", query.join("&"))
    };
    let req = Request::builder()
        .uri(&url)
        .header(
            AUTHORIZATION,
            HeaderValue::from_str(&basic(creds)).unwrap_or(HeaderValue::from_static("")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| DockerError::Registry {
            registry: registry.to_string(),
            detail: e.to_string(),
        })?;
    let resp = match tokio::time::timeout(TIMEOUT, client.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return Err(DockerError::RegistryUnreachable {
                registry: registry.to_string(),
                detail: format!("token service {realm}: {e}"),
            })
        }
        Err(_) => {
            return Err(DockerError::RegistryUnreachable {
                registry: registry.to_string(),
                detail: format!("token service {realm}: no answer"),
            })
        }
    };
    if !resp.status().is_success() {
        return Err(DockerError::AuthRefused {
            registry: registry.to_string(),
            detail: format!(
                "token service {realm} refused user {} (HTTP {})",
                creds.username,
                resp.status().as_u16()
            ),
        });
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| DockerError::RegistryUnreachable {
            registry: registry.to_string(),
            detail: e.to_string(),
        })?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    v.get("token")
        .or_else(|| v.get("access_token"))
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .ok_or_else(|| DockerError::AuthRefused {
            registry: registry.to_string(),
            detail: format!("token service {realm} answered without a token"),
        })
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

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
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
    fn bearer_challenges_parse() {
        let p = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull""#,
        );
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1], ("service".into(), "registry".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull".into()));
    }

    #[test]
    fn https_is_refused_clearly() {
        let e = base_url("https://r.example").unwrap_err().to_string();
        assert!(e.contains("HTTPS registries are not supported"), "{e}");
        assert_eq!(
            base_url("127.0.0.1:5000").unwrap(),
            ("http://127.0.0.1:5000".into(), "127.0.0.1:5000".into())
        );
    }
}
