//! Release notifications: JSON POSTs to configured URLs from background tasks, with retries.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT as USER_AGENT_HEADER};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

/// The `User-Agent` of every notification.
pub const USER_AGENT: &str = concat!("cutover/", env!("CARGO_PKG_VERSION"));

/// How many given-up deliveries [`Notifier::failures`] keeps.
const MAX_FAILURES: usize = 100;

pub use cutover_api::ReleaseEvent;

/// How hard a delivery is tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per event and URL (at least 1).
    pub tries: u32,
    /// The wait before the 2nd, 3rd, … attempt; the last entry repeats if there are more tries.
    pub backoff: Vec<Duration>,
    /// Limit on one attempt: connect, send, and the response's status line and headers.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// 3 tries, waiting 200 ms, then 1 s (then 5 s, were there more tries), 2 s per try.
    fn default() -> RetryPolicy {
        RetryPolicy {
            tries: 3,
            backoff: vec![
                Duration::from_millis(200),
                Duration::from_secs(1),
                Duration::from_secs(5),
            ],
            timeout: Duration::from_secs(2),
        }
    }
}

/// Sends [`ReleaseEvent`]s to a fixed list of `http://` URLs. Cheap to clone; clones share the
/// queues, the background tasks and the failure list.
///
/// Each URL has its own background task and queue: events reach one URL in the order they were
/// queued, and a slow or dead URL delays nobody else. The tasks start on the first
/// [`Notifier::notify`], on that caller's tokio runtime, and end once every clone is dropped
/// and their queues are drained (or the runtime shuts down, dropping what is queued).
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    urls: Vec<String>,
    policy: Arc<RetryPolicy>,
    queues: OnceLock<Vec<mpsc::UnboundedSender<Bytes>>>,
    shared: Arc<Shared>,
}

struct Shared {
    /// Events queued (per URL) and not yet delivered or given up on.
    pending: watch::Sender<usize>,
    failures: Mutex<VecDeque<(String, String)>>,
}

impl Shared {
    fn done(&self) {
        self.pending.send_modify(|n| *n = n.saturating_sub(1));
    }

    fn fail(&self, url: &str, error: String) {
        let url = redact(url);
        eprintln!("warning: notification to {url} failed: {error}");
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.push_back((url, error));
        while failures.len() > MAX_FAILURES {
            failures.pop_front();
        }
    }
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.inner.urls.iter().map(|u| redact(u)).collect();
        f.debug_struct("Notifier")
            .field("urls", &urls)
            .field("pending", &*self.inner.shared.pending.borrow())
            .finish()
    }
}

impl Notifier {
    /// A notifier for `urls` (`http://host[:port][/path]`), with [`RetryPolicy::default`].
    ///
    /// Nothing is checked here: an unusable URL (`https://`, which needs a TLS stack cutover
    /// does not have, or a malformed one) makes each send to it fail with a clear error, logged
    /// and listed in [`Notifier::failures`].
    pub fn new(urls: Vec<String>) -> Notifier {
        Notifier::with_policy(urls, RetryPolicy::default())
    }

    /// Like [`Notifier::new`] with another retry policy.
    pub fn with_policy(urls: Vec<String>, policy: RetryPolicy) -> Notifier {
        let (pending, _) = watch::channel(0);
        Notifier {
            inner: Arc::new(Inner {
                urls,
                policy: Arc::new(policy),
                queues: OnceLock::new(),
                shared: Arc::new(Shared {
                    pending,
                    failures: Mutex::new(VecDeque::new()),
                }),
            }),
        }
    }

    /// Queues `event` for every URL and returns at once; never blocks and never fails the
    /// caller. Background tasks POST it as JSON with retries.
    ///
    /// Must be called inside a tokio runtime; outside one, the event is dropped and each URL
    /// records a failure.
    pub fn notify(&self, event: ReleaseEvent) {
        let inner = &self.inner;
        if inner.urls.is_empty() {
            return;
        }
        let body = match serde_json::to_vec(&event) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                for url in &inner.urls {
                    inner
                        .shared
                        .fail(url, format!("cannot encode the event: {e}"));
                }
                return;
            }
        };
        let Some(queues) = self.queues() else {
            for url in &inner.urls {
                inner
                    .shared
                    .fail(url, "notify was called outside a tokio runtime".into());
            }
            return;
        };
        for (url, queue) in inner.urls.iter().zip(queues) {
            inner.shared.pending.send_modify(|n| *n += 1);
            if queue.send(body.clone()).is_err() {
                inner.shared.done();
                inner.shared.fail(
                    url,
                    "the delivery task has stopped (runtime shut down?)".into(),
                );
            }
        }
    }

    /// Waits (up to `timeout`) until every queued event was delivered or given up on.
    pub async fn flush(&self, timeout: Duration) {
        let mut pending = self.inner.shared.pending.subscribe();
        let _ = tokio::time::timeout(timeout, pending.wait_for(|n| *n == 0)).await;
    }

    /// Deliveries given up on, as (URL, last error), newest last; the last 100 are kept.
    /// A URL's query string and credentials are masked.
    pub fn failures(&self) -> Vec<(String, String)> {
        let failures = self
            .inner
            .shared
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        failures.iter().cloned().collect()
    }

    fn queues(&self) -> Option<&Vec<mpsc::UnboundedSender<Bytes>>> {
        if let Some(queues) = self.inner.queues.get() {
            return Some(queues);
        }
        let handle = Handle::try_current().ok()?;
        Some(self.inner.queues.get_or_init(|| {
            self.inner
                .urls
                .iter()
                .map(|url| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    handle.spawn(worker(
                        url.clone(),
                        self.inner.policy.clone(),
                        self.inner.shared.clone(),
                        rx,
                    ));
                    tx
                })
                .collect()
        }))
    }
}

/// Delivers one URL's events, one after the other.
async fn worker(
    url: String,
    policy: Arc<RetryPolicy>,
    shared: Arc<Shared>,
    mut queue: mpsc::UnboundedReceiver<Bytes>,
) {
    let target = Target::parse(&url);
    while let Some(body) = queue.recv().await {
        let result = match &target {
            Ok(target) => deliver(target, body, &policy).await,
            Err(e) => Err(e.clone()),
        };
        if let Err(e) = result {
            shared.fail(&url, e);
        }
        shared.done();
    }
}

async fn deliver(target: &Target, body: Bytes, policy: &RetryPolicy) -> Result<(), String> {
    let tries = policy.tries.max(1);
    let mut last_error = String::new();
    for attempt in 0..tries {
        if attempt > 0 {
            let i = (attempt as usize - 1).min(policy.backoff.len().saturating_sub(1));
            if let Some(wait) = policy.backoff.get(i) {
                tokio::time::sleep(*wait).await;
            }
        }
        match tokio::time::timeout(policy.timeout, post(target, body.clone())).await {
            Ok(Ok(status)) if (200..300).contains(&status) => return Ok(()),
            Ok(Ok(status)) => {
                last_error = format!("the receiver answered HTTP {status}");
                let retryable = status >= 500 || status == 408 || status == 429;
                if !retryable {
                    return Err(format!("{last_error} (not retried)"));
                }
            }
            Ok(Err(e)) => last_error = e,
            Err(_) => last_error = format!("no response within {} ms", policy.timeout.as_millis()),
        }
    }
    Err(format!(
        "{last_error} (gave up after {tries} {})",
        if tries == 1 { "try" } else { "tries" }
    ))
}

/// One POST on a fresh connection; the response status.
async fn post(target: &Target, body: Bytes) -> Result<u16, String> {
    let stream = TcpStream::connect(target.authority.as_str())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.authority))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {} failed: {e}", target.authority))?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT_HEADER, USER_AGENT)
        .body(Full::new(body))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    tokio::pin!(conn);
    tokio::select! {
        biased;
        response = sender.send_request(request) => response
            .map(|r| r.status().as_u16())
            .map_err(|e| format!("request to {} failed: {e}", target.authority)),
        result = &mut conn => Err(match result {
            Ok(()) => format!("{} closed the connection without answering", target.authority),
            Err(e) => format!("connection to {} failed: {e}", target.authority),
        }),
    }
}

/// Where an `http://` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// `host:port` (`[v6]:port`), for connecting and for the `Host` header.
    authority: String,
    /// Origin-form request target: `/path?query`.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let shown = redact(url);
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(format!(
                "{shown}: https is not supported (cutover has no TLS stack); use an http:// URL, \
                 e.g. a local relay"
            ));
        }
        if !lower.starts_with("http://") {
            return Err(format!("{shown}: not an http:// URL"));
        }
        let rest = &url["http://".len()..];
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        if authority.contains('@') {
            return Err(format!(
                "{shown}: credentials in a notification URL are not supported"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{shown}: unclosed `[` in the host"))?;
            (format!("[{host}]"), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(format!("{shown}: no host"));
        }
        let port: u16 = match port {
            None => 80,
            Some(p) => p
                .parse()
                .map_err(|_| format!("{shown}: `{p}` is not a port"))?,
        };
        Ok(Target {
            authority: format!("{host}:{port}"),
            path,
        })
    }
}

/// A URL as it may be shown: credentials and the query string (where tokens tend to live)
/// masked.
fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, _)) => (base, "?…"),
        None => (url, ""),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://…@{}", &rest[at + 1..]),
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    format!("{base}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(authority: &str, path: &str) -> Target {
        Target {
            authority: authority.into(),
            path: path.into(),
        }
    }

    #[test]
    fn parses_http_urls() {
        assert_eq!(
            Target::parse("http://127.0.0.1:9000/hook"),
            Ok(t("127.0.0.1:9000", "/hook"))
        );
        assert_eq!(
            Target::parse("http://example.com"),
            Ok(t("example.com:80", "/"))
        );
        assert_eq!(
            Target::parse("HTTP://example.com?x=1#frag"),
            Ok(t("example.com:80", "/?x=1"))
        );
        assert_eq!(
            Target::parse("http://[::1]:8080/a/b?c"),
            Ok(t("[::1]:8080", "/a/b?c"))
        );
    }

    #[test]
    fn refuses_unusable_urls_clearly() {
        let e = Target::parse("https://example.com/hook").unwrap_err();
        assert!(e.contains("https is not supported"), "{e}");
        assert!(Target::parse("ftp://x")
            .unwrap_err()
            .contains("not an http:// URL"));
        assert!(Target::parse("http://:80/")
            .unwrap_err()
            .contains("no host"));
        assert!(Target::parse("http://h:99999/")
            .unwrap_err()
            .contains("not a port"));
        let e = Target::parse("http://user:hunter2@h/").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn redacts_credentials_and_queries() {
        assert_eq!(redact("http://h:1/p"), "http://h:1/p");
        assert_eq!(redact("http://h/p?token=s3cret"), "http://h/p?…");
        assert_eq!(redact("http://u:pw@h/p"), "http://…@h/p");
    }
}
