//! `http_redirect` listeners: plain HTTP that answers ACME HTTP-01 challenges
//! (`/.well-known/acme-challenge/TOKEN`) and sends everything else to `https://` with 308
//! (RFC 9110 §15.4.9: the method and body are kept).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, LOCATION};
use hyper::{Method, Request, Response, StatusCode};

use crate::acme::Http01Tokens;

const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// What an `http_redirect` listener answers to `request`. `https_port` tells, for the request's
/// host, the port of the TLS listener that serves it (`None`: no TLS route here has that host).
pub(crate) fn answer<B>(
    request: &Request<B>,
    tokens: &Http01Tokens,
    https_port: impl Fn(&str) -> Option<u16>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX) {
        if matches!(*request.method(), Method::GET | Method::HEAD) {
            if let Some(key_authorization) = tokens.get(token) {
                return plain(StatusCode::OK, key_authorization);
            }
        }
        return plain(StatusCode::NOT_FOUND, "no such ACME challenge\n".into());
    }
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(crate::protocol::normal_host)
        .or_else(|| request.uri().host().map(crate::protocol::normal_host));
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "a request without Host cannot be redirected to https://\n".into(),
        );
    };
    let Some(port) = https_port(&host) else {
        return plain(StatusCode::NOT_FOUND, "not found\n".into());
    };
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let authority = if port == 443 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    let location = format!("https://{authority}{path_and_query}");
    let mut response = plain(
        StatusCode::PERMANENT_REDIRECT,
        format!("moved to {location}\n"),
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
