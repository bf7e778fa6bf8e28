//! Notifications: events POSTed to configured receivers from background tasks, with retries,
//! over cutover's one HTTP client stack (`cutover-http`: rustls, an optional CA bundle per
//! receiver, no redirect to another host).

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cutover_http::{classify, ClientOptions, Failure};
use serde_json::json;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

/// The `User-Agent` of every notification.
pub use cutover_http::USER_AGENT;

/// How many given-up deliveries [`Notifier::failures`] keeps.
const MAX_FAILURES: usize = 100;

pub use cutover_api::{Notification, ReleaseEvent};

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
    /// 3 tries, waiting 200 ms, then 1 s (then 5 s, were there more tries), 5 s per try.
    fn default() -> RetryPolicy {
        RetryPolicy {
            tries: 3,
            backoff: vec![
                Duration::from_millis(200),
                Duration::from_secs(1),
                Duration::from_secs(5),
            ],
            timeout: Duration::from_secs(5),
        }
    }
}

/// What a receiver is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The [`Notification`] as JSON, with its `kind`.
    #[default]
    Json,
    /// `{"text": …}`, as Slack's incoming webhooks (and Mattermost's, Rocket.Chat's) take it.
    Slack,
    /// An Adaptive Card in a `message`, as Microsoft Teams workflow webhooks take it.
    Teams,
}

/// One receiver: where, in which format, with which extra headers, trusting which CA.
#[derive(Clone, PartialEq, Eq)]
pub struct Receiver {
    /// `http://…` or `https://…`.
    pub url: String,
    pub format: Format,
    /// Extra request headers (`Authorization`, …). Their values are secrets: never shown.
    pub headers: Vec<(String, String)>,
    /// A PEM bundle of CAs trusted besides the system's, for this receiver.
    pub ca_bundle: Option<PathBuf>,
}

impl Receiver {
    /// A JSON receiver at `url`, no extra headers, the system's CAs.
    pub fn json(url: impl Into<String>) -> Receiver {
        Receiver {
            url: url.into(),
            format: Format::Json,
            headers: Vec::new(),
            ca_bundle: None,
        }
    }
}

impl From<String> for Receiver {
    fn from(url: String) -> Receiver {
        Receiver::json(url)
    }
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, _)| format!("{k}: …"))
            .collect();
        f.debug_struct("Receiver")
            .field("url", &redact(&self.url))
            .field("format", &self.format)
            .field("headers", &headers)
            .field("ca_bundle", &self.ca_bundle)
            .finish()
    }
}

/// Sends [`Notification`]s to a fixed list of receivers. Cheap to clone; clones share the
/// queues, the background tasks and the failure list.
///
/// Each receiver has its own background task and queue: events reach one receiver in the order
/// they were queued, and a slow or dead one delays nobody else. The tasks start on the first
/// [`Notifier::notify`], on that caller's tokio runtime, and end once every clone is dropped
/// and their queues are drained (or the runtime shuts down, dropping what is queued).
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    receivers: Vec<Receiver>,
    policy: Arc<RetryPolicy>,
    queues: OnceLock<Vec<mpsc::UnboundedSender<Notification>>>,
    shared: Arc<Shared>,
}

struct Shared {
    /// Events queued (per receiver) and not yet delivered or given up on.
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

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("receivers", &self.inner.receivers)
            .field("pending", &*self.inner.shared.pending.borrow())
            .finish()
    }
}

impl Notifier {
    /// A notifier for `receivers`, with [`RetryPolicy::default`].
    ///
    /// Nothing is checked here: an unusable receiver (a malformed URL, an unreadable CA
    /// bundle) makes each send to it fail with a clear error, logged and listed in
    /// [`Notifier::failures`].
    pub fn new<R: Into<Receiver>>(receivers: Vec<R>) -> Notifier {
        Notifier::with_policy(receivers, RetryPolicy::default())
    }

    /// Like [`Notifier::new`] with another retry policy.
    pub fn with_policy<R: Into<Receiver>>(receivers: Vec<R>, policy: RetryPolicy) -> Notifier {
        let (pending, _) = watch::channel(0);
        Notifier {
            inner: Arc::new(Inner {
                receivers: receivers.into_iter().map(Into::into).collect(),
                policy: Arc::new(policy),
                queues: OnceLock::new(),
                shared: Arc::new(Shared {
                    pending,
                    failures: Mutex::new(VecDeque::new()),
                }),
            }),
        }
    }

    /// Queues `event` for every receiver and returns at once; never blocks and never fails
    /// the caller. Background tasks POST it with retries.
    ///
    /// Must be called inside a tokio runtime; outside one, the event is dropped and each
    /// receiver records a failure.
    pub fn notify(&self, event: impl Into<Notification>) {
        let event = event.into();
        let inner = &self.inner;
        if inner.receivers.is_empty() {
            return;
        }
        let Some(queues) = self.queues() else {
            for r in &inner.receivers {
                inner
                    .shared
                    .fail(&r.url, "notify was called outside a tokio runtime".into());
            }
            return;
        };
        for (r, queue) in inner.receivers.iter().zip(queues) {
            inner.shared.pending.send_modify(|n| *n += 1);
            if queue.send(event.clone()).is_err() {
                inner.shared.done();
                inner.shared.fail(
                    &r.url,
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

    fn queues(&self) -> Option<&Vec<mpsc::UnboundedSender<Notification>>> {
        if let Some(queues) = self.inner.queues.get() {
            return Some(queues);
        }
        let handle = Handle::try_current().ok()?;
        Some(self.inner.queues.get_or_init(|| {
            self.inner
                .receivers
                .iter()
                .map(|r| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    handle.spawn(worker(
                        r.clone(),
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

/// A receiver ready to be sent to: its checked URL and its client.
struct Target {
    url: cutover_http::reqwest::Url,
    client: cutover_http::Client,
}

impl Target {
    fn new(r: &Receiver, policy: &RetryPolicy) -> Result<Target, String> {
        let url = check_url(&r.url)?;
        let options = ClientOptions {
            connect_timeout: policy.timeout,
            timeout: Some(policy.timeout),
            ..ClientOptions::verified(r.ca_bundle.as_deref())
        };
        let client = cutover_http::client(&options).map_err(|e| {
            format!("{e}\nhint: fix ca_bundle of this [[notify]] (a PEM file of CA certificates)")
        })?;
        Ok(Target { url, client })
    }
}

/// Delivers one receiver's events, one after the other.
async fn worker(
    receiver: Receiver,
    policy: Arc<RetryPolicy>,
    shared: Arc<Shared>,
    mut queue: mpsc::UnboundedReceiver<Notification>,
) {
    let target = Target::new(&receiver, &policy);
    while let Some(event) = queue.recv().await {
        let result = match &target {
            Ok(target) => match render(receiver.format, &event) {
                Ok(body) => deliver(target, &receiver, body, &policy).await,
                Err(e) => Err(format!("cannot encode the event: {e}")),
            },
            Err(e) => Err(e.clone()),
        };
        if let Err(e) = result {
            shared.fail(&receiver.url, e);
        }
        shared.done();
    }
}

async fn deliver(
    target: &Target,
    receiver: &Receiver,
    body: Vec<u8>,
    policy: &RetryPolicy,
) -> Result<(), String> {
    let tries = policy.tries.max(1);
    let mut last_error = String::new();
    for attempt in 0..tries {
        if attempt > 0 {
            let i = (attempt as usize - 1).min(policy.backoff.len().saturating_sub(1));
            if let Some(wait) = policy.backoff.get(i) {
                tokio::time::sleep(*wait).await;
            }
        }
        let mut request = target
            .client
            .post(target.url.clone())
            .header("content-type", "application/json")
            .body(body.clone());
        for (name, value) in &receiver.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        match tokio::time::timeout(policy.timeout, request.send()).await {
            Ok(Ok(response)) if response.status().is_success() => return Ok(()),
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                last_error = if response.status().is_redirection() {
                    format!(
                        "the receiver answered HTTP {status} (a redirect that was not followed)"
                    )
                } else {
                    format!("the receiver answered HTTP {status}")
                };
                let retryable = status >= 500 || status == 408 || status == 429;
                if !retryable {
                    return Err(format!("{last_error} (not retried)"));
                }
            }
            Ok(Err(e)) => {
                let host = cutover_http::origin(&target.url);
                match classify(&e) {
                    Failure::Certificate(why) => {
                        return Err(format!(
                            "{host}: its TLS certificate is not trusted: {why} (not retried)\n\
                             hint: give this [[notify]] a ca_bundle with the CA that signed it"
                        ))
                    }
                    Failure::NoTls => {
                        return Err(format!(
                            "{host} does not speak TLS (not retried)\n\
                             hint: write its url with http:// if it is a plain HTTP receiver"
                        ))
                    }
                    Failure::Redirect(why) => return Err(format!("{why} (not retried)")),
                    Failure::Refused => {
                        last_error = format!("cannot connect to {host}: connection refused")
                    }
                    Failure::Timeout => {
                        last_error = format!("no response within {} ms", policy.timeout.as_millis())
                    }
                    other => last_error = format!("request to {host} failed: {other}"),
                }
            }
            Err(_) => last_error = format!("no response within {} ms", policy.timeout.as_millis()),
        }
    }
    Err(format!(
        "{last_error} (gave up after {tries} {})",
        if tries == 1 { "try" } else { "tries" }
    ))
}

/// An `http://` or `https://` URL without credentials.
fn check_url(url: &str) -> Result<cutover_http::reqwest::Url, String> {
    let shown = redact(url);
    let parsed =
        cutover_http::reqwest::Url::parse(url).map_err(|e| format!("{shown}: not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{shown}: not an http(s) URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{shown}: no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "{shown}: credentials in a notification URL are not supported (use headers)"
        ));
    }
    Ok(parsed)
}

/// The body a receiver of `format` is sent.
pub fn render(format: Format, event: &Notification) -> Result<Vec<u8>, serde_json::Error> {
    match format {
        Format::Json => serde_json::to_vec(event),
        Format::Slack => serde_json::to_vec(&json!({ "text": summary(event) })),
        Format::Teams => serde_json::to_vec(&json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        { "type": "TextBlock", "text": summary(event), "weight": "Bolder", "wrap": true },
                        { "type": "FactSet", "facts": facts(event)
                            .into_iter()
                            .map(|(title, value)| json!({ "title": title, "value": value }))
                            .collect::<Vec<_>>() },
                    ],
                },
            }],
        })),
    }
}

/// One line saying what happened, in cutover's words.
pub fn summary(event: &Notification) -> String {
    match event {
        Notification::Release(e) => {
            let release = format!("release {} ({})", e.release, short(&e.version));
            let what = match e.state.as_str() {
                "live" => format!("{release} is live in {}", e.environment),
                "failed" => format!("{release} failed in {}", e.environment),
                "rolled-back" => format!("{release} was rolled back in {}", e.environment),
                "awaiting-approval" => {
                    format!("{release} awaits approval for {}", e.environment)
                }
                state => format!("{release} in {}: {state}", e.environment),
            };
            match &e.reason {
                Some(reason) => format!("{}: {what}: {reason}", e.app),
                None => format!("{}: {what}", e.app),
            }
        }
        Notification::PipelineRun(e) => format!(
            "{}: pipeline run {} for {} ({}) {}: {}",
            e.app,
            e.run,
            short(&e.sha),
            e.trigger,
            e.state,
            e.message
        ),
        Notification::Certificate(e) => {
            let serving = match e.not_after {
                Some(t) => format!(
                    "the certificate valid until {} keeps serving",
                    t.format("%Y-%m-%d %H:%M UTC")
                ),
                None => "no certificate serves it yet".to_string(),
            };
            format!(
                "{}: the certificate of {} ({}) could not be obtained by ACME: {}; {serving}",
                e.app, e.host, e.environment, e.error
            )
        }
    }
}

fn facts(event: &Notification) -> Vec<(&'static str, String)> {
    match event {
        Notification::Release(e) => {
            let mut facts = vec![
                ("App", e.app.clone()),
                ("Environment", e.environment.clone()),
                ("Release", e.release.to_string()),
                ("Version", short(&e.version).to_string()),
                ("State", e.state.clone()),
                ("Digest", e.digest.clone()),
                ("At", e.at.to_rfc3339()),
            ];
            if let Some(reason) = &e.reason {
                facts.push(("Reason", reason.clone()));
            }
            facts
        }
        Notification::PipelineRun(e) => vec![
            ("App", e.app.clone()),
            ("Pipeline run", e.run.to_string()),
            ("Commit", short(&e.sha).to_string()),
            ("Trigger", e.trigger.clone()),
            ("Requested by", e.requested_by.clone()),
            ("State", e.state.clone()),
            ("Reason", e.message.clone()),
            ("At", e.at.to_rfc3339()),
        ],
        Notification::Certificate(e) => vec![
            ("App", e.app.clone()),
            ("Environment", e.environment.clone()),
            ("Host", e.host.clone()),
            (
                "Serving until",
                e.not_after
                    .map_or_else(|| "nothing serves it".into(), |t| t.to_rfc3339()),
            ),
            ("Error", e.error.clone()),
            ("At", e.at.to_rfc3339()),
        ],
    }
}

/// The 12 characters a version is shown by.
fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

/// A URL as it may be shown: credentials and the query string (where tokens tend to live)
/// masked.
pub fn redact(url: &str) -> String {
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

    #[test]
    fn refuses_unusable_urls_clearly() {
        assert!(check_url("https://example.com/hook").is_ok());
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_url("ftp://x")
            .unwrap_err()
            .contains("not an http(s) URL"));
        assert!(check_url("http://:80/").is_err());
        assert!(check_url("http://h:99999/").is_err());
        let e = check_url("http://user:hunter2@h/").unwrap_err();
        assert!(!e.contains("hunter2") && e.contains("headers"), "{e}");
    }

    #[test]
    fn redacts_credentials_and_queries() {
        assert_eq!(redact("http://h:1/p"), "http://h:1/p");
        assert_eq!(redact("http://h/p?token=s3cret"), "http://h/p?…");
        assert_eq!(redact("http://u:pw@h/p"), "http://…@h/p");
    }

    #[test]
    fn a_receivers_debug_hides_header_values() {
        let r = Receiver {
            headers: vec![("Authorization".into(), "Bearer s3cret".into())],
            ..Receiver::json("https://h/hook?key=s3cret")
        };
        let shown = format!("{r:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("Authorization"), "{shown}");
    }
}
