//! Image artifacts: build, push, pull by digest, list, remove.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, ListImagesOptionsBuilder,
    PushImageOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::registry::split_repository;
use crate::{engine_message, status_of, Credentials, DockerError, Engine, RegistryAccess};

/// How many lines of build output a [`DockerError::BuildFailed`] carries.
const BUILD_TAIL: usize = 20;

/// What to build: the context directory, the Dockerfile in it, and the tags to give the image.
#[derive(Debug, Clone)]
pub struct BuildSpec<'a> {
    pub context_dir: &'a Path,
    /// Relative to `context_dir`.
    pub dockerfile: &'a str,
    /// Full references, e.g. `127.0.0.1:5000/tasks-app:<sha>`, `…:latest`. At least one.
    pub tags: Vec<String>,
}

/// A local image, as `cutover prune` and `status` need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    /// `sha256:…` (the local image id, i.e. the config digest).
    pub id: String,
    /// `repo:tag` references.
    pub tags: Vec<String>,
    /// `repo@sha256:…` references (registry manifest digests).
    pub digests: Vec<String>,
    pub created: DateTime<Utc>,
    pub size: i64,
}

/// Builds an image from a tar of `spec.context_dir` (without `.git`, `.cutover` and what
/// `.dockerignore` excludes), streaming the build's output lines to `on_line`; returns the
/// image id (`sha256:…`).
pub async fn build_image(
    engine: &Engine,
    spec: BuildSpec<'_>,
    on_line: &mut (dyn FnMut(String) + Send),
) -> Result<String, DockerError> {
    let Some(first) = spec.tags.first() else {
        return Err(DockerError::InvalidReference {
            reference: String::new(),
            detail: "a build needs at least one tag".into(),
        });
    };
    for tag in &spec.tags {
        check_reference(tag)?;
    }
    let context_dir = spec.context_dir.to_path_buf();
    let dockerfile = spec.dockerfile.to_string();
    let tar = tokio::task::spawn_blocking(move || crate::context::pack(&context_dir, &dockerfile))
        .await
        .map_err(|e| DockerError::Context {
            path: spec.context_dir.display().to_string(),
            detail: e.to_string(),
        })??;

    let options = BuildImageOptionsBuilder::default()
        .dockerfile(spec.dockerfile)
        .t(first)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = engine.docker.build_image(
        options,
        None,
        Some(bollard::body_full(bytes::Bytes::from(tar))),
    );
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut push_line = |line: String, tail: &mut VecDeque<String>| {
        if tail.len() == BUILD_TAIL {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        on_line(line);
    };
    let mut built_id: Option<String> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                    for line in text.lines() {
                        let line = line.trim_end();
                        if !line.is_empty() {
                            push_line(line.to_string(), &mut tail);
                        }
                    }
                }
                if let Some(aux) = info.aux.as_ref().and_then(|a| a.id.clone()) {
                    built_id = Some(aux);
                }
            }
            Err(e) => {
                let message = engine_message(&e);
                if matches!(e, bollard::errors::Error::DockerStreamError { .. }) {
                    return Err(DockerError::BuildFailed {
                        message,
                        output: tail.into_iter().collect(),
                    });
                }
                return Err(DockerError::BuildFailed {
                    message: format!(
                        "the engine at {} failed the build: {message}",
                        engine.endpoint
                    ),
                    output: tail.into_iter().collect(),
                });
            }
        }
    }
    let id = match built_id {
        Some(id) if id.starts_with("sha256:") => id,
        _ => {
            let inspect =
                engine.docker.inspect_image(first).await.map_err(|e| {
                    DockerError::api(format!("inspecting the built image {first}"), e)
                })?;
            inspect.id.ok_or_else(|| DockerError::Api {
                context: format!("inspecting the built image {first}"),
                detail: "the engine returned no image id".into(),
            })?
        }
    };
    for tag in spec.tags.iter().skip(1) {
        let (repo, t) = split_tag(tag);
        let options = TagImageOptionsBuilder::default().repo(repo).tag(t).build();
        engine
            .docker
            .tag_image(&id, Some(options))
            .await
            .map_err(|e| DockerError::api(format!("tagging {id} as {tag}"), e))?;
    }
    Ok(id)
}

/// Pushes `repo:tag` (`repo` includes the registry host) and returns the manifest digest the
/// registry now has for it (`sha256:…`).
pub async fn push(
    engine: &Engine,
    repo: &str,
    tag: &str,
    creds: Option<&Credentials>,
    access: &RegistryAccess,
    on_line: &mut (dyn FnMut(String) + Send),
) -> Result<String, DockerError> {
    let reference = format!("{repo}:{tag}");
    check_reference(&reference)?;
    let (registry, name) = split_repository(repo);
    let options = PushImageOptionsBuilder::default().tag(tag).build();
    let mut stream =
        engine
            .docker
            .push_image(repo, Some(options), docker_credentials(creds, &registry));
    let mut digest: Option<String> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(status) = info.status {
                    if let Some(d) = digest_in_status(&status) {
                        digest = Some(d);
                    }
                    on_line(status);
                }
            }
            Err(e) => {
                let status = status_of(&e);
                let message = engine_message(&e);
                if status == Some(404) || message.contains("does not exist locally") {
                    return Err(DockerError::NotFound {
                        reference,
                        detail: format!("{message} (build it first)"),
                    });
                }
                return Err(with_user(
                    classify_registry_error(&registry, &reference, message),
                    creds,
                ));
            }
        }
    }
    if let Some(d) = digest {
        return Ok(d);
    }
    // Engines that do not print the digest (some Podman versions): ask the registry.
    match crate::registry::registry_digest(&registry, &name, tag, creds, access).await? {
        Some(d) => Ok(d),
        None => Err(DockerError::Registry {
            registry,
            detail: format!("the push of {reference} ended but the registry does not know the tag"),
        }),
    }
}

/// Pulls `repo@digest` (never a tag).
pub async fn pull_digest(
    engine: &Engine,
    repo: &str,
    digest: &str,
    creds: Option<&Credentials>,
) -> Result<(), DockerError> {
    let reference = format!("{repo}@{digest}");
    if !is_digest(digest) {
        return Err(DockerError::InvalidReference {
            reference,
            detail: "a pull needs a digest `sha256:<64 hex digits>`, never a tag".into(),
        });
    }
    check_reference(repo)?;
    let (registry, _) = split_repository(repo);
    let options = CreateImageOptionsBuilder::default()
        .from_image(repo)
        .tag(digest)
        .build();
    let mut stream =
        engine
            .docker
            .create_image(Some(options), None, docker_credentials(creds, &registry));
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            return Err(with_user(
                classify_registry_error(&registry, &reference, engine_message(&e)),
                creds,
            ));
        }
    }
    if !image_exists(engine, &reference).await? {
        return Err(DockerError::NotFound {
            reference,
            detail: "the pull ended but the engine does not have the image".into(),
        });
    }
    Ok(())
}

/// Whether the engine has `reference` (`repo:tag`, `repo@digest` or an image id) locally.
pub async fn image_exists(engine: &Engine, reference: &str) -> Result<bool, DockerError> {
    match engine.docker.inspect_image(reference).await {
        Ok(_) => Ok(true),
        Err(e) if status_of(&e) == Some(404) => Ok(false),
        Err(e) => Err(DockerError::api(format!("inspecting image {reference}"), e)),
    }
}

/// Removes `reference` from the engine (a tag only untags if the image has others). An image
/// the engine does not have is not an error; one a container uses is.
pub async fn remove_image(engine: &Engine, reference: &str) -> Result<(), DockerError> {
    let options = RemoveImageOptionsBuilder::default().build();
    match engine
        .docker
        .remove_image(reference, Some(options), None)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => Ok(()),
        Err(e) => Err(DockerError::api(format!("removing image {reference}"), e)),
    }
}

/// The local images of `repo` (by tag or by digest), newest first.
pub async fn list_images(engine: &Engine, repo: &str) -> Result<Vec<ImageSummary>, DockerError> {
    let mut filters = HashMap::new();
    filters.insert("reference", vec![repo]);
    let options = ListImagesOptionsBuilder::default()
        .filters(&filters)
        .digests(true)
        .build();
    let images = engine
        .docker
        .list_images(Some(options))
        .await
        .map_err(|e| DockerError::api(format!("listing images of {repo}"), e))?;
    let mut out: Vec<ImageSummary> = images
        .into_iter()
        .map(|i| ImageSummary {
            id: i.id,
            tags: i
                .repo_tags
                .into_iter()
                .filter(|t| t != "<none>:<none>")
                .collect(),
            digests: i
                .repo_digests
                .into_iter()
                .filter(|d| !d.starts_with("<none>@"))
                .collect(),
            created: DateTime::from_timestamp(i.created, 0).unwrap_or_default(),
            size: i.size,
        })
        .collect();
    out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    Ok(out)
}

fn docker_credentials(creds: Option<&Credentials>, registry: &str) -> Option<DockerCredentials> {
    creds.map(|c| DockerCredentials {
        username: Some(c.username.clone()),
        password: Some(c.password.clone()),
        serveraddress: Some(registry.to_string()),
        ..Default::default()
    })
}

/// An auth refusal says who was refused (never with what password).
fn with_user(e: DockerError, creds: Option<&Credentials>) -> DockerError {
    match e {
        DockerError::AuthRefused { registry, detail } => DockerError::AuthRefused {
            registry,
            detail: match creds {
                Some(c) => format!("{detail} (as user {})", c.username),
                None => format!("{detail} (without a login)"),
            },
        },
        other => other,
    }
}

/// Sorts an engine's push/pull error into TLS / unreachable / auth / not found.
fn classify_registry_error(registry: &str, reference: &str, message: String) -> DockerError {
    let m = message.to_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    // An HTTP status only as a number of its own: "401" is also in a port (127.0.0.1:40101)
    // or a digest, which must not make a missing manifest look like refused credentials.
    let status = |codes: &[&str]| codes.iter().any(|code| has_status(&m, code));
    if any(&["x509:", "certificate", "tls: "]) {
        DockerError::RegistryTls {
            registry: registry.to_string(),
            detail: format!(
                "the container engine does not trust it: {message} (the engine trusts a \
                 registry's CA from /etc/docker/certs.d/{registry}/ca.crt)"
            ),
        }
    } else if any(&[
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
        "forbidden",
    ]) || status(&["401", "403"])
    {
        DockerError::AuthRefused {
            registry: registry.to_string(),
            detail: message,
        }
    } else if any(&[
        "connection refused",
        "no such host",
        "dial tcp",
        "i/o timeout",
        "timeout",
        "network is unreachable",
        "server gave http response to https client",
        "connection reset",
        "eof",
    ]) {
        DockerError::RegistryUnreachable {
            registry: registry.to_string(),
            detail: message,
        }
    } else if any(&[
        "manifest unknown",
        "not found",
        "does not exist",
        "unknown blob",
    ]) {
        DockerError::NotFound {
            reference: reference.to_string(),
            detail: message,
        }
    } else if any(&["method not allowed", "read-only", "readonly"]) || status(&["405"]) {
        DockerError::Registry {
            registry: registry.to_string(),
            detail: format!(
                "it refused {reference} ({message})\n  hint: the registry does not accept pushes \
                 (read-only or maintenance mode, or a mirror); publish to a registry that does"
            ),
        }
    } else {
        DockerError::Registry {
            registry: registry.to_string(),
            detail: format!("{reference}: {message}"),
        }
    }
}

/// Whether `code` stands in `message` as a number of its own (`HTTP 401`, `status 401`), not
/// inside a longer one, a port (`:401…`), an address or a hex digest.
fn has_status(message: &str, code: &str) -> bool {
    message.match_indices(code).any(|(at, _)| {
        let before = message[..at].chars().next_back();
        let after = message[at + code.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == ':' || c == '.')
            && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.')
    })
}

/// `latest: digest: sha256:… size: 528` → `sha256:…`.
fn digest_in_status(status: &str) -> Option<String> {
    let rest = status.split("digest: ").nth(1)?;
    let digest = rest.split_whitespace().next()?;
    is_digest(digest).then(|| digest.to_string())
}

pub(crate) fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `host:5000/name:tag` → (`host:5000/name`, `tag`); no tag → `latest`.
fn split_tag(reference: &str) -> (&str, &str) {
    let slash = reference.rfind('/').map(|i| i + 1).unwrap_or(0);
    match reference[slash..].rfind(':') {
        Some(i) => (&reference[..slash + i], &reference[slash + i + 1..]),
        None => (reference, "latest"),
    }
}

/// Rejects references the engine would misread (spaces, upper case in the path, empty parts).
fn check_reference(reference: &str) -> Result<(), DockerError> {
    let bad = |detail: &str| {
        Err(DockerError::InvalidReference {
            reference: reference.to_string(),
            detail: detail.to_string(),
        })
    };
    if reference.is_empty() {
        return bad("is empty");
    }
    if reference
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return bad("contains whitespace");
    }
    let (path, _) = split_tag(reference.split('@').next().unwrap_or(reference));
    let (registry, name) = split_repository(path);
    if name.is_empty() || name.split('/').any(str::is_empty) {
        return bad("has an empty name component");
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return bad("repository names must be lower case");
    }
    let _ = registry;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_read_from_the_push_status() {
        let d = "sha256:".to_string() + &"ab".repeat(32);
        assert_eq!(
            digest_in_status(&format!("abc123: digest: {d} size: 528")),
            Some(d)
        );
        assert_eq!(digest_in_status("Pushed"), None);
    }

    #[test]
    fn tags_split_after_the_registry_port() {
        assert_eq!(
            split_tag("127.0.0.1:5000/app:v1"),
            ("127.0.0.1:5000/app", "v1")
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/app"),
            ("127.0.0.1:5000/app", "latest")
        );
        assert_eq!(split_tag("app:v1"), ("app", "v1"));
    }

    #[test]
    fn references_are_checked() {
        assert!(check_reference("127.0.0.1:5000/tasks-app:abc").is_ok());
        assert!(check_reference("127.0.0.1:5000/Tasks:abc").is_err());
        assert!(check_reference("a b").is_err());
        assert!(check_reference("").is_err());
    }

    #[test]
    fn registry_errors_are_sorted() {
        let e = classify_registry_error(
            "127.0.0.1:1",
            "x",
            "Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused"
                .into(),
        );
        assert!(matches!(e, DockerError::RegistryUnreachable { .. }), "{e}");
        let e = classify_registry_error("r", "x", "manifest unknown: manifest unknown".into());
        assert!(matches!(e, DockerError::NotFound { .. }), "{e}");
        let e = classify_registry_error("r", "x", "unauthorized: authentication required".into());
        assert!(matches!(e, DockerError::AuthRefused { .. }), "{e}");
        // A missing manifest on a registry whose port, or a digest, has "401" in it (seen in
        // CI with a registry on :40101): not found, not refused credentials.
        for missing in [
            "manifest for 127.0.0.1:40101/app@sha256:0000 not found: manifest unknown: manifest unknown (HTTP 404)",
            "manifest for r/app@sha256:ab401cd not found: manifest unknown",
            "manifest for 127.0.0.1:401/app@sha256:00 not found: manifest unknown",
        ] {
            let e = classify_registry_error("r", "x", missing.into());
            assert!(matches!(e, DockerError::NotFound { .. }), "{missing}: {e}");
        }
        let e = classify_registry_error("r", "x", "failed to authorize (HTTP 401)".into());
        assert!(matches!(e, DockerError::AuthRefused { .. }), "{e}");
        let e = classify_registry_error("r:4050", "x", "unexpected status 405".into());
        assert!(matches!(e, DockerError::Registry { .. }), "{e}");
        assert!(e.to_string().contains("does not accept pushes"), "{e}");
        let e = classify_registry_error(
            "127.0.0.1:14050",
            "x",
            "blob upload unknown at 127.0.0.1:14050".into(),
        );
        assert!(!e.to_string().contains("does not accept pushes"), "{e}");
    }
}
