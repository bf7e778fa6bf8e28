//! One client connection: hyper's HTTP/1.1 server over the socket, with the idle and header
//! timeouts of its address's routes. hyper's own header timer also runs between kept-alive requests (it would
//! cut idle connections at the header timeout), so both are kept here instead: the socket
//! counts its reads, the service counts requests and the answers still being sent, and a
//! ticker closes a connection that has been quiet too long or has sat on half a request head.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::Response;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::access::{self, AccessLog, Entry};
use crate::forward::ProxyBody;
use crate::protocol::Limits;
use crate::routes::{RouteInfo, Served};

/// What a connection has done, shared by its socket, its service and its ticker.
#[derive(Default)]
pub(crate) struct Activity {
    reads: AtomicU64,
    requests: AtomicU64,
    /// Requests whose answer is not yet sent in full.
    answering: AtomicU64,
    /// The edge handed its sockets over: answers say `Connection: close`.
    closing: std::sync::atomic::AtomicBool,
}

impl Activity {
    /// From now on every answer closes the connection after it.
    pub fn close_after_answer(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// A request has arrived; its answer counts until sent or dropped, and is then written
    /// to the access log.
    pub fn answer(
        self: &Arc<Self>,
        response: Response<ProxyBody>,
        request: Asked,
        default_log: &Arc<AccessLog>,
    ) -> Response<Answer> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.answering.fetch_add(1, Ordering::Relaxed);
        let (mut parts, body) = response.into_parts();
        if self.closing.load(Ordering::Relaxed) {
            parts.headers.insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
        }
        let served = parts.extensions.remove::<Arc<Served>>();
        // The log of the route that answered; the edge's own when none did.
        let log = match &served {
            Some(served) => served.route.log.clone(),
            None => parts
                .extensions
                .remove::<Arc<RouteInfo>>()
                .map_or_else(|| default_log.clone(), |r| r.log.clone()),
        };
        let record = Record {
            request,
            status: parts.status.as_u16(),
            served,
            request_id: parts.headers.get("x-request-id").cloned(),
            bytes: 0,
            log,
        };
        Response::from_parts(
            parts,
            Answer {
                body,
                activity: self.clone(),
                record,
            },
        )
    }
}

/// What the access log needs of a request, taken before it is handed on.
pub(crate) struct Asked {
    pub started: std::time::Instant,
    pub method: hyper::Method,
    pub host: Option<hyper::header::HeaderValue>,
    pub path: String,
}

impl Asked {
    pub fn of<B>(request: &hyper::Request<B>) -> Asked {
        Asked {
            started: std::time::Instant::now(),
            method: request.method().clone(),
            host: request.headers().get(hyper::header::HOST).cloned(),
            path: request.uri().path().to_string(),
        }
    }
}

/// One answer being sent, written to the access log when it ends.
struct Record {
    request: Asked,
    status: u16,
    served: Option<Arc<Served>>,
    request_id: Option<hyper::header::HeaderValue>,
    bytes: u64,
    log: Arc<AccessLog>,
}

impl Drop for Record {
    fn drop(&mut self) {
        let text = |v: &Option<hyper::header::HeaderValue>| {
            v.as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (host, request_id) = (text(&self.request.host), text(&self.request_id));
        let served = self.served.as_deref();
        self.log.record(&Entry {
            time: access::now(),
            host: &host,
            method: self.request.method.as_str(),
            path: &self.request.path,
            status: self.status,
            bytes: self.bytes,
            duration_ms: access::millis(self.request.started.elapsed()),
            upstream: served.map(|s| s.addr.clone()),
            instance: served.and_then(|s| s.instance.as_deref()),
            release: served.and_then(|s| s.release),
            request_id: &request_id,
        });
    }
}

/// The socket, counting the reads that bring bytes.
pub(crate) struct Counted<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Counted<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Counted<T> {
        Counted { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.reads.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

/// An answer's body, counted as being sent until it ends or is dropped.
pub(crate) struct Answer {
    body: ProxyBody,
    activity: Arc<Activity>,
    record: Record,
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.activity.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.record.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Why a connection was closed by the edge.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Expired {
    Idle,
    Header,
}

/// Resolves when the connection has been idle for `idle_timeout` or has sat on an unfinished
/// request head for `header_timeout` (never while an answer is being sent).
pub(crate) async fn expired(activity: &Activity, limits: Limits) -> Expired {
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let header = Duration::from_millis(limits.header_timeout_ms);
    let tick = (idle.min(header) / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
    let (mut reads, mut requests) = (load(&activity.reads), load(&activity.requests));
    let mut quiet_since = Instant::now();
    let mut head_since: Option<Instant> = None;
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let (reads_now, requests_now) = (load(&activity.reads), load(&activity.requests));
        if load(&activity.answering) > 0 || requests_now != requests {
            // Busy, or a request came and went since the last look.
            (reads, requests, quiet_since, head_since) = (reads_now, requests_now, now, None);
            continue;
        }
        if reads_now != reads {
            // Bytes of a request head that has not reached the service yet.
            head_since.get_or_insert(now);
            (reads, quiet_since) = (reads_now, now);
        }
        match head_since {
            Some(since) if now - since >= header => return Expired::Header,
            None if now - quiet_since >= idle => return Expired::Idle,
            _ => {}
        }
    }
}
