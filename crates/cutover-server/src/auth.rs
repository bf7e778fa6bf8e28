//! Who may do what over HTTP from other machines: every call on the HTTPS listener (and the
//! approval routes of the webhook listener) carries `Authorization: Bearer <token>`, and the
//! token's role must allow the route. The person the ledger records is the token's owner:
//! the `by` and `requested_by` of a JSON body are replaced by it. Every refused call is
//! recorded in the ledger and the server's log. The unix socket needs none of this: it is the
//! local user's, guarded by file permissions.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cutover_api::{Refusal, Role};

use crate::ServerEngine;

/// Whose token a call carried (a request extension, once `require_role` let it through).
#[derive(Debug, Clone)]
pub struct Caller(pub String, pub Role);

/// The most a JSON body may weigh on a listener other machines reach.
pub const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// The role a route needs.
pub fn needed(method: &Method, path: &str) -> Role {
    let admin = path.starts_with("/v1/tokens")
        || path == "/v1/refusals"
        || path == "/v1/prune"
        || path == "/v1/down"
        || path == "/v1/server/stop";
    if admin {
        Role::Admin
    } else if method == Method::GET || method == Method::HEAD {
        Role::Read
    } else {
        Role::Deploy
    }
}

/// The token's owner, if the request carries a valid token whose role allows the route;
/// otherwise the refusal to send (recorded).
pub async fn require_role(
    State(engine): State<ServerEngine>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let needed = needed(&method, &path);
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let refuse = |status: StatusCode, who: Option<String>, message: String, hint: &str| {
        let _ = engine.with_ledger(|l| {
            l.record_refusal(&cutover_ledger::Refusal {
                at: None,
                token_name: who.clone(),
                method: method.to_string(),
                path: path.clone(),
                status: status.as_u16(),
                reason: message.clone(),
            })
        });
        eprintln!(
            "https: refused {method} {path} ({}): {message}",
            who.as_deref().unwrap_or("no valid token")
        );
        (status, Json(Refusal::new(message, Some(hint.to_string())))).into_response()
    };
    let Some(token) = token else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            None,
            "no API token".into(),
            "send `Authorization: Bearer <token>`; an admin issues one with `cutover token create NAME --role ROLE` on the server",
        );
    };
    let owner = engine.with_ledger(|l| l.token_owner(&token)).ok().flatten();
    let Some((name, role)) = owner else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            None,
            "the API token is not valid (unknown, or revoked)".into(),
            "ask an admin of the server for a new token (`cutover token create NAME`)",
        );
    };
    let role = Role::parse(&role).unwrap_or(Role::Read);
    if role < needed {
        return refuse(
            StatusCode::FORBIDDEN,
            Some(name.clone()),
            format!("{name}'s token has the role {role}; {method} {path} needs {needed}"),
            "ask an admin of the server for a token with that role (`cutover token create NAME --role ROLE`)",
        );
    }
    match as_person(request, &name).await {
        Ok(mut request) => {
            request.extensions_mut().insert(Caller(name, role));
            next.run(request).await
        }
        Err(response) => response,
    }
}

/// The request with the `by` and `requested_by` of its JSON body set to `name`.
async fn as_person(request: Request, name: &str) -> Result<Request, Response> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(Refusal::new(
                format!("the request body is over {} MiB", BODY_LIMIT >> 20),
                None,
            )),
        )
            .into_response()
    })?;
    let bytes = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut map)) => {
            for key in ["by", "requested_by"] {
                if map.contains_key(key) {
                    map.insert(key.into(), serde_json::Value::String(name.to_string()));
                }
            }
            Bytes::from(serde_json::to_vec(&map).unwrap_or_default())
        }
        // Not an object: the route's own parser says what is wrong.
        _ => bytes,
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_the_role_the_issue_names() {
        assert_eq!(needed(&Method::GET, "/v1/status"), Role::Read);
        assert_eq!(needed(&Method::GET, "/v1/logs/staging"), Role::Read);
        assert_eq!(needed(&Method::POST, "/v1/deploy"), Role::Deploy);
        assert_eq!(needed(&Method::POST, "/v1/approve"), Role::Deploy);
        assert_eq!(needed(&Method::POST, "/v1/freeze"), Role::Deploy);
        assert_eq!(needed(&Method::GET, "/v1/tokens"), Role::Admin);
        assert_eq!(needed(&Method::POST, "/v1/tokens/revoke"), Role::Admin);
        assert_eq!(needed(&Method::POST, "/v1/prune"), Role::Admin);
        assert_eq!(needed(&Method::POST, "/v1/down"), Role::Admin);
        assert_eq!(needed(&Method::POST, "/v1/server/stop"), Role::Admin);
        assert!(Role::Admin > Role::Deploy && Role::Deploy > Role::Read);
    }
}
