//! Certificates by ACME (RFC 8555), obtained and renewed by the edge itself (it owns the
//! listeners that answer the challenges): one account per (directory, email), its key 0600 in
//! `<edge dir>/acme/`; one order per host, validated by HTTP-01 on `http_redirect` when the
//! route has one and by TLS-ALPN-01 (RFC 8737) on the TLS listener always; the chain and its
//! key 0600 in `<edge dir>/certs/<host>.crt|.key`, where the [`CertStore`] picks them up. A
//! failed renewal keeps the old certificate serving and is reported by [`Acme::status`].
//!
//! The directory is reached through cutover-http (the one client stack: the system's roots,
//! Mozilla's and `[acme] ca_bundle`), plugged into instant-acme as its HTTP client.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::tls::{self, AlpnChallenges, CertStore, Pair};

/// `[acme]` of the config, as a route carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AcmeSettings {
    pub directory: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Absolute path of a PEM bundle trusted for the directory besides the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    pub renew_before_secs: u64,
}

/// Why a certificate could not be obtained; [`AcmeError::hint`] says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcmeError {
    #[error("the ACME directory {directory} cannot be reached: {detail}")]
    Unreachable { directory: String, detail: String },
    #[error("the ACME directory {directory} refused the order for {host}: {detail}")]
    Refused {
        directory: String,
        host: String,
        detail: String,
    },
    #[error("the CA could not validate {host}: {detail}")]
    Validation { host: String, detail: String },
    #[error("{context}: {detail}")]
    Local { context: String, detail: String },
}

impl AcmeError {
    pub fn hint(&self) -> String {
        match self {
            AcmeError::Unreachable { .. } => {
                "check [acme] directory and that this machine reaches it (a private CA's certificate goes in [acme] ca_bundle)".to_string()
            }
            AcmeError::Refused { host, .. } => format!(
                "check that {host} is a public DNS name the CA issues for, and the CA's rate limits; the old certificate, if any, keeps serving"
            ),
            AcmeError::Validation { host, .. } => format!(
                "point the DNS of {host} at this machine and let the CA reach the TLS listen port (TLS-ALPN-01) or http_redirect on port 80 (HTTP-01)"
            ),
            AcmeError::Local { .. } => {
                "check the edge's directory (CUTOVER_EDGE_DIR): its acme/ and certs/ must be writable".to_string()
            }
        }
    }
}

fn local(context: impl Into<String>) -> impl FnOnce(String) -> AcmeError {
    let context = context.into();
    move |detail| AcmeError::Local { context, detail }
}

/// HTTP-01 key authorizations by token, answered on `http_redirect` listeners at
/// `/.well-known/acme-challenge/TOKEN`.
#[derive(Default)]
pub struct Http01Tokens(Mutex<HashMap<String, String>>);

impl Http01Tokens {
    /// The key authorization for `token`, if a challenge waits for it.
    pub fn get(&self, token: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    fn set(&self, token: &str, value: Option<String>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match value {
            Some(v) => map.insert(token.to_string(), v),
            None => map.remove(token),
        };
    }
}

/// What a host of a `tls = "acme"` route needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub settings: AcmeSettings,
    /// The route has an `http_redirect` listener that answers HTTP-01.
    pub http01: bool,
}

/// The certificate state of one ACME host, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    pub host: String,
    /// notAfter of the certificate that serves, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
    /// The last attempt's error, kept until an attempt succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds since the epoch of the last attempt (issuance or renewal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempted: Option<i64>,
    /// No automatic attempt before this (after a failure).
    #[serde(skip)]
    retry_at: i64,
}

/// After a failed attempt, the next automatic one waits this long (an explicit renew does not).
const RETRY_AFTER_FAILURE: i64 = 300;

/// The edge's ACME client: what the routes want, the challenge answers, the hosts' states.
pub struct Acme {
    acme_dir: PathBuf,
    store: Arc<CertStore>,
    pub http01: Arc<Http01Tokens>,
    pub alpn: Arc<AlpnChallenges>,
    wanted: Mutex<BTreeMap<String, Wanted>>,
    states: Mutex<BTreeMap<String, HostState>>,
    /// One order at a time: the loop and `renew` never race for a host.
    issuing: tokio::sync::Mutex<()>,
    wake: tokio::sync::Notify,
}

impl Acme {
    /// The ACME client of the edge whose directory is `edge_dir` (`acme/` and, through
    /// `store`, `certs/`).
    pub fn new(edge_dir: &Path, store: Arc<CertStore>, alpn: Arc<AlpnChallenges>) -> Acme {
        Acme {
            acme_dir: edge_dir.join("acme"),
            store,
            http01: Arc::new(Http01Tokens::default()),
            alpn,
            wanted: Mutex::new(BTreeMap::new()),
            states: Mutex::new(BTreeMap::new()),
            issuing: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// The hosts of `tls = "acme"` routes from now on; wakes the renewal loop.
    pub fn want(&self, hosts: BTreeMap<String, Wanted>) {
        *lock(&self.wanted) = hosts;
        self.wake.notify_one();
    }

    /// Every wanted host with its certificate's state.
    pub fn status(&self) -> Vec<HostState> {
        let wanted = lock(&self.wanted).clone();
        let states = lock(&self.states).clone();
        wanted
            .keys()
            .map(|host| {
                let mut state = states.get(host).cloned().unwrap_or_default();
                state.host = host.clone();
                state.not_after = self.not_after(host);
                state
            })
            .collect()
    }

    fn not_after(&self, host: &str) -> Option<i64> {
        self.store
            .current(&Pair::acme(self.store.certs_dir(), host))
            .map(|l| l.not_after)
    }

    /// Obtains or renews the certificates that are missing or due, until `stop` resolves.
    /// Wakes when the wanted hosts change, and at least every `tick`.
    pub async fn run(self: Arc<Self>, tick: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let due: Vec<(String, Wanted)> = {
                let now = tls::now();
                let states = lock(&self.states);
                lock(&self.wanted)
                    .iter()
                    .filter(|(host, want)| {
                        let retry_at = states.get(*host).map_or(0, |s| s.retry_at);
                        retry_at <= now && is_due(self.not_after(host), &want.settings, now)
                    })
                    .map(|(h, w)| (h.clone(), w.clone()))
                    .collect()
            };
            for (host, want) in due {
                if let Err(e) = self.issue(&host, &want).await {
                    eprintln!(
                        "edge: ACME for {host}: {e}{}",
                        if self.not_after(&host).is_some() {
                            "; the old certificate keeps serving"
                        } else {
                            ""
                        }
                    );
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// Obtains a new certificate for `host` now (`cutover edge renew HOST`), whether or not
    /// it is due. Returns the new certificate's notAfter.
    pub async fn renew(&self, host: &str) -> Result<i64, RenewError> {
        let want = lock(&self.wanted)
            .get(&host.to_ascii_lowercase())
            .cloned()
            .ok_or(RenewError::NotAcme)?;
        self.issue(host, &want).await.map_err(RenewError::Acme)
    }

    /// One order for `host`, recorded in its state either way.
    async fn issue(&self, host: &str, want: &Wanted) -> Result<i64, AcmeError> {
        let _one = self.issuing.lock().await;
        let now = tls::now();
        let result = self.order(host, want).await;
        let mut states = lock(&self.states);
        let state = states.entry(host.to_string()).or_default();
        state.attempted = Some(now);
        match &result {
            Ok(_) => {
                state.error = None;
                state.retry_at = 0;
            }
            Err(e) => {
                state.error = Some(e.to_string());
                state.retry_at = now + RETRY_AFTER_FAILURE;
            }
        }
        result
    }

    async fn order(&self, host: &str, want: &Wanted) -> Result<i64, AcmeError> {
        let settings = &want.settings;
        let directory = settings.directory.clone();
        let account = self.account(settings).await?;
        let identifiers = [Identifier::Dns(host.to_string())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| sort(e, &directory, host))?;

        // Answer each pending authorization: HTTP-01 where an http_redirect listens, else
        // TLS-ALPN-01 on the TLS listener.
        let mut answered: Vec<Answer> = Vec::new();
        let mut authorizations = order.authorizations();
        let mut failed = None;
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| sort(e, &directory, host))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    failed = Some(format!("its authorization is {other:?}"));
                    break;
                }
            }
            let kind = if want.http01 {
                ChallengeType::Http01
            } else {
                ChallengeType::TlsAlpn01
            };
            let Some(mut challenge) = authz.challenge(kind.clone()) else {
                failed = Some(format!("the CA offers no {kind:?} challenge"));
                break;
            };
            let key_auth = challenge.key_authorization();
            match kind {
                ChallengeType::Http01 => {
                    self.http01
                        .set(&challenge.token, Some(key_auth.as_str().to_string()));
                    answered.push(Answer::Token(challenge.token.clone()));
                }
                _ => {
                    let cert = alpn_certificate(host, key_auth.digest().as_ref())?;
                    self.alpn.set(host, Some(cert));
                    answered.push(Answer::Alpn(host.to_string()));
                }
            }
            challenge
                .set_ready()
                .await
                .map_err(|e| sort(e, &directory, host))?;
        }
        let result = match failed {
            Some(detail) => Err(AcmeError::Refused {
                directory: directory.clone(),
                host: host.to_string(),
                detail,
            }),
            None => self.finish(&mut order, host, &directory).await,
        };
        for answer in answered {
            match answer {
                Answer::Token(t) => self.http01.set(&t, None),
                Answer::Alpn(h) => self.alpn.set(&h, None),
            }
        }
        result
    }

    /// Waits for the validation, sends the CSR and stores what the CA issued.
    async fn finish(
        &self,
        order: &mut instant_acme::Order,
        host: &str,
        directory: &str,
    ) -> Result<i64, AcmeError> {
        let retries = RetryPolicy::default().timeout(Duration::from_secs(60));
        let status = order
            .poll_ready(&retries)
            .await
            .map_err(|e| validation(e, host, directory))?;
        if status != OrderStatus::Ready {
            let mut detail = format!("the order is {status:?}");
            let mut authorizations = order.authorizations();
            while let Some(Ok(authz)) = authorizations.next().await {
                if let Some(problem) = authz.challenges.iter().find_map(|c| c.error.as_ref()) {
                    detail = problem_text(problem);
                }
            }
            return Err(AcmeError::Validation {
                host: host.to_string(),
                detail,
            });
        }
        let key = rcgen::KeyPair::generate().map_err(|e| local("a key")(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec![host.to_string()])
            .map_err(|e| local("a CSR")(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| local("a CSR")(e.to_string()))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| sort(e, directory, host))?;
        let chain = order
            .poll_certificate(&retries)
            .await
            .map_err(|e| sort(e, directory, host))?;
        let pair = Pair::acme(self.store.certs_dir(), host);
        // The key first: a poll between the two writes sees a new key with the old chain,
        // refuses the pair and keeps serving the old one until the chain is there too.
        cutover_daemon::write_private(&pair.key, key.serialize_pem().as_bytes())
            .map_err(|e| local(format!("writing {}", pair.key.display()))(e.to_string()))?;
        cutover_daemon::write_private(&pair.cert, chain.as_bytes())
            .map_err(|e| local(format!("writing {}", pair.cert.display()))(e.to_string()))?;
        self.store.refresh();
        let loaded =
            tls::load_pair(&pair).map_err(|e| local("the issued certificate")(e.to_string()))?;
        eprintln!(
            "edge: ACME issued a certificate for {host}, valid until {}",
            chrono::DateTime::from_timestamp(loaded.not_after, 0)
                .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        );
        Ok(loaded.not_after)
    }

    /// The account of (directory, email): kept in `acme/`, created on first use.
    async fn account(&self, settings: &AcmeSettings) -> Result<Account, AcmeError> {
        let path = self.acme_dir.join(account_file(settings));
        let http = || -> Result<Box<dyn HttpClient>, AcmeError> {
            let options = cutover_http::ClientOptions::verified(settings.ca_bundle.as_deref());
            let client = cutover_http::client(&options).map_err(|e| AcmeError::Unreachable {
                directory: settings.directory.clone(),
                detail: e.to_string(),
            })?;
            Ok(Box::new(ViaCutoverHttp(client)))
        };
        if let Ok(text) = std::fs::read(&path) {
            if let Ok(stored) = serde_json::from_slice::<StoredAccount>(&text) {
                return Account::builder_with_http(http()?)
                    .from_credentials(stored.credentials)
                    .await
                    .map_err(|e| sort(e, &settings.directory, ""));
            }
        }
        let contact: Vec<String> = settings
            .email
            .iter()
            .map(|e| format!("mailto:{e}"))
            .collect();
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = Account::builder_with_http(http()?)
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                settings.directory.clone(),
                None,
            )
            .await
            .map_err(|e| sort(e, &settings.directory, ""))?;
        let stored = StoredAccount {
            directory: settings.directory.clone(),
            email: settings.email.clone(),
            credentials,
        };
        let text =
            serde_json::to_vec_pretty(&stored).map_err(|e| local("the account")(e.to_string()))?;
        cutover_daemon::write_private(&path, &text)
            .map_err(|e| local(format!("writing {}", path.display()))(e.to_string()))?;
        Ok(account)
    }
}

/// Whether `settings.directory` answers as an ACME directory (a deploy checks it before it
/// starts anything, so that a wrong or unreachable directory is refused up front).
pub async fn check_directory(settings: &AcmeSettings) -> Result<(), AcmeError> {
    let unreachable = |detail: String| AcmeError::Unreachable {
        directory: settings.directory.clone(),
        detail,
    };
    let options = cutover_http::ClientOptions {
        timeout: Some(Duration::from_secs(10)),
        ..cutover_http::ClientOptions::verified(settings.ca_bundle.as_deref())
    };
    let client = cutover_http::client(&options).map_err(|e| unreachable(e.to_string()))?;
    let response = client
        .get(&settings.directory)
        .send()
        .await
        .map_err(|e| unreachable(cutover_http::classify(&e).to_string()))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| unreachable(cutover_http::classify(&e).to_string()))?;
    let directory = serde_json::from_slice::<serde_json::Value>(&body).ok();
    let is_acme = directory
        .as_ref()
        .is_some_and(|d| d.get("newOrder").is_some() && d.get("newAccount").is_some());
    if status.is_success() && is_acme {
        Ok(())
    } else {
        Err(unreachable(format!(
            "it answered {status} with no ACME directory (newAccount, newOrder)"
        )))
    }
}

/// Why `cutover edge renew HOST` did not renew.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenewError {
    #[error("no route of this edge gets its certificate for that host by ACME")]
    NotAcme,
    #[error(transparent)]
    Acme(AcmeError),
}

enum Answer {
    Token(String),
    Alpn(String),
}

#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    email: Option<String>,
    credentials: AccountCredentials,
}

/// `account-<16 hex of sha256(directory, email)>.json`.
fn account_file(settings: &AcmeSettings) -> String {
    let mut h = Sha256::new();
    h.update(settings.directory.as_bytes());
    h.update([0]);
    h.update(settings.email.as_deref().unwrap_or("").as_bytes());
    format!("account-{}.json", &hex::encode(h.finalize())[..16])
}

/// Whether a certificate ending at `not_after` (none: missing) must be renewed at `now`.
pub fn is_due(not_after: Option<i64>, settings: &AcmeSettings, now: i64) -> bool {
    match not_after {
        None => true,
        Some(end) => end - now <= i64::try_from(settings.renew_before_secs).unwrap_or(i64::MAX),
    }
}

/// The TLS-ALPN-01 certificate of RFC 8737: self-signed for `host`, with the critical
/// acmeIdentifier extension holding the SHA-256 of the key authorization.
fn alpn_certificate(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let fail = |e: String| local("the TLS-ALPN-01 certificate")(e);
    let key = rcgen::KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(vec![host.to_string()]).map_err(|e| fail(e.to_string()))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| fail(e.to_string()))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = tls::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| fail(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signing,
    )))
}

/// A transport failure of the HTTP client, as cutover-http words it.
#[derive(Debug)]
struct Transport(String);

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Transport {}

fn problem_text(p: &instant_acme::Problem) -> String {
    let mut text = p.detail.clone().unwrap_or_else(|| "no detail".to_string());
    if let Some(kind) = &p.r#type {
        text.push_str(&format!(
            " ({})",
            kind.trim_start_matches("urn:ietf:params:acme:error:")
        ));
    }
    for sub in &p.subproblems {
        if let Some(d) = &sub.detail {
            text.push_str(&format!("; {d}"));
        }
    }
    text
}

/// Sorts an instant-acme error: the directory not reached, or it said no.
fn sort(e: instant_acme::Error, directory: &str, host: &str) -> AcmeError {
    match e {
        instant_acme::Error::Other(inner) if inner.is::<Transport>() => AcmeError::Unreachable {
            directory: directory.to_string(),
            detail: inner.to_string(),
        },
        instant_acme::Error::Api(problem) => AcmeError::Refused {
            directory: directory.to_string(),
            host: if host.is_empty() {
                "the account".to_string()
            } else {
                host.to_string()
            },
            detail: problem_text(&problem),
        },
        other => AcmeError::Refused {
            directory: directory.to_string(),
            host: if host.is_empty() {
                "the account".to_string()
            } else {
                host.to_string()
            },
            detail: other.to_string(),
        },
    }
}

/// An error while waiting for validation: the CA's problem is about the challenge.
fn validation(e: instant_acme::Error, host: &str, directory: &str) -> AcmeError {
    match e {
        instant_acme::Error::Api(problem) => AcmeError::Validation {
            host: host.to_string(),
            detail: problem_text(&problem),
        },
        other => sort(other, directory, host),
    }
}

/// instant-acme's HTTP client on cutover-http's reqwest client.
struct ViaCutoverHttp(cutover_http::Client);

impl HttpClient for ViaCutoverHttp {
    fn request(
        &self,
        req: hyper::http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| {
                    instant_acme::Error::Other(Box::new(Transport(
                        cutover_http::classify(&e).to_string(),
                    )))
                })?;
            let mut builder = hyper::http::Response::builder().status(response.status());
            if let Some(headers) = builder.headers_mut() {
                *headers = response.headers().clone();
            }
            let bytes = response.bytes().await.map_err(|e| {
                instant_acme::Error::Other(Box::new(Transport(
                    cutover_http::classify(&e).to_string(),
                )))
            })?;
            let response = builder
                .body(Full::new(bytes))
                .map_err(instant_acme::Error::Http)?;
            Ok(BytesResponse::from(response))
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_due_when_missing_or_within_renew_before() {
        let settings = AcmeSettings {
            directory: "https://acme.example/dir".into(),
            email: None,
            ca_bundle: None,
            renew_before_secs: 30 * 86_400,
        };
        let now = 1_000_000_000;
        assert!(is_due(None, &settings, now));
        assert!(is_due(Some(now + 29 * 86_400), &settings, now));
        assert!(!is_due(Some(now + 31 * 86_400), &settings, now));
        // One account per (directory, email).
        let other = AcmeSettings {
            email: Some("ops@example.com".into()),
            ..settings.clone()
        };
        assert_ne!(account_file(&settings), account_file(&other));
        assert_eq!(account_file(&other), account_file(&other.clone()));
    }
}
