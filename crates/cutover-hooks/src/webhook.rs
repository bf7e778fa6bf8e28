//! Push webhooks: forge detection, signature verification over the raw body, payload parsing.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The forge a delivery comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    /// Gitea and Forgejo (same payloads; Forgejo also sends the `X-Gitea-*` headers).
    Gitea,
    GitLab,
}

/// One webhook request as the server received it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// Header names and values; names are matched case-insensitively.
    pub headers: &'a [(String, String)],
    /// The raw body, byte for byte as received: the signature covers exactly these bytes.
    pub body: &'a [u8],
}

/// A verified push to a branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Push {
    /// `"github"`, `"gitea"`, `"forgejo"` or `"gitlab"`.
    pub forge: String,
    pub delivery_id: Option<String>,
    /// The branch name, from `refs/heads/<branch>`.
    pub branch: String,
    /// The pushed commit (`after`), lowercase hex.
    pub sha: String,
    /// `owner/name` (`path_with_namespace` on GitLab).
    pub repository: Option<String>,
    pub pusher: Option<String>,
}

/// What a correctly signed delivery asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Verified {
    Push(Push),
    /// GitHub's `ping` when a webhook is created.
    Ping,
    /// Signed and well-formed, but nothing to run: a tag push, a branch deletion, a non-branch ref.
    Ignored {
        event: String,
        reason: String,
    },
}

/// Why a delivery was refused. Messages never contain the secret nor the expected signature.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error(
        "not a webhook from GitHub, Gitea, Forgejo or GitLab: no X-GitHub-Event, X-Gitea-Event, \
         X-Forgejo-Event or X-Gitlab-Event header"
    )]
    UnknownForge,
    #[error(
        "the delivery is not signed (expected X-Hub-Signature-256, X-Gitea-Signature, \
         X-Forgejo-Signature or X-Gitlab-Token); set the webhook secret in the forge"
    )]
    MissingSignature,
    #[error("the delivery's signature does not match the webhook secret")]
    BadSignature,
    #[error("malformed webhook payload: {0}")]
    Malformed(String),
    #[error("unsupported webhook event `{0}`: only push events (and GitHub's ping) are handled")]
    UnknownEvent(String),
}

impl WebhookError {
    /// The HTTP status the endpoint answers with.
    pub fn status(&self) -> u16 {
        match self {
            WebhookError::MissingSignature | WebhookError::BadSignature => 401,
            WebhookError::UnknownForge
            | WebhookError::Malformed(_)
            | WebhookError::UnknownEvent(_) => 400,
        }
    }
}

/// Detects the forge from its headers, checks the signature over the RAW body in constant time,
/// then parses.
///
/// The signature is checked before anything else is looked at (the event type included), so an
/// unsigned or wrongly signed request learns nothing but 401. An empty `secret` never verifies.
///
/// - GitHub: `X-GitHub-Event`, `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`,
///   `X-GitHub-Delivery`.
/// - Gitea/Forgejo: `X-Gitea-Event` / `X-Forgejo-Event`, `X-Gitea-Signature` /
///   `X-Forgejo-Signature: <hex HMAC-SHA256>`, `X-Gitea-Delivery` / `X-Forgejo-Delivery`.
/// - GitLab: `X-Gitlab-Event: Push Hook`, `X-Gitlab-Token: <secret>`, `X-Gitlab-Event-UUID`
///   (or `Idempotency-Key`).
pub fn verify(delivery: &Delivery, secret: &[u8]) -> Result<Verified, WebhookError> {
    let detected = detect(delivery).ok_or(WebhookError::UnknownForge)?;
    check_signature(&detected, delivery.body, secret)?;
    let event = detected.event.clone();
    match detected.forge {
        Forge::GitHub => match event.as_str() {
            "ping" => Ok(Verified::Ping),
            "push" => parse_push(&detected, delivery.body),
            _ => Err(WebhookError::UnknownEvent(printable(&event))),
        },
        Forge::Gitea => match event.as_str() {
            "push" => parse_push(&detected, delivery.body),
            _ => Err(WebhookError::UnknownEvent(printable(&event))),
        },
        Forge::GitLab => match event.as_str() {
            "Push Hook" => parse_push(&detected, delivery.body),
            "Tag Push Hook" => Ok(Verified::Ignored {
                event,
                reason: "a tag push starts no pipeline".into(),
            }),
            _ => Err(WebhookError::UnknownEvent(printable(&event))),
        },
    }
}

struct Detected<'a> {
    forge: Forge,
    /// `"github"`, `"gitea"`, `"forgejo"`, `"gitlab"`.
    name: &'static str,
    event: String,
    signature: Option<&'a str>,
    delivery_id: Option<String>,
}

fn header<'a>(delivery: &Delivery<'a>, name: &str) -> Option<&'a str> {
    delivery
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn detect<'a>(d: &Delivery<'a>) -> Option<Detected<'a>> {
    let id = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| header(d, n))
            .map(|v| v.to_string())
    };
    // Order matters: Forgejo also sends X-Gitea-*, and Gitea/Forgejo also send X-GitHub-Event
    // and X-Hub-Signature-256 for compatibility.
    if let Some(event) = header(d, "x-forgejo-event") {
        return Some(Detected {
            forge: Forge::Gitea,
            name: "forgejo",
            event: event.to_string(),
            signature: header(d, "x-forgejo-signature").or_else(|| header(d, "x-gitea-signature")),
            delivery_id: id(&["x-forgejo-delivery", "x-gitea-delivery"]),
        });
    }
    if let Some(event) = header(d, "x-gitea-event") {
        return Some(Detected {
            forge: Forge::Gitea,
            name: "gitea",
            event: event.to_string(),
            signature: header(d, "x-gitea-signature"),
            delivery_id: id(&["x-gitea-delivery"]),
        });
    }
    if let Some(event) = header(d, "x-gitlab-event") {
        return Some(Detected {
            forge: Forge::GitLab,
            name: "gitlab",
            event: event.to_string(),
            signature: header(d, "x-gitlab-token"),
            delivery_id: id(&["x-gitlab-event-uuid", "idempotency-key"]),
        });
    }
    if let Some(event) = header(d, "x-github-event") {
        return Some(Detected {
            forge: Forge::GitHub,
            name: "github",
            event: event.to_string(),
            signature: header(d, "x-hub-signature-256"),
            delivery_id: id(&["x-github-delivery"]),
        });
    }
    None
}

fn check_signature(d: &Detected, body: &[u8], secret: &[u8]) -> Result<(), WebhookError> {
    let given = d.signature.ok_or(WebhookError::MissingSignature)?;
    if secret.is_empty() {
        return Err(WebhookError::BadSignature);
    }
    let ok = match d.forge {
        Forge::GitLab => {
            // Compare digests so neither the content nor the length of the secret leaks by timing.
            let a = Sha256::digest(given.as_bytes());
            let b = Sha256::digest(secret);
            bool::from(a.as_slice().ct_eq(b.as_slice()))
        }
        Forge::GitHub => match given.strip_prefix("sha256=") {
            Some(hex) => hmac_matches(secret, body, hex),
            None => false,
        },
        Forge::Gitea => hmac_matches(secret, body, given.strip_prefix("sha256=").unwrap_or(given)),
    };
    if ok {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

fn hmac_matches(secret: &[u8], body: &[u8], given_hex: &str) -> bool {
    let Ok(given) = hex::decode(given_hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    // `ct_eq` on slices of different lengths is false (the length is public anyway: 32 bytes).
    bool::from(expected.as_slice().ct_eq(given.as_slice()))
}

fn parse_push(d: &Detected, body: &[u8]) -> Result<Verified, WebhookError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| WebhookError::Malformed(format!("the body is not valid JSON ({e})")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| WebhookError::Malformed("the body is not a JSON object".into()))?;
    let git_ref = required_str(obj, "ref")?;
    let after = required_str(obj, "after")?;
    if !is_sha(after) {
        return Err(WebhookError::Malformed(format!(
            "`after` is not a commit SHA (40 or 64 hex digits): `{}`",
            printable(after)
        )));
    }
    let event = d.event.clone();
    if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        return Ok(Verified::Ignored {
            event,
            reason: format!("a tag push ({}) starts no pipeline", printable(tag)),
        });
    }
    let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
        return Ok(Verified::Ignored {
            event,
            reason: format!("`{}` is not a branch", printable(git_ref)),
        });
    };
    if branch.is_empty() {
        return Err(WebhookError::Malformed(
            "`ref` is `refs/heads/` with no branch name".into(),
        ));
    }
    if after.bytes().all(|b| b == b'0') {
        return Ok(Verified::Ignored {
            event,
            reason: format!("branch {} was deleted", printable(branch)),
        });
    }
    let (repository, pusher) = match d.forge {
        Forge::GitLab => (
            nested_str(obj, "project", &["path_with_namespace"]),
            optional_str(obj, "user_username"),
        ),
        Forge::GitHub => (
            nested_str(obj, "repository", &["full_name"]),
            nested_str(obj, "pusher", &["name"]),
        ),
        Forge::Gitea => (
            nested_str(obj, "repository", &["full_name"]),
            nested_str(obj, "pusher", &["login", "username", "name"]),
        ),
    };
    Ok(Verified::Push(Push {
        forge: d.name.to_string(),
        delivery_id: d.delivery_id.clone(),
        branch: branch.to_string(),
        sha: after.to_ascii_lowercase(),
        repository,
        pusher,
    }))
}

fn required_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, WebhookError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(WebhookError::Malformed(format!("`{field}` is missing"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(WebhookError::Malformed(format!(
            "`{field}` is not a string"
        ))),
    }
}

fn optional_str(obj: &Map<String, Value>, field: &str) -> Option<String> {
    obj.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn nested_str(obj: &Map<String, Value>, parent: &str, fields: &[&str]) -> Option<String> {
    let inner = obj.get(parent)?.as_object()?;
    fields.iter().find_map(|f| optional_str(inner, f))
}

fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Request-supplied text echoed in an error or reason: bounded, without control characters.
fn printable(s: &str) -> String {
    const MAX: usize = 100;
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        assert_eq!(WebhookError::UnknownForge.status(), 400);
        assert_eq!(WebhookError::MissingSignature.status(), 401);
        assert_eq!(WebhookError::BadSignature.status(), 401);
        assert_eq!(WebhookError::Malformed("x".into()).status(), 400);
        assert_eq!(WebhookError::UnknownEvent("x".into()).status(), 400);
    }

    #[test]
    fn sha_shapes() {
        assert!(is_sha(&"a".repeat(40)));
        assert!(is_sha(&"A".repeat(64)));
        assert!(!is_sha(&"a".repeat(39)));
        assert!(!is_sha(&"g".repeat(40)));
    }

    #[test]
    fn printable_bounds_and_strips_controls() {
        assert_eq!(printable("a\nb"), "a?b");
        assert_eq!(printable(&"x".repeat(300)).chars().count(), 101);
    }
}
