//! Forwarding one client request to the upstream the route table names at request time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{self, PathAndQuery, Scheme};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use tokio::sync::{mpsc, watch};

use crate::access::AccessLog;
use crate::protocol::Hold;
use crate::routes::{now_ms, InflightGuard, Miss, RouteInfo, Routes};
use crate::ConnInfo;

/// What is sent upstream: nothing (a request without a body, which can be sent again) or the
/// client's body streamed through. No boxing per request.
type UpstreamBody = Either<Empty<Bytes>, ClientBody>;
type UpstreamClient = Client<HttpConnector, UpstreamBody>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
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
    routes: Arc<Routes>,
    /// Listener kinds and certificates (which listener is TLS, which redirects).
    https: Arc<crate::https::Https>,
    /// Keeps connections to upstreams alive between requests.
    pooled: UpstreamClient,
    /// Always opens a fresh connection: used for the one retry, so that it cannot land on
    /// another stale pooled connection.
    fresh: UpstreamClient,
    /// Tells tunnels (upgraded connections) that the edge is stopping.
    shutdown: watch::Receiver<bool>,
}

fn connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http
}

impl Forwarder {
    pub fn new(
        routes: Arc<Routes>,
        https: Arc<crate::https::Https>,
        shutdown: watch::Receiver<bool>,
    ) -> Forwarder {
        let pooled = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector());
        let fresh = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector());
        Forwarder {
            routes,
            https,
            pooled,
            fresh,
            shutdown,
        }
    }

    pub fn https(&self) -> &crate::https::Https {
        &self.https
    }

    /// Where answers no route takes are recorded.
    pub fn default_log(&self) -> &Arc<AccessLog> {
        self.routes.default_log()
    }

    /// The limits a new client connection on `listen` starts with.
    pub fn connection_limits(&self, listen: SocketAddr) -> crate::protocol::Limits {
        self.routes.connection_limits(listen)
    }

    /// Answers one request of a connection that came in on `info.listen`: to the upstream of
    /// the route its address and `Host` select. `client_ip` is the client's address as a header
    /// value, made once per connection; `alive` keeps the edge's shutdown waiting for the
    /// tunnel an upgrade opens.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        info: &ConnInfo,
        client_ip: &HeaderValue,
        alive: &mpsc::Sender<()>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let mut response = self.answer(request, info, client_ip, alive).await?;
        if info.tls {
            strict_transport_security(&mut response);
        }
        Ok(response)
    }

    async fn answer(
        &self,
        mut request: Request<Incoming>,
        info: &ConnInfo,
        client_ip: &HeaderValue,
        alive: &mpsc::Sender<()>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        if let Some(refusal) = refuse(&request).or_else(|| misdirected(&request, info)) {
            return Ok(refusal);
        }
        // HTTP/2 names the host in `:authority`; the app (HTTP/1.1) is told it in `Host`.
        if !request.headers().contains_key(header::HOST) {
            if let Some(authority) = request.uri().authority() {
                if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                    request.headers_mut().insert(header::HOST, host);
                }
            }
        }
        if request.method() == Method::CONNECT {
            // Only an HTTP/2 extended CONNECT (RFC 8441) names a protocol to tunnel; the edge
            // is no forward proxy.
            let Some(protocol) = connect_protocol(&request) else {
                return Ok(not_a_forward_proxy());
            };
            return Ok(self
                .upgrade(request, info, Switch::Connect(protocol), client_ip, alive)
                .await);
        }
        if let Some(protocol) = upgrade_protocol(&request) {
            return Ok(self
                .upgrade(request, info, Switch::Upgrade(protocol), client_ip, alive)
                .await);
        }
        let (mut parts, body) = request.into_parts();
        // Without a body the request can be rebuilt, so it can be sent a second time: after any
        // failure before a response if it is idempotent, and after a failed connect (nothing
        // of it reached the app) whatever its method.
        let rebuildable = body.is_end_stream();
        let idempotent = is_idempotent(&parts.method);
        prepare_request_headers(&mut parts.headers, client_ip, info.tls);
        let id = request_id(&mut parts.headers);

        let guard = match self.routes.pick(info.listen, &parts, None) {
            Ok(guard) => guard,
            Err(miss) => match self.unpicked(info.listen, &parts, miss).await {
                Ok(guard) => guard,
                Err(answer) => return Ok(with_id(answer, id)),
            },
        };
        let limits = guard.limits;
        if body.size_hint().lower() > limits.max_body {
            return Ok(with_id(logged(too_large(limits.max_body), &guard), id));
        }
        let wait = Duration::from_millis(limits.upstream_timeout_ms);
        let path = path_and_query(&parts.uri);
        let (error, guard) = if rebuildable {
            let headers = parts.headers.clone();
            let first = self.send(&self.pooled, &parts.method, &path, headers, &guard, empty());
            match health(timed(wait, first).await, &guard) {
                Ok(response) => return Ok(with_id(relay(response, guard), id)),
                Err(error @ SendError::Timeout(_)) => (error, guard),
                Err(error) if !idempotent && !error.is_connect() => (error, guard),
                Err(_) => {
                    let failed = guard.addr;
                    let route = guard.served.route.clone();
                    drop(guard);
                    let Ok(guard) = self.routes.pick(info.listen, &parts, Some(failed)) else {
                        return Ok(with_id(nothing_live(&route), id));
                    };
                    let headers = std::mem::take(&mut parts.headers);
                    let again =
                        self.send(&self.fresh, &parts.method, &path, headers, &guard, empty());
                    match health(timed(wait, again).await, &guard) {
                        Ok(response) => return Ok(with_id(relay(response, guard), id)),
                        Err(error) => (error, guard),
                    }
                }
            }
        } else {
            let headers = std::mem::take(&mut parts.headers);
            let body = Either::Right(ClientBody::new(body, limits.max_body));
            let sent = self.send(&self.pooled, &parts.method, &path, headers, &guard, body);
            match health(timed(wait, sent).await, &guard) {
                Ok(response) => return Ok(with_id(relay(response, guard), id)),
                Err(error) => (error, guard),
            }
        };
        let answer = failed(error, &parts.method, parts.uri.path(), &guard, &id);
        Ok(with_id(answer, id))
    }

    /// When `pick` found no upstream: no route is 404; the route's hold decides (maintenance
    /// answers 503, a pause holds the request until it ends and picks again), else nothing is
    /// live.
    async fn unpicked(
        &self,
        listen: SocketAddr,
        parts: &hyper::http::request::Parts,
        mut miss: Miss,
    ) -> Result<InflightGuard, Response<ProxyBody>> {
        loop {
            let (hold, route) = match miss {
                Miss::NoRoute => return Err(not_found()),
                Miss::NothingLive(route) => return Err(nothing_live(&route)),
                Miss::Held(hold, route) => (hold, route),
            };
            match &*hold {
                Hold::Maintenance {
                    message,
                    retry_after_s,
                } => {
                    let answer = maintenance(message, *retry_after_s, wants_json(parts));
                    return Err(with_log(answer, &route));
                }
                Hold::Pause { until_ms } => {
                    // Listening before looking again: a change between the two is not missed.
                    let changed = self.routes.changed();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    match self.routes.pick(listen, parts, None) {
                        Ok(guard) => return Ok(guard),
                        Err(Miss::Held(..)) => {}
                        Err(other) => {
                            miss = other;
                            continue;
                        }
                    }
                    let Some(_held) = self.routes.hold_one(MAX_HELD) else {
                        let answer = text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                                "{} is paused and {MAX_HELD} requests wait already\n",
                                route.env
                            ),
                        );
                        return Err(with_log(answer, &route));
                    };
                    let left = Duration::from_millis(until_ms.saturating_sub(now_ms()));
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep(left) => {}
                    }
                    miss = match self.routes.pick(listen, parts, None) {
                        Ok(guard) => return Ok(guard),
                        Err(miss) => miss,
                    };
                }
            }
        }
    }

    /// An HTTP/1.1 `Upgrade` or an HTTP/2 extended CONNECT (a WebSocket, usually): sent to the
    /// upstream as an HTTP/1.1 upgrade on a connection of its own; when the upstream switches
    /// protocols, the client's stream and the upstream's connection are joined into a tunnel
    /// that counts in flight to the upstream until it ends. An HTTP/2 client is told `200`
    /// (RFC 8441 §5): the bytes that follow are the same WebSocket frames either way.
    async fn upgrade(
        &self,
        mut request: Request<Incoming>,
        info: &ConnInfo,
        switch: Switch,
        client_ip: &HeaderValue,
        alive: &mpsc::Sender<()>,
    ) -> Response<ProxyBody> {
        let client_upgrade = hyper::upgrade::on(&mut request);
        let (mut parts, body) = request.into_parts();
        prepare_request_headers(&mut parts.headers, client_ip, info.tls);
        let id = request_id(&mut parts.headers);
        let listen = info.listen;
        // Every answer, the tunnel's or a refusal, carries the request's id.
        let answer = async {
            let protocol = match &switch {
                Switch::Upgrade(protocol) | Switch::Connect(protocol) => protocol.clone(),
            };
            let websocket = protocol.as_bytes().eq_ignore_ascii_case(b"websocket");
            if matches!(switch, Switch::Connect(_)) {
                parts.method = Method::GET;
                if websocket {
                    // HTTP/2 has no key: the HTTP/1.1 handshake to the app needs one (RFC 6455
                    // §4.1), and its answer (`Sec-WebSocket-Accept`) stays at the edge.
                    let key = tungstenite::handshake::client::generate_key();
                    if let Ok(key) = HeaderValue::from_str(&key) {
                        parts.headers.insert(header::SEC_WEBSOCKET_KEY, key);
                    }
                }
            }
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocol);
            let guard = match self.routes.pick(listen, &parts, None) {
                Ok(guard) => guard,
                Err(miss) => match self.unpicked(listen, &parts, miss).await {
                    Ok(guard) => guard,
                    Err(answer) => return answer,
                },
            };
            let path = parts.uri.path().to_string();
            let method = parts.method.clone();
            parts.uri = Uri::from(path_and_query(&parts.uri));
            parts.version = Version::HTTP_11;
            let sent = send_upgrade(guard.addr, Request::from_parts(parts, body)).await;
            let response = match health(sent, &guard) {
                Ok(response) => response,
                Err(error) => return failed(error, &method, &path, &guard, &id),
            };
            if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                if matches!(switch, Switch::Connect(_)) && response.status().is_success() {
                    // A success to a CONNECT opens the tunnel: an app that did not switch must not
                    // look as if it had.
                    let status = response.status();
                    let answer = text(
                        StatusCode::BAD_GATEWAY,
                        format!("bad gateway: the app answered {status} to a WebSocket upgrade, not 101 Switching Protocols\n"),
                    );
                    return with_log(answer, &guard.served.route);
                }
                return relay(response, guard);
            }
            let mut response = response;
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let (mut parts, _) = response.into_parts();
            let accepted = parts.headers.get(header::UPGRADE).cloned();
            strip_hop_by_hop(&mut parts.headers);
            match (&switch, accepted) {
                (Switch::Upgrade(_), accepted) => {
                    parts
                        .headers
                        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    if let Some(accepted) = accepted {
                        parts.headers.insert(header::UPGRADE, accepted);
                    }
                }
                (Switch::Connect(_), _) => {
                    parts.status = StatusCode::OK;
                    parts.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
                }
            }
            parts.extensions.insert(guard.served.clone());
            let (shutdown, alive) = (self.shutdown.clone(), alive.clone());
            tokio::spawn(async move {
                if let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade) {
                    crate::tunnel::relay(
                        TokioIo::new(client),
                        TokioIo::new(upstream),
                        websocket,
                        guard,
                        shutdown,
                        alive,
                    )
                    .await;
                }
            });
            Response::from_parts(parts, ProxyBody::Text(Full::new(Bytes::new())))
        }
        .await;
        with_id(answer, id)
    }

    async fn send(
        &self,
        client: &UpstreamClient,
        method: &Method,
        path: &PathAndQuery,
        headers: HeaderMap,
        guard: &InflightGuard,
        body: UpstreamBody,
    ) -> Result<Response<Incoming>, SendError> {
        let mut target = uri::Parts::default();
        target.scheme = Some(Scheme::HTTP);
        target.authority = Some(guard.authority.clone());
        target.path_and_query = Some(path.clone());
        let uri = Uri::from_parts(target).map_err(|_| SendError::BadTarget)?;
        let mut request = Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
        client.request(request).await.map_err(SendError::Upstream)
    }
}

/// The answer to a request that got no response from its upstream.
fn failed(
    error: SendError,
    method: &Method,
    path: &str,
    guard: &InflightGuard,
    id: &HeaderValue,
) -> Response<ProxyBody> {
    let (addr, route) = (guard.addr, &guard.served.route);
    let env = &route.env;
    let id = id.to_str().unwrap_or("-");
    let answer = match error {
        SendError::Timeout(after) => {
            eprintln!(
                "edge: {env}: {method} {path} to {addr} (request {id}): no answer within {}",
                seconds(after)
            );
            text(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "gateway timeout: the app at {addr} did not answer within {} \
                     (upstream_timeout of [environments.{env}.edge])\n",
                    seconds(after),
                ),
            )
        }
        SendError::BadTarget => text(StatusCode::BAD_REQUEST, "bad request target\n".into()),
        SendError::Upstream(e) => match client_body_error(&e) {
            Some(ClientBodyError::TooLarge(limit)) => too_large(*limit),
            Some(ClientBodyError::Malformed(cause)) => {
                let mut response = text(
                    StatusCode::BAD_REQUEST,
                    format!("bad request: the request body is malformed: {cause}\n"),
                );
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
            None => bad_gateway(&root_cause(&e), method, path, guard, id),
        },
        SendError::Connect(e) => bad_gateway(&root_cause(&e), method, path, guard, id),
        SendError::Http(e) => bad_gateway(&root_cause(&e), method, path, guard, id),
    };
    with_log(answer, route)
}

fn bad_gateway(
    cause: &str,
    method: &Method,
    path: &str,
    guard: &InflightGuard,
    id: &str,
) -> Response<ProxyBody> {
    let addr = guard.addr;
    eprintln!(
        "edge: {}: {method} {path} to {addr} (request {id}) failed: {cause}",
        guard.served.route.env
    );
    text(
        StatusCode::BAD_GATEWAY,
        format!("bad gateway: the app at {addr} did not answer: {cause}\n"),
    )
}

/// 503: the route has no upstream (no release is live, or all are at weight 0).
fn nothing_live(route: &Arc<RouteInfo>) -> Response<ProxyBody> {
    let answer = text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("no version of the app is live in {}\n", route.env),
    );
    with_log(answer, route)
}

/// 404 for an address and host no route takes. Names nothing of what the edge serves.
fn not_found() -> Response<ProxyBody> {
    let mut response = text(
        StatusCode::NOT_FOUND,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Not found</title></head>\n\
         <body><h1>Not found</h1>\n<p>Nothing is served for this host name here.</p></body></html>\n"
            .to_string(),
    );
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// The answer, to be written to `route`'s access log.
fn with_log(mut response: Response<ProxyBody>, route: &Arc<RouteInfo>) -> Response<ProxyBody> {
    response.extensions_mut().insert(route.clone());
    response
}

/// The answer, to be written to the access log of the route `guard` took.
fn logged(response: Response<ProxyBody>, guard: &InflightGuard) -> Response<ProxyBody> {
    with_log(response, &guard.served.route)
}

/// The most requests a paused edge holds; more get 503.
const MAX_HELD: u64 = 10_000;

/// Whether the client asked for JSON.
fn wants_json(parts: &hyper::http::request::Parts) -> bool {
    parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"))
}

/// 503 for maintenance, with `Retry-After` and the message: JSON when asked for, else a page.
fn maintenance(message: &str, retry_after_s: u64, json: bool) -> Response<ProxyBody> {
    let (content_type, body) = if json {
        let body = serde_json::json!({"error": "maintenance", "message": message});
        ("application/json", format!("{body}\n"))
    } else {
        let escaped = message
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;");
        let page = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Down for maintenance</title></head>\n\
             <body><h1>Down for maintenance</h1>\n<p>{escaped}</p></body></html>\n"
        );
        ("text/html; charset=utf-8", page)
    };
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    response
}

/// Tells the upstream's passive health how a send went: a failed connect ejects it for a while
/// (new requests go to the other upstreams of the route), a response ends an ejection. Both
/// are said in the edge's log.
fn health(
    result: Result<Response<Incoming>, SendError>,
    guard: &InflightGuard,
) -> Result<Response<Incoming>, SendError> {
    let (addr, env) = (guard.addr, &guard.served.route.env);
    match &result {
        Ok(_) => {
            if guard.connected() {
                eprintln!("edge: {env}: {addr} answers again: it takes new requests");
            }
        }
        Err(error) if error.is_connect() => {
            let cause = match error {
                SendError::Upstream(e) => root_cause(e),
                SendError::Connect(e) => e.to_string(),
                _ => String::new(),
            };
            if let Some(length) = guard.connect_failed(&cause) {
                eprintln!(
                    "edge: {env}: connecting to {addr} failed: {cause}; new requests skip it for {} while another upstream of the route answers, then one tries it again",
                    seconds(length)
                );
            }
        }
        Err(_) => {}
    }
    result
}

/// Waits `limit` for the response head.
async fn timed(
    limit: Duration,
    sent: impl std::future::Future<Output = Result<Response<Incoming>, SendError>>,
) -> Result<Response<Incoming>, SendError> {
    tokio::time::timeout(limit, sent)
        .await
        .unwrap_or(Err(SendError::Timeout(limit)))
}

/// "60 s", "1.5 s".
fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// 413, and the connection closes: the rest of the body is not read.
fn too_large(limit: u64) -> Response<ProxyBody> {
    let mut response = text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("content too large: the request body is over {limit} bytes (max_body)\n"),
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: the client's `X-Request-Id` when it sent a usable one, else a new one,
/// set on the request (so the app gets it) and returned (for the answer and the logs).
fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&X_REQUEST_ID) {
        if !id.is_empty() && id.len() <= 200 {
            return id.clone();
        }
    }
    let id = new_request_id();
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

/// 32 hex digits: a per-process random prefix and a counter, unique without coordination.
fn new_request_id() -> HeaderValue {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        let word = if i < 16 { prefix } else { n };
        *byte = HEX[((word >> (60 - 4 * (i % 16))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
}

/// The answer, with the request's id for the client.
fn with_id(mut response: Response<ProxyBody>, id: HeaderValue) -> Response<ProxyBody> {
    response.headers_mut().insert(X_REQUEST_ID, id);
    response
}

/// Sends an upgrade request on a new connection of its own, which stays with the tunnel.
async fn send_upgrade(
    addr: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Incoming>, SendError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(SendError::Connect(e)),
        Err(_) => {
            return Err(SendError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection timed out",
            )))
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Http)?;
    tokio::spawn(connection.with_upgrades());
    sender.send_request(request).await.map_err(SendError::Http)
}

/// A request the edge answers itself and never passes on: two `Host` headers (RFC 9112 §3.2).
/// (A `Host` that disagrees with the TLS server name, 421, belongs here once the edge speaks
/// TLS.)
fn refuse(request: &Request<Incoming>) -> Option<Response<ProxyBody>> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    if hosts.next().is_some() && hosts.next().is_some() {
        let mut response = text(
            StatusCode::BAD_REQUEST,
            "bad request: more than one Host header\n".to_string(),
        );
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Some(response);
    }
    None
}

/// A request on a TLS connection whose `Host` is not the name the connection was made for
/// (SNI) gets 421 (RFC 9110 §15.5.20) and never reaches an app: the certificate and the route
/// the client was shown are the SNI's.
fn misdirected(request: &Request<Incoming>, info: &ConnInfo) -> Option<Response<ProxyBody>> {
    let sni = info.server_name.as_deref()?;
    let host = match request.headers().get(header::HOST) {
        Some(h) => h.to_str().ok()?,
        None => request.uri().authority()?.as_str(),
    };
    let host = crate::protocol::normal_host(host);
    if host == sni {
        return None;
    }
    Some(text(
        StatusCode::MISDIRECTED_REQUEST,
        format!("misdirected request: this connection is for {sni}, not {host}\n"),
    ))
}

/// `Strict-Transport-Security` on the HTTPS answers of a route with `hsts = true`.
fn strict_transport_security(response: &mut Response<ProxyBody>) {
    let hsts = response
        .extensions()
        .get::<Arc<crate::routes::Served>>()
        .is_some_and(|served| served.route.hsts);
    if hsts {
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

/// How a client asks for a tunnel.
enum Switch {
    /// HTTP/1.1 `Connection: upgrade` with this `Upgrade`.
    Upgrade(HeaderValue),
    /// HTTP/2 extended CONNECT (RFC 8441) with this `:protocol`.
    Connect(HeaderValue),
}

/// The `:protocol` of an HTTP/2 extended CONNECT (RFC 8441 §4).
fn connect_protocol(request: &Request<Incoming>) -> Option<HeaderValue> {
    let protocol = request.extensions().get::<hyper::ext::Protocol>()?;
    HeaderValue::from_str(protocol.as_str()).ok()
}

/// A CONNECT that names no protocol asks for a forward proxy, which the edge is not.
fn not_a_forward_proxy() -> Response<ProxyBody> {
    let mut response = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed: CONNECT opens no tunnel here (this is a reverse proxy); \
         a WebSocket over HTTP/2 names its :protocol (RFC 8441)\n"
            .to_string(),
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The protocol an HTTP/1.1 request asks to switch to (`Connection: upgrade` and `Upgrade`).
fn upgrade_protocol(request: &Request<Incoming>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let protocol = request.headers().get(header::UPGRADE)?;
    let asked = request
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asked.then(|| protocol.clone())
}

/// The request target sent upstream: the client's path and query (origin form), else "/".
fn path_and_query(uri: &Uri) -> PathAndQuery {
    uri.path_and_query()
        .filter(|p| p.as_str().starts_with('/'))
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

enum SendError {
    BadTarget,
    /// No response head within the route's `upstream_timeout`.
    Timeout(Duration),
    Upstream(hyper_util::client::legacy::Error),
    Connect(std::io::Error),
    Http(hyper::Error),
}

impl SendError {
    /// No connection to the upstream could be made (refused, unreachable, timed out): nothing
    /// of the request reached it.
    fn is_connect(&self) -> bool {
        match self {
            SendError::Upstream(e) => e.is_connect(),
            SendError::Connect(_) => true,
            _ => false,
        }
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

fn empty() -> UpstreamBody {
    Either::Left(Empty::new())
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Text(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The client's request body as it is sent upstream: a body the client breaks (a malformed
/// chunk, a connection closed mid-body) is the client's fault (400), not the app's (502).
/// A body beyond the route's `max_body` stops there (413).
pub(crate) struct ClientBody {
    inner: Incoming,
    limit: u64,
    /// Bytes the body may still bring.
    allowed: u64,
}

impl ClientBody {
    fn new(inner: Incoming, limit: u64) -> ClientBody {
        ClientBody {
            inner,
            limit,
            allowed: limit,
        }
    }
}

/// Why a client's request body could not be sent upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientBodyError {
    #[error("{0}")]
    Malformed(hyper::Error),
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > self.allowed {
                        return Poll::Ready(Some(Err(ClientBodyError::TooLarge(self.limit))));
                    }
                    self.allowed -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(ClientBodyError::Malformed(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client body's error behind a failed upstream request, if that was the cause.
fn client_body_error<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e ClientBodyError> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<ClientBodyError>() {
            return Some(found);
        }
        current = e.source();
    }
    None
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
    // Only an upgrade request passes it on (it sets it again, see `Forwarder::upgrade`).
    headers.remove(header::UPGRADE);
}

/// The client's address as an `X-Forwarded-For` entry (made once per client connection).
pub(crate) fn client_ip_header(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from(peer.ip().to_canonical().to_string()))
        .expect("an IP address is a valid header value")
}

fn prepare_request_headers(headers: &mut HeaderMap, client_ip: &HeaderValue, tls: bool) {
    strip_hop_by_hop(headers);
    let previous: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if previous.is_empty() {
        // The common case: no allocation, the value is shared with the connection.
        headers.insert(X_FORWARDED_FOR, client_ip.clone());
    } else {
        let client_ip = client_ip.to_str().unwrap_or_default();
        let forwarded_for = format!("{}, {client_ip}", previous.join(", "));
        if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    let proto = if tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

fn relay(response: Response<Incoming>, guard: InflightGuard) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.extensions.insert(guard.served.clone());
    let body = TrackedBody {
        inner: body,
        guard: Some(guard),
    };
    Response::from_parts(parts, ProxyBody::Upstream(body))
}

/// What the proxy answers with: the upstream's body, or a short text of its own. An enum, not a
/// box: no allocation per response.
pub(crate) enum ProxyBody {
    Upstream(TrackedBody),
    Text(Full<Bytes>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Text(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(body) => body.is_end_stream(),
            ProxyBody::Text(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(body) => body.size_hint(),
            ProxyBody::Text(body) => body.size_hint(),
        }
    }
}

/// A response body streamed from the upstream; the request counts as in flight until the body
/// has been sent in full or dropped.
pub(crate) struct TrackedBody {
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
        let peer = SocketAddr::from(([127, 0, 0, 1], 5000));
        let mut over_tls = headers.clone();
        prepare_request_headers(&mut headers, &client_ip_header(peer), false);
        prepare_request_headers(&mut over_tls, &client_ip_header(peer), true);
        assert_eq!(over_tls[X_FORWARDED_PROTO], "https");
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get("x-secret").is_none());
        assert!(headers.get("keep-alive").is_none());
        assert_eq!(headers["x-app"], "kept");
        assert_eq!(headers[X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(headers[X_FORWARDED_PROTO], "http");
        assert_eq!(headers[X_FORWARDED_HOST], "example.test");
    }
}
