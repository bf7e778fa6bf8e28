//! cutover-http: the one HTTP client stack of cutover for everything that talks HTTP out —
//! registries, notification receivers, health probes, and (next) remote servers.
//!
//! A [`ClientOptions`] says how to trust the peer and how to behave; [`client`] builds the
//! `reqwest` client for it (rustls only: the system's roots plus Mozilla's, an optional extra CA
//! bundle, or no verification at all for instances with self-signed certificates), with
//! timeouts and a redirect policy that never follows a redirect to another host. [`Failure`]
//! sorts what went wrong into what a person can act on: a certificate that is not trusted (and
//! why), a peer that speaks no TLS, nobody listening, no answer in time, a refused redirect.
//!
//! Architecture invariant: no other crate of cutover opens an outgoing HTTP connection by hand
//! (the engine API over its unix socket and the proxy's data path aside).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use reqwest;
pub use reqwest::{Client, Method, Response, StatusCode};

/// The `User-Agent` cutover sends everywhere.
pub const USER_AGENT: &str = concat!("cutover/", env!("CARGO_PKG_VERSION"));

/// How the peer's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verify {
    /// The system's roots and Mozilla's, plus the PEM bundle if one is given.
    Roots { ca_bundle: Option<PathBuf> },
    /// Any certificate is accepted (health probes of instances with self-signed ones; a
    /// registry the user marked `insecure`).
    Nothing,
    /// Exactly the certificate with this fingerprint (`sha256:<hex>`), whatever its name or
    /// issuer: a cutover server's own certificate, pinned by `cutover login`.
    Pinned { fingerprint: String },
}

/// How a client behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub verify: Verify,
    /// Connecting (TCP and TLS) may take this long.
    pub connect_timeout: Duration,
    /// A whole request may take this long (`None`: no limit beyond the connect timeout).
    pub timeout: Option<Duration>,
    /// Redirects followed, to the same host only (0: none).
    pub max_redirects: usize,
    /// Keep idle connections for reuse (`false`: every request opens a fresh connection).
    pub pool: bool,
    /// Honour `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY`, loopback addresses always
    /// excepted (never at all for probes of local instances).
    pub proxy_from_env: bool,
}

impl Default for ClientOptions {
    /// Verified against the system's roots, 10 s to connect, 30 s per request, up to 5
    /// same-host redirects, pooled, proxies from the environment.
    fn default() -> ClientOptions {
        ClientOptions {
            verify: Verify::Roots { ca_bundle: None },
            connect_timeout: Duration::from_secs(10),
            timeout: Some(Duration::from_secs(30)),
            max_redirects: 5,
            pool: true,
            proxy_from_env: true,
        }
    }
}

impl ClientOptions {
    /// The defaults, trusting `ca_bundle` too when given.
    pub fn verified(ca_bundle: Option<&Path>) -> ClientOptions {
        ClientOptions {
            verify: Verify::Roots {
                ca_bundle: ca_bundle.map(Path::to_path_buf),
            },
            ..ClientOptions::default()
        }
    }
}

/// A client could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("CA bundle {}: {detail}", path.display())]
    CaBundle { path: PathBuf, detail: String },
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// Builds the client `options` describe.
pub fn client(options: &ClientOptions) -> Result<Client, BuildError> {
    let mut builder = Client::builder()
        .use_rustls_tls()
        .user_agent(USER_AGENT)
        .connect_timeout(options.connect_timeout)
        .redirect(same_host_redirects(options.max_redirects));
    if let Some(t) = options.timeout {
        builder = builder.timeout(t);
    }
    if !options.pool {
        builder = builder.pool_max_idle_per_host(0);
    }
    // No system proxy discovery: the environment's proxies, if asked for, are added below,
    // never for loopback addresses (as Go's, and so Docker's, ProxyFromEnvironment).
    builder = builder.no_proxy();
    if options.proxy_from_env {
        for proxy in env_proxies() {
            builder = builder.proxy(proxy);
        }
    }
    match &options.verify {
        Verify::Nothing => builder = builder.danger_accept_invalid_certs(true),
        Verify::Roots {
            ca_bundle: Some(path),
        } => {
            for cert in read_bundle(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Verify::Roots { ca_bundle: None } => {}
        Verify::Pinned { fingerprint } => {
            builder = builder.use_preconfigured_tls(pin::pinned_config(fingerprint));
        }
    }
    builder.build().map_err(|e| BuildError::Client(chain(&e)))
}

/// `HTTPS_PROXY`, `HTTP_PROXY` and `ALL_PROXY` (or their lower-case names), each bypassed for
/// `NO_PROXY` and for loopback addresses. A proxy URL that does not parse is ignored.
fn env_proxies() -> Vec<reqwest::Proxy> {
    let var = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
    };
    let mut bypass = "127.0.0.0/8,::1,localhost".to_string();
    if let Some(more) = var(["NO_PROXY", "no_proxy"]) {
        bypass = format!("{bypass},{more}");
    }
    let no_proxy = || reqwest::NoProxy::from_string(&bypass);
    let mut proxies = Vec::new();
    if let Some(p) = var(["HTTPS_PROXY", "https_proxy"]) {
        proxies.extend(
            reqwest::Proxy::https(&p)
                .ok()
                .map(|p| p.no_proxy(no_proxy())),
        );
    }
    if let Some(p) = var(["HTTP_PROXY", "http_proxy"]) {
        proxies.extend(
            reqwest::Proxy::http(&p)
                .ok()
                .map(|p| p.no_proxy(no_proxy())),
        );
    }
    if let Some(p) = var(["ALL_PROXY", "all_proxy"]) {
        proxies.extend(reqwest::Proxy::all(&p).ok().map(|p| p.no_proxy(no_proxy())));
    }
    proxies
}

/// The certificates of a PEM bundle; an unreadable file or one without a certificate is an
/// error naming the file.
pub fn read_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, BuildError> {
    let err = |detail: String| BuildError::CaBundle {
        path: path.to_path_buf(),
        detail,
    };
    let pem = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| err(format!("not a PEM bundle: {}", chain(&e))))?;
    if certs.is_empty() {
        return Err(err(
            "holds no certificate (expected -----BEGIN CERTIFICATE----- blocks)".into(),
        ));
    }
    Ok(certs)
}

/// The redirect refused because it leads to another host than the request's.
#[derive(Debug)]
struct CrossHostRedirect {
    to: String,
}

impl fmt::Display for CrossHostRedirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redirected to another host ({})", self.to)
    }
}

impl std::error::Error for CrossHostRedirect {}

fn same_host_redirects(max: usize) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        let first = attempt.previous().first().cloned();
        let same = first.as_ref().is_some_and(|f| {
            f.host_str() == attempt.url().host_str()
                && f.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if !same {
            let to = origin(attempt.url());
            attempt.error(CrossHostRedirect { to })
        } else if attempt.previous().len() > max {
            attempt.error(format!("more than {max} redirects"))
        } else {
            attempt.follow()
        }
    })
}

/// `scheme://host[:port]` of a URL, without path, query or credentials (safe to show).
pub fn origin(url: &reqwest::Url) -> String {
    match url.port() {
        Some(p) => format!("{}://{}:{p}", url.scheme(), url.host_str().unwrap_or("")),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or("")),
    }
}

/// What went wrong with a request, sorted into what a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The peer's certificate is not trusted; the text says why (another name, expired,
    /// unknown CA, …).
    Certificate(String),
    /// The peer answered the TLS handshake with something that is not TLS (plain HTTP).
    NoTls,
    /// Nobody listens there (connection refused).
    Refused,
    /// No answer in time.
    Timeout,
    /// The host name does not resolve.
    Dns(String),
    /// A redirect to another host was not followed.
    Redirect(String),
    /// Anything else, as text.
    Other(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Certificate(why) => write!(f, "its TLS certificate is not trusted: {why}"),
            Failure::NoTls => f.write_str("it does not speak TLS (plain HTTP?)"),
            Failure::Refused => f.write_str("connection refused (nothing listens there)"),
            Failure::Timeout => f.write_str("no answer in time"),
            Failure::Dns(detail) => write!(f, "the host name does not resolve: {detail}"),
            Failure::Redirect(detail) => {
                write!(f, "{detail}; redirects to another host are not followed")
            }
            Failure::Other(detail) => f.write_str(detail),
        }
    }
}

/// Sorts a request error.
pub fn classify(e: &reqwest::Error) -> Failure {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<CrossHostRedirect>() {
            return Failure::Redirect(r.to_string());
        }
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return tls_failure(t);
        }
        // io::Errors wrap io::Errors wrap rustls' error; io::Error::source skips a level.
        let mut io = err.downcast_ref::<std::io::Error>();
        while let Some(e) = io {
            match e.kind() {
                std::io::ErrorKind::ConnectionRefused => return Failure::Refused,
                std::io::ErrorKind::TimedOut => return Failure::Timeout,
                _ => {}
            }
            let inner = e.get_ref();
            if let Some(t) = inner.and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return tls_failure(t);
            }
            io = inner.and_then(|i| i.downcast_ref::<std::io::Error>());
        }
        cur = err.source();
    }
    if e.is_timeout() {
        return Failure::Timeout;
    }
    let text = chain(e);
    if text.contains("dns error") || text.contains("failed to lookup address") {
        return Failure::Dns(text);
    }
    if e.is_redirect() {
        return Failure::Redirect(text);
    }
    Failure::Other(text)
}

fn tls_failure(e: &rustls::Error) -> Failure {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidMessage(_) => Failure::NoTls,
        rustls::Error::InvalidCertificate(c) => Failure::Certificate(match c {
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "it is issued for another name".to_string()
            }
            C::Expired | C::ExpiredContext { .. } => "it has expired".to_string(),
            C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".to_string(),
            C::UnknownIssuer => "it is signed by an unknown CA".to_string(),
            C::Revoked => "it is revoked".to_string(),
            C::BadSignature => "its signature is bad".to_string(),
            C::Other(other) => other.to_string(),
            other => format!("{other:?}"),
        }),
        other => Failure::Other(format!("TLS: {other}")),
    }
}

/// An error and its sources, as one line (`a: b: c`), without repeats.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// Whether `host` (`name`, `name:port`, `[v6]:port`) is a loopback address or `localhost`.
pub fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.1.2.3"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("ghcr.io"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn a_bundle_without_certificates_is_named() {
        let dir = std::env::temp_dir().join(format!("cutover-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not pem").unwrap();
        let e = read_bundle(&path).unwrap_err().to_string();
        assert!(
            e.contains("empty.pem") && e.contains("no certificate"),
            "{e}"
        );
        let e = read_bundle(&dir.join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(feature = "testing")]
pub mod testing;

pub mod pin;
