//! HTTPS at the edge: certificates from PEM files — the user's own, or the ones ACME wrote
//! into the edge's `certs/` — checked when a route asks for them (missing, unreadable, not
//! PEM, expired, not the key's, not covering a host: each a [`CertError`] naming the field and
//! the fix), picked by SNI (exact host, then a wildcard of one label), and reloaded when they
//! change on disk: a bad new file keeps the old certificate serving and the edge logs why.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use serde::{Deserialize, Serialize};

/// ALPN protocol names the edge offers, in its order of preference.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// RFC 8737: a TLS-ALPN-01 validation; answered with the challenge certificate, then closed.
pub const ALPN_ACME: &[u8] = b"acme-tls/1";

/// Where a route's certificate comes from (`tls` of an environment, paths made absolute).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TlsSource {
    /// The user's PEM files.
    Files { cert: PathBuf, key: PathBuf },
    /// Issued by ACME into the edge's `certs/` dir, one pair per host.
    Acme,
}

/// A certificate chain and the private key that goes with it, as two files.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    /// Where ACME keeps the certificate of `host` in `certs_dir`.
    pub fn acme(certs_dir: &Path, host: &str) -> Pair {
        Pair {
            cert: certs_dir.join(format!("{host}.crt")),
            key: certs_dir.join(format!("{host}.key")),
        }
    }
}

/// A certificate chain and its key, ready to serve.
#[derive(Debug)]
pub struct Loaded {
    pub certified: Arc<CertifiedKey>,
    /// The DNS names of the leaf's subjectAltName, lowercase.
    pub names: Vec<String>,
    /// The leaf's notAfter, in seconds since the epoch.
    pub not_after: i64,
    contents: Contents,
}

/// The bytes of both files, as read: what tells a changed pair (modification times are too
/// coarse for two writes in one clock tick).
type Contents = (Vec<u8>, Vec<u8>);

fn contents(pair: &Pair) -> Option<Contents> {
    Some((
        std::fs::read(&pair.cert).ok()?,
        std::fs::read(&pair.key).ok()?,
    ))
}

/// Why a certificate or key cannot serve; [`CertError::field`] and [`CertError::hint`] say
/// which key of the config and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("{} does not exist", path.display())]
    Missing { field: &'static str, path: PathBuf },
    #[error("{} cannot be read: {detail}", path.display())]
    Unreadable {
        field: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key (-----BEGIN PRIVATE KEY-----)", path.display())]
    NoKey { path: PathBuf },
    #[error("the certificate in {} cannot be read: {detail}", path.display())]
    BadCertificate { path: PathBuf, detail: String },
    #[error("the key in {} cannot be used: {detail}", path.display())]
    BadKey { path: PathBuf, detail: String },
    #[error("the certificate in {} expired on {on}", path.display())]
    Expired { path: PathBuf, on: String },
    #[error("the key in {} does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the certificate in {} does not cover {host} (it covers {})", path.display(), names_list(names))]
    NotCovered {
        path: PathBuf,
        host: String,
        names: Vec<String>,
    },
}

fn names_list(names: &[String]) -> String {
    if names.is_empty() {
        "no name: it has no subjectAltName".to_string()
    } else {
        names.join(", ")
    }
}

impl CertError {
    /// The config key at fault, relative to the environment: `tls.cert`, `tls.key`, `hosts`.
    pub fn field(&self) -> &'static str {
        match self {
            CertError::Missing { field, .. } | CertError::Unreadable { field, .. } => field,
            CertError::NoKey { .. } | CertError::BadKey { .. } | CertError::KeyMismatch { .. } => {
                "tls.key"
            }
            CertError::NotCovered { .. } => "hosts",
            _ => "tls.cert",
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            CertError::Missing { field, .. } => format!(
                "put the {} there, or change {field}",
                if *field == "tls.key" { "private key (PEM)" } else { "certificate chain (PEM, leaf first)" }
            ),
            CertError::Unreadable { .. } => {
                "make the file readable by the user the cutover server runs as".to_string()
            }
            CertError::NoCertificate { .. } | CertError::BadCertificate { .. } => {
                "give the certificate chain in PEM, leaf first (from DER: openssl x509 -inform der -in FILE -out FILE.pem)".to_string()
            }
            CertError::NoKey { .. } | CertError::BadKey { .. } => {
                "give the certificate's private key in PEM: PKCS#8, RSA or EC (P-256, P-384), or Ed25519".to_string()
            }
            CertError::Expired { .. } => {
                "renew the certificate and replace the file (the edge reloads it), or use tls = \"acme\"".to_string()
            }
            CertError::KeyMismatch { .. } => {
                "give the private key the certificate was issued for, or the certificate of this key".to_string()
            }
            CertError::NotCovered { host, .. } => format!(
                "use a certificate that names {host} (in its subjectAltName), or remove {host} from hosts"
            ),
        }
    }
}

/// The crypto provider of the edge (ring, as the rest of cutover).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, field: &'static str) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CertError::Missing {
            field,
            path: path.to_path_buf(),
        },
        _ => CertError::Unreadable {
            field,
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
    })
}

/// Reads and checks a certificate chain and its key: PEM, a leaf that has not expired, a key
/// that belongs to it.
pub fn load_pair(pair: &Pair) -> Result<Loaded, CertError> {
    let cert_pem = read(&pair.cert, "tls.cert")?;
    let key_pem = read(&pair.key, "tls.key")?;
    parse_pair(pair, (cert_pem, key_pem))
}

fn parse_pair(pair: &Pair, (cert_pem, key_pem): Contents) -> Result<Loaded, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate {
            path: pair.cert.clone(),
        });
    };
    let (names, not_after) = leaf_facts(leaf).map_err(|detail| CertError::BadCertificate {
        path: pair.cert.clone(),
        detail,
    })?;
    if not_after < now() {
        return Err(CertError::Expired {
            path: pair.cert.clone(),
            on: chrono::DateTime::from_timestamp(not_after, 0).map_or_else(
                || not_after.to_string(),
                |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
            ),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| CertError::NoKey {
        path: pair.key.clone(),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::BadKey {
            path: pair.key.clone(),
            detail: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(CertError::KeyMismatch {
                cert: pair.cert.clone(),
                key: pair.key.clone(),
            })
        }
    }
    Ok(Loaded {
        certified: Arc::new(certified),
        names,
        not_after,
        contents: (cert_pem, key_pem),
    })
}

/// [`load_pair`], and the certificate must cover every one of `hosts`.
pub fn check_pair(pair: &Pair, hosts: &[String]) -> Result<Loaded, CertError> {
    let loaded = load_pair(pair)?;
    check_hosts(pair, &loaded, hosts)?;
    Ok(loaded)
}

fn check_hosts(pair: &Pair, loaded: &Loaded, hosts: &[String]) -> Result<(), CertError> {
    match hosts.iter().find(|h| !covers(&loaded.names, h)) {
        Some(host) => Err(CertError::NotCovered {
            path: pair.cert.clone(),
            host: host.clone(),
            names: loaded.names.clone(),
        }),
        None => Ok(()),
    }
}

/// The leaf's DNS names and notAfter.
pub fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

/// Whether a certificate naming `names` is valid for `host` (a `*.` name covers one label).
pub fn covers(names: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    names.iter().any(|n| {
        *n == host
            || n.strip_prefix("*.").is_some_and(|suffix| {
                host.split_once('.').is_some_and(|(label, rest)| {
                    !label.is_empty() && label != "*" && rest == suffix
                })
            })
    })
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What a route of a TLS listener asks for: its hosts (empty: any name this listener is
/// asked for) and where their certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub hosts: Vec<String>,
    pub source: TlsSource,
}

/// Every certificate the edge serves, shared by its TLS listeners: loaded once per pair of
/// files, checked when a route asks for it, reloaded by [`CertStore::refresh`].
pub struct CertStore {
    certs_dir: PathBuf,
    loaded: ArcSwap<HashMap<Pair, Arc<Loaded>>>,
    /// The pairs the routes ask for (refreshed), and the contents of bad files already logged.
    wanted: Mutex<BTreeMap<Pair, Option<Contents>>>,
}

impl CertStore {
    /// A store whose ACME certificates live in `certs_dir`.
    pub fn new(certs_dir: &Path) -> CertStore {
        CertStore {
            certs_dir: certs_dir.to_path_buf(),
            loaded: ArcSwap::from_pointee(HashMap::new()),
            wanted: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn certs_dir(&self) -> &Path {
        &self.certs_dir
    }

    /// The files that serve `host` of a route with `source`.
    pub fn pair(&self, source: &TlsSource, host: &str) -> Pair {
        match source {
            TlsSource::Files { cert, key } => Pair {
                cert: cert.clone(),
                key: key.clone(),
            },
            TlsSource::Acme => Pair::acme(&self.certs_dir, host),
        }
    }

    /// Checks and loads what `sites` ask for, and makes it what the store keeps fresh: files
    /// must load and cover every host of their site (the check of a route change, which a bad
    /// file refuses whole, changing nothing); ACME pairs are loaded when they exist and
    /// awaited otherwise.
    pub fn prepare(&self, sites: &[Site]) -> Result<(), CertError> {
        match self.load_sites(sites, true).into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// [`CertStore::prepare`] for an edge starting with the routes it kept: what loads serves,
    /// and a file that does not is reported and watched until it does.
    pub fn prepare_all(&self, sites: &[Site]) -> Vec<CertError> {
        self.load_sites(sites, false)
    }

    fn load_sites(&self, sites: &[Site], strict: bool) -> Vec<CertError> {
        let mut fresh: Vec<(Pair, Arc<Loaded>)> = Vec::new();
        let mut wanted = BTreeMap::new();
        let mut errors = Vec::new();
        for site in sites {
            match &site.source {
                TlsSource::Files { .. } => {
                    let pair = self.pair(&site.source, "");
                    wanted.insert(pair.clone(), None);
                    let loaded = match self.current(&pair) {
                        Some(l) if contents(&pair).as_ref() == Some(&l.contents) => Ok(l),
                        _ => load_pair(&pair).map(Arc::new),
                    };
                    match loaded.and_then(|l| check_hosts(&pair, &l, &site.hosts).map(|()| l)) {
                        Ok(l) => fresh.push((pair, l)),
                        Err(e) if strict => return vec![e],
                        Err(e) => errors.push(e),
                    }
                }
                TlsSource::Acme => {
                    for host in &site.hosts {
                        let pair = self.pair(&site.source, host);
                        if self.current(&pair).is_none() {
                            if let Ok(l) = load_pair(&pair) {
                                fresh.push((pair.clone(), Arc::new(l)));
                            }
                        }
                        wanted.insert(pair, None);
                    }
                }
            }
        }
        let mut map: HashMap<Pair, Arc<Loaded>> = (**self.loaded.load())
            .iter()
            .filter(|(p, _)| wanted.contains_key(*p))
            .map(|(p, l)| (p.clone(), l.clone()))
            .collect();
        map.extend(fresh);
        self.loaded.store(Arc::new(map));
        *self.wanted.lock().unwrap_or_else(|e| e.into_inner()) = wanted;
        errors
    }

    /// Reloads every wanted pair whose files changed. A pair that no longer loads keeps its
    /// old certificate, and the edge logs why (once per change of the files). Returns the
    /// pairs that were reloaded.
    pub fn refresh(&self) -> Vec<Pair> {
        let mut wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        let mut reloaded = Vec::new();
        let mut map = None;
        for (pair, bad) in wanted.iter_mut() {
            let Some(now) = contents(pair) else {
                continue;
            };
            let current = self.current(pair);
            if current.as_ref().is_some_and(|l| l.contents == now) || bad.as_ref() == Some(&now) {
                continue;
            }
            match parse_pair(pair, now.clone()) {
                Ok(loaded) => {
                    *bad = None;
                    map.get_or_insert_with(|| (**self.loaded.load()).clone())
                        .insert(pair.clone(), Arc::new(loaded));
                    reloaded.push(pair.clone());
                }
                Err(e) => {
                    *bad = Some(now);
                    eprintln!(
                        "edge: {} changed but does not load, {}: {e}",
                        pair.cert.display(),
                        if current.is_some() {
                            "the old certificate keeps serving"
                        } else {
                            "nothing serves its hosts yet"
                        }
                    );
                }
            }
        }
        if let Some(map) = map {
            self.loaded.store(Arc::new(map));
        }
        reloaded
    }

    /// What serves `pair` now.
    pub fn current(&self, pair: &Pair) -> Option<Arc<Loaded>> {
        self.loaded.load().get(pair).cloned()
    }
}

/// TLS-ALPN-01 challenge certificates by host (RFC 8737), served only to a client that asks
/// for `acme-tls/1`.
#[derive(Default)]
pub struct AlpnChallenges(Mutex<HashMap<String, Arc<CertifiedKey>>>);

impl AlpnChallenges {
    pub fn set(&self, host: &str, key: Option<Arc<CertifiedKey>>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match key {
            Some(key) => map.insert(host.to_ascii_lowercase(), key),
            None => map.remove(&host.to_ascii_lowercase()),
        };
    }

    fn get(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .cloned()
    }
}

/// Which pair serves which name on one TLS listener.
#[derive(Debug, Default)]
struct Table {
    exact: HashMap<String, Pair>,
    /// `*.example.com` of a route's hosts, by `example.com`.
    wildcard: HashMap<String, Pair>,
    /// The pair of a route without hosts: it serves whatever name is asked (or none).
    any: Option<Pair>,
}

/// Picks the certificate of one TLS listener by SNI: the exact host, then a wildcard of one
/// label, then a host-less route's. No match, or a host whose certificate does not exist yet:
/// no certificate, and the handshake fails (never another host's certificate).
pub struct Resolver {
    store: Arc<CertStore>,
    challenges: Arc<AlpnChallenges>,
    table: ArcSwap<Table>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    pub fn new(store: Arc<CertStore>, challenges: Arc<AlpnChallenges>) -> Resolver {
        Resolver {
            store,
            challenges,
            table: ArcSwap::from_pointee(Table::default()),
        }
    }

    /// Serves `sites` from now on (they passed [`CertStore::prepare`]).
    pub fn install(&self, sites: &[Site]) {
        let mut table = Table::default();
        for site in sites {
            if site.hosts.is_empty() {
                table.any = Some(self.store.pair(&site.source, ""));
            }
            for host in &site.hosts {
                let pair = self.store.pair(&site.source, host);
                let host = host.to_ascii_lowercase();
                match host.strip_prefix("*.") {
                    Some(suffix) => table.wildcard.insert(suffix.to_string(), pair),
                    None => table.exact.insert(host, pair),
                };
            }
        }
        self.table.store(Arc::new(table));
    }

    fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        let pair = match name.map(str::to_ascii_lowercase) {
            Some(name) => table
                .exact
                .get(&name)
                .or_else(|| {
                    let (_, suffix) = name.split_once('.')?;
                    table.wildcard.get(suffix)
                })
                .or(table.any.as_ref()),
            None => table.any.as_ref(),
        }?;
        self.store.current(pair).map(|l| l.certified.clone())
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ALPN_ACME));
        if acme {
            return self
                .challenges
                .get(&hello.server_name()?.to_ascii_lowercase());
        }
        self.pick(hello.server_name())
    }
}

/// The rustls configuration of a TLS listener: TLS 1.2 and 1.3, ALPN h2, http/1.1 and
/// acme-tls/1, certificates from `resolver`.
pub fn server_config(resolver: Arc<Resolver>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec(), ALPN_ACME.to_vec()];
    Ok(Arc::new(config))
}

/// A client connection after its TLS handshake.
pub enum Accepted<IO> {
    /// HTTP is served on it: HTTP/2 when ALPN chose `h2`, else HTTP/1.1.
    Http {
        stream: Box<tokio_rustls::server::TlsStream<IO>>,
        /// The name the client asked for (SNI), lowercase.
        server_name: Option<Arc<str>>,
        h2: bool,
    },
    /// An ACME TLS-ALPN-01 validation: the handshake was all it wanted.
    Challenge,
}

/// Runs the TLS handshake of a client connection, within `limit`. An error is the client's
/// (no certificate for its name, no common protocol, too slow); the edge only closes.
pub async fn accept<IO>(
    acceptor: &tokio_rustls::TlsAcceptor,
    io: IO,
    limit: std::time::Duration,
) -> Result<Accepted<IO>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let stream = tokio::time::timeout(limit, acceptor.accept(io))
        .await
        .map_err(|_| "the TLS handshake took too long".to_string())?
        .map_err(|e| e.to_string())?;
    let (_, conn) = stream.get_ref();
    match conn.alpn_protocol() {
        Some(ALPN_ACME) => Ok(Accepted::Challenge),
        alpn => {
            let h2 = alpn == Some(ALPN_H2);
            let server_name = conn
                .server_name()
                .map(|n| Arc::from(n.to_ascii_lowercase()));
            Ok(Accepted::Http {
                stream: Box::new(stream),
                server_name,
                h2,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_covers_one_label_only() {
        let names = vec!["*.example.com".to_string(), "example.org".to_string()];
        assert!(covers(&names, "a.example.com"));
        assert!(covers(&names, "A.Example.COM"));
        assert!(covers(&names, "example.org"));
        assert!(!covers(&names, "example.com"));
        assert!(!covers(&names, "a.b.example.com"));
        assert!(!covers(&names, "www.example.org"));
        assert!(covers(&["*.example.com".to_string()], "*.example.com"));
    }
}
