//! Forwarding one client request to the upstream the route table names at request time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::routes::{InflightGuard, Routes};

pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;
type UpstreamClient = Client<HttpConnector, ProxyBody>;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

pub(crate) struct Forwarder {
    env: String,
    routes: Arc<Routes>,
    /// Keeps connections to upstreams alive between requests.
    pooled: UpstreamClient,
    /// Always opens a fresh connection: used for the one retry, so that it cannot land on
    /// another stale pooled connection.
    fresh: UpstreamClient,
}

fn connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(2)));
    http
}

impl Forwarder {
    pub fn new(env: String, routes: Arc<Routes>) -> Forwarder {
        let pooled = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector());
        let fresh = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector());
        Forwarder {
            env,
            routes,
            pooled,
            fresh,
        }
    }

    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let (mut parts, body) = request.into_parts();
        // Without a body the request can be rebuilt, so it can be sent a second time.
        let retryable = is_idempotent(&parts.method) && body.is_end_stream();
        prepare_request_headers(&mut parts.headers, peer);

        let Some(guard) = self.routes.pick(None) else {
            return Ok(text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no version of the app is live in {}\n", self.env),
            ));
        };
        let body = if retryable {
            empty()
        } else {
            body.boxed_unsync()
        };
        let first = self.send(&self.pooled, &parts, guard.addr, body).await;
        let (error, addr) = match first {
            Ok(response) => return Ok(relay(response, guard)),
            Err(_) if retryable => {
                let failed = guard.addr;
                drop(guard);
                let Some(guard) = self.routes.pick(Some(failed)) else {
                    return Ok(text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("no version of the app is live in {}\n", self.env),
                    ));
                };
                match self.send(&self.fresh, &parts, guard.addr, empty()).await {
                    Ok(response) => return Ok(relay(response, guard)),
                    Err(error) => (error, guard.addr),
                }
            }
            Err(error) => (error, guard.addr),
        };
        match error {
            SendError::BadTarget => Ok(text(
                StatusCode::BAD_REQUEST,
                "bad request target\n".to_string(),
            )),
            SendError::Upstream(e) => {
                let cause = root_cause(&e);
                eprintln!(
                    "edge proxy for {}: {} {} to {addr} failed: {cause}",
                    self.env,
                    parts.method,
                    parts.uri.path()
                );
                Ok(text(
                    StatusCode::BAD_GATEWAY,
                    format!("bad gateway: the app at {addr} did not answer: {cause}\n"),
                ))
            }
        }
    }

    async fn send(
        &self,
        client: &UpstreamClient,
        parts: &Parts,
        addr: SocketAddr,
        body: ProxyBody,
    ) -> Result<Response<Incoming>, SendError> {
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| p.starts_with('/'))
            .unwrap_or("/");
        let uri = Uri::builder()
            .scheme("http")
            .authority(addr.to_string())
            .path_and_query(path)
            .build()
            .map_err(|_| SendError::BadTarget)?;
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = parts.headers.clone();
        client.request(request).await.map_err(SendError::Upstream)
    }
}

enum SendError {
    BadTarget,
    Upstream(hyper_util::client::legacy::Error),
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The innermost error, e.g. "Connection refused (os error 111)".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    // An upgrade is not proxied: without it the request is an ordinary one.
    headers.remove(header::UPGRADE);
}

fn prepare_request_headers(headers: &mut HeaderMap, peer: SocketAddr) {
    strip_hop_by_hop(headers);
    let client_ip = peer.ip().to_canonical().to_string();
    let previous: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded_for = if previous.is_empty() {
        client_ip
    } else {
        format!("{}, {client_ip}", previous.join(", "))
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

fn relay(response: Response<Incoming>, guard: InflightGuard) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = TrackedBody {
        inner: body,
        guard: Some(guard),
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// A response body streamed from the upstream; the request counts as in flight until the body
/// has been sent in full or dropped.
struct TrackedBody {
    inner: Incoming,
    guard: Option<InflightGuard>,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = polled {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_forwarded_headers_come() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.test"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        headers.insert("x-app", HeaderValue::from_static("kept"));
        prepare_request_headers(&mut headers, SocketAddr::from(([127, 0, 0, 1], 5000)));
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get("x-secret").is_none());
        assert!(headers.get("keep-alive").is_none());
        assert_eq!(headers["x-app"], "kept");
        assert_eq!(headers[X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(headers[X_FORWARDED_PROTO], "http");
        assert_eq!(headers[X_FORWARDED_HOST], "example.test");
    }
}
