//! What kind of listener each address is — plain HTTP, TLS, or an `http_redirect` — derived
//! from the routes at every install: the TLS listeners' certificate resolvers, the hosts each
//! redirect listener sends to `https://` (and on which port), and the ACME hosts. Checked
//! before a route change is made: a certificate file that cannot serve, TLS and plain HTTP on
//! one address, or a redirect on an address a route serves are refused, and nothing changes.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::acme::{Acme, Wanted};
use crate::protocol::{listens_overlap, normal_host, AdminError, ErrorCode, Route};
use crate::routes::RoutesFile;
use crate::tls::{self, AlpnChallenges, CertStore, Resolver, Site, TlsSource};

/// How often certificate files are looked at for changes.
const REFRESH: Duration = Duration::from_secs(1);
/// How often the ACME loop looks for certificates to renew (it also wakes on route changes).
const ACME_TICK: Duration = Duration::from_secs(60);

/// What a listener does with a connection.
#[derive(Clone)]
pub(crate) enum Kind {
    Plain,
    Tls(tokio_rustls::TlsAcceptor),
    Redirect(Arc<Redirects>),
}

/// The hosts an `http_redirect` listener sends to `https://`, with the port of their TLS
/// listener.
#[derive(Debug, Default)]
pub(crate) struct Redirects {
    hosts: HashMap<String, u16>,
    wildcards: HashMap<String, u16>,
    /// A host-less TLS route's port: every host goes there.
    any: Option<u16>,
}

impl Redirects {
    /// The TLS port of `host` (already normalised), if a route of this redirect serves it.
    pub fn port(&self, host: &str) -> Option<u16> {
        self.hosts
            .get(host)
            .or_else(|| {
                let (_, suffix) = host.split_once('.')?;
                self.wildcards.get(suffix)
            })
            .copied()
            .or(self.any)
    }
}

/// The edge's HTTPS state, shared by the admin side and the serving threads.
pub(crate) struct Https {
    pub store: Arc<CertStore>,
    pub acme: Arc<Acme>,
    alpn: Arc<AlpnChallenges>,
    kinds: ArcSwap<HashMap<SocketAddr, Kind>>,
}

impl Https {
    /// The HTTPS state of the edge whose directory is `edge_dir` (`certs/`, `acme/`).
    pub fn new(edge_dir: &Path) -> Https {
        let store = Arc::new(CertStore::new(&edge_dir.join("certs")));
        let alpn = Arc::new(AlpnChallenges::default());
        let acme = Arc::new(Acme::new(edge_dir, store.clone(), alpn.clone()));
        Https {
            store,
            acme,
            alpn,
            kinds: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// The kind of the listener of `listen` (plain when no route says otherwise).
    pub fn kind(&self, listen: SocketAddr) -> Kind {
        self.kinds
            .load()
            .get(&listen)
            .cloned()
            .unwrap_or(Kind::Plain)
    }

    /// Whether `next` can be served: [`Https::verify`], and loads the certificates, so that
    /// [`Https::install`] has them.
    pub fn check(&self, next: &RoutesFile) -> Result<(), AdminError> {
        kinds_fit(next)?;
        self.store.prepare(&sites(&next.routes)).map_err(cert_error)
    }

    /// Whether `next` can be served, changing nothing: TLS and plain HTTP never share an
    /// address, a redirect is on no route's address, and every certificate file loads and
    /// covers its hosts.
    pub fn verify(&self, next: &RoutesFile) -> Result<(), AdminError> {
        kinds_fit(next)?;
        for site in sites(&next.routes) {
            if let TlsSource::Files { .. } = &site.source {
                tls::check_pair(&self.store.pair(&site.source, ""), &site.hosts)
                    .map_err(cert_error)?;
            }
        }
        Ok(())
    }

    /// Serves the routes an edge starts with: what loads serves, and a certificate that does
    /// not is logged and watched until it does.
    pub fn start(&self, file: &RoutesFile) {
        for e in self.store.prepare_all(&sites(&file.routes)) {
            eprintln!("edge: {e}; its hosts get no certificate until the file is fixed");
        }
        self.install(file);
    }

    /// Serves `file` from now on (it passed [`Https::check`]).
    pub fn install(&self, file: &RoutesFile) {
        let mut kinds: HashMap<SocketAddr, Kind> = HashMap::new();
        let mut by_listen: BTreeMap<SocketAddr, Vec<&Route>> = BTreeMap::new();
        for route in file.routes.iter().filter(|r| r.tls.is_some()) {
            by_listen.entry(route.listen).or_default().push(route);
        }
        for (listen, routes) in &by_listen {
            let resolver = Arc::new(Resolver::new(self.store.clone(), self.alpn.clone()));
            let sites: Vec<Site> = routes.iter().filter_map(|r| site(r)).collect();
            resolver.install(&sites);
            match tls::server_config(resolver) {
                Ok(config) => {
                    kinds.insert(*listen, Kind::Tls(tokio_rustls::TlsAcceptor::from(config)));
                }
                Err(e) => eprintln!("edge: no TLS on {listen}: {e}"),
            }
        }
        let mut redirects: BTreeMap<SocketAddr, Redirects> = BTreeMap::new();
        for route in &file.routes {
            let Some(redirect) = route.http_redirect else {
                continue;
            };
            let entry = redirects.entry(redirect).or_default();
            let port = route.listen.port();
            if route.hosts.is_empty() {
                entry.any = Some(port);
            }
            for host in &route.hosts {
                match host.strip_prefix("*.") {
                    Some(suffix) => entry.wildcards.insert(suffix.to_string(), port),
                    None => entry.hosts.insert(normal_host(host).into_owned(), port),
                };
            }
        }
        for (listen, r) in redirects {
            kinds.insert(listen, Kind::Redirect(Arc::new(r)));
        }
        self.kinds.store(Arc::new(kinds));

        let mut wanted = BTreeMap::new();
        for route in &file.routes {
            let (Some(TlsSource::Acme), Some(settings)) = (&route.tls, &route.acme) else {
                continue;
            };
            for host in &route.hosts {
                wanted.insert(
                    normal_host(host).into_owned(),
                    Wanted {
                        settings: settings.clone(),
                        http01: route.http_redirect.is_some(),
                    },
                );
            }
        }
        self.acme.want(wanted);
    }

    /// Keeps certificates fresh until `stop`: file changes every second, ACME renewals.
    pub async fn maintain(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let acme = self.acme.clone();
        let mut acme_stop = stop.clone();
        tokio::spawn(acme.run(ACME_TICK, async move {
            crate::stopping(&mut acme_stop).await;
        }));
        loop {
            tokio::select! {
                () = crate::stopping(&mut stop) => return,
                () = tokio::time::sleep(REFRESH) => {
                    let store = self.store.clone();
                    let _ = tokio::task::spawn_blocking(move || store.refresh()).await;
                }
            }
        }
    }
}

/// TLS and plain HTTP never share an address; a redirect is on no route's address; an ACME
/// route carries its settings.
fn kinds_fit(next: &RoutesFile) -> Result<(), AdminError> {
    for (i, route) in next.routes.iter().enumerate() {
        for other in &next.routes[..i] {
            if listens_overlap(route.listen, other.listen)
                && route.tls.is_some() != other.tls.is_some()
            {
                let (tls, plain) = if route.tls.is_some() {
                    (route, other)
                } else {
                    (other, route)
                };
                return Err(AdminError::new(
                    ErrorCode::Claimed,
                    format!(
                        "{} serves HTTPS for {} and plain HTTP for {}: one address cannot do both",
                        route.listen,
                        tls.owner(),
                        plain.owner()
                    ),
                )
                .field("tls")
                .hint("give both environments tls, or give them different listen addresses"));
            }
        }
        if let Some(redirect) = route.http_redirect {
            if let Some(other) = next
                .routes
                .iter()
                .find(|r| listens_overlap(r.listen, redirect))
            {
                return Err(AdminError::new(
                    ErrorCode::Claimed,
                    format!(
                        "http_redirect {redirect} is where the edge serves {}",
                        other.owner()
                    ),
                )
                .field("http_redirect")
                .hint("give http_redirect a port no environment listens on, e.g. 0.0.0.0:80"));
            }
        }
        if route.tls == Some(TlsSource::Acme) && route.acme.is_none() {
            return Err(AdminError::bad_request(
                "acme",
                format!(
                    "route {} gets its certificate by ACME but names no [acme] directory",
                    route.key
                ),
                "send the [acme] settings with the route",
            ));
        }
    }
    Ok(())
}

fn cert_error(e: tls::CertError) -> AdminError {
    AdminError::new(ErrorCode::BadRequest, e.to_string())
        .field(e.field())
        .hint(e.hint())
}

fn site(route: &Route) -> Option<Site> {
    Some(Site {
        hosts: route.hosts.clone(),
        source: route.tls.clone()?,
    })
}

fn sites(routes: &[Route]) -> Vec<Site> {
    routes.iter().filter_map(site).collect()
}
