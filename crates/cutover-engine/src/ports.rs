//! What the engine needs from the world, as traits: the edge and the health prober.
//! (Instances come through `cutover_runtime::Runtime`.) The real implementations live here
//! too; tests swap in fakes.

use cutover_config::EdgeLimits;
use cutover_health::{HttpCheck, ProbeFailure};
use cutover_proxy::protocol::{Hold, DEFAULT_WEIGHT, PROTOCOL};
use cutover_proxy::{
    Limits, ProxyClient, ProxyError, ProxyOptions, ProxyStatus, Route, RouteKey, Upstream,
};
use cutover_runtime::InstanceInfo;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where and how an environment is served at the edge, from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The app's name, for messages.
    pub app: String,
    pub listen: SocketAddr,
    /// Empty: every host on `listen`.
    pub hosts: Vec<String>,
    pub limits: EdgeLimits,
    /// HTTPS: certificate files (absolute) or ACME.
    pub tls: Option<cutover_proxy::tls::TlsSource>,
    /// `[acme]`, for `tls = "acme"`.
    pub acme: Option<cutover_proxy::acme::AcmeSettings>,
    pub http_redirect: Option<SocketAddr>,
}

impl Site {
    /// The site of environment `env` of `config`; files are relative to `root` (the directory
    /// of cutover.toml).
    pub fn of(
        config: &cutover_config::Config,
        env: &cutover_config::Environment,
        root: &std::path::Path,
    ) -> Site {
        use cutover_config::Tls;
        use cutover_proxy::tls::TlsSource;
        let tls = env.tls.as_ref().map(|tls| match tls {
            Tls::Acme => TlsSource::Acme,
            Tls::Files { cert, key } => TlsSource::Files {
                cert: root.join(cert),
                key: root.join(key),
            },
        });
        let acme = (env.tls == Some(Tls::Acme)).then(|| cutover_proxy::acme::AcmeSettings {
            directory: config.acme.directory.clone(),
            email: config.acme.email.clone(),
            ca_bundle: config.acme.ca_bundle.as_ref().map(|p| root.join(p)),
            renew_before_secs: config.acme.renew_before.as_secs(),
        });
        Site {
            app: config.app.name.to_string(),
            listen: env.listen,
            hosts: env.hosts.clone(),
            limits: env.edge,
            tls,
            acme,
            http_redirect: env.http_redirect,
        }
    }

    /// "127.0.0.1:8001" or "0.0.0.0:80 for a.example.com, b.example.com".
    pub fn describe(&self) -> String {
        if self.hosts.is_empty() {
            self.listen.to_string()
        } else {
            format!("{} for {}", self.listen, self.hosts.join(", "))
        }
    }
}

/// Why the edge will not serve an environment as asked, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeRefusal {
    pub message: String,
    pub hint: Option<String>,
}

impl EdgeRefusal {
    fn of(error: ProxyError) -> EdgeRefusal {
        match error {
            ProxyError::Refused { error } => EdgeRefusal {
                message: error.message,
                hint: error.hint,
            },
            other => EdgeRefusal {
                message: other.to_string(),
                hint: None,
            },
        }
    }
}

impl From<String> for EdgeRefusal {
    fn from(message: String) -> EdgeRefusal {
        EdgeRefusal {
            message,
            hint: None,
        }
    }
}

impl std::fmt::Display for EdgeRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// The edge in front of the environments.
pub trait Edge: Send + Sync + 'static {
    /// Makes sure the edge runs and would take the environment's route as `site` says (its
    /// address and hosts are not another's); changes nothing it serves.
    fn ensure(
        &self,
        env: &str,
        site: &Site,
    ) -> impl Future<Output = Result<(), EdgeRefusal>> + Send;
    /// Atomically points the environment's traffic at the instances of `release`, on the
    /// address, hosts and limits of `site` (those of the config of the release that serves).
    fn switch(
        &self,
        env: &str,
        release: i64,
        instances: &[InstanceInfo],
        site: &Site,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Waits until no request is in flight to `upstreams` (true) or the drain timeout of the
    /// limits they were switched with passes (false: what is left, WebSockets, is closed).
    fn drain(
        &self,
        env: &str,
        upstreams: &[SocketAddr],
    ) -> impl Future<Output = Result<bool, String>> + Send;
    /// Puts a hold on the environment's new requests (maintenance, pause) or lifts it.
    fn hold(
        &self,
        env: &str,
        hold: Option<Hold>,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Where the environment's traffic goes now; `None` if the edge is not running or has no
    /// route for it.
    fn upstreams(&self, env: &str) -> impl Future<Output = Option<Vec<SocketAddr>>> + Send;
    /// Removes the environment's route (the edge stops when it serves nothing else).
    fn stop(&self, env: &str) -> impl Future<Output = ()> + Send;
    /// Upgrades the machine's edge, if one runs, when it is stale: older than this cutover, or
    /// of this version but running a binary that was replaced on disk by the one this server
    /// runs. Said in the server's log. What a server does first when it starts.
    fn refresh(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// The certificates the edge obtains by ACME, by host (none when it runs none, or is not
    /// running).
    fn certificates(&self) -> impl Future<Output = Vec<CertificateState>> + Send {
        async { Vec::new() }
    }
}

/// A certificate the edge obtains by ACME for one host: notAfter of the one that serves
/// (seconds since the epoch; none yet: the host has none), and the last attempt's error, kept
/// until an attempt succeeds.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateState {
    pub host: String,
    pub not_after: Option<i64>,
    pub error: Option<String>,
}

/// Asks an instance whether it is healthy.
pub trait Prober: Send + Sync + 'static {
    fn probe(
        &self,
        addr: SocketAddr,
        check: &HttpCheck,
    ) -> impl Future<Output = Result<(), ProbeFailure>> + Send;
}

/// Probes over real HTTP.
pub struct HttpProber;

impl Prober for HttpProber {
    async fn probe(&self, addr: SocketAddr, check: &HttpCheck) -> Result<(), ProbeFailure> {
        cutover_health::probe(addr, check).await
    }
}

/// cutover's own edge: one detached process per machine (in `edge_dir`), shared by every app
/// and environment; this app's routes are keyed by its state dir. Every upstream of a switch
/// takes an equal share.
pub struct ProxyEdge {
    pub exe: PathBuf,
    /// The machine edge's directory (`cutover_proxy::default_edge_dir`).
    pub edge_dir: PathBuf,
    /// This app's state dir: the owner of its routes.
    pub state_dir: PathBuf,
}

impl ProxyEdge {
    /// The edge of this machine (`CUTOVER_EDGE_DIR`, else the default directory) for the app
    /// of `state_dir`, started with `exe` when needed.
    pub fn new(exe: PathBuf, state_dir: PathBuf) -> ProxyEdge {
        ProxyEdge {
            exe,
            edge_dir: cutover_proxy::default_edge_dir(),
            state_dir,
        }
    }

    fn client(&self) -> ProxyClient {
        ProxyClient::for_options(&ProxyOptions::new(&self.edge_dir))
    }

    /// The owner of this app's routes: its canonical state dir.
    fn owner(&self) -> String {
        self.state_dir
            .canonicalize()
            .unwrap_or_else(|_| self.state_dir.clone())
            .to_string_lossy()
            .into_owned()
    }

    fn key(&self, env: &str) -> RouteKey {
        RouteKey::new(self.owner(), env)
    }

    fn route(&self, env: &str, site: &Site, upstreams: Vec<Upstream>) -> Route {
        let mut route = Route::new(self.key(env), site.listen);
        route.app = site.app.clone();
        route.hosts = site.hosts.clone();
        route.tls = site.tls.clone();
        route.acme = site.acme.clone();
        route.http_redirect = site.http_redirect;
        route.upstreams = upstreams;
        route.limits = edge_limits(&site.limits);
        route.access_log = Some(cutover_daemon::StateDir::new(&self.state_dir).access_log(env));
        route
    }

    /// Makes sure the machine's edge runs and is current: starts it when none answers; waits
    /// for one that is stopping (or handing over) to go; upgrades a stale one in place
    /// ([`ProxyEdge::keep_current`]).
    async fn running(&self) -> Result<(), String> {
        for _ in 0..400 {
            match self.client().status().await {
                Ok(status) if status.stopping => {
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                    continue;
                }
                Ok(status) => {
                    if self.keep_current(&status).await {
                        return Ok(());
                    }
                }
                Err(ProxyError::BadReply { .. }) => {
                    let _ = self.client().shutdown().await;
                }
                Err(_) => {}
            }
            break;
        }
        self.spawn().await
    }

    /// Starts the machine's edge with this server's binary.
    async fn spawn(&self) -> Result<(), String> {
        let (exe, dir) = (self.exe.clone(), self.edge_dir.clone());
        tokio::task::spawn_blocking(move || cutover_proxy::spawn(&exe, &dir))
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Why the edge that answered `status` should make way for an edge of this server's
    /// binary, if it should: it speaks an older protocol or runs an older cutover; or it runs
    /// this same version from a binary that was replaced on disk by the very file this server
    /// runs (so a server of a replaced binary, or of another install, never replaces it). Never
    /// when the edge is newer than this server.
    fn stale(&self, status: &ProxyStatus) -> Option<Stale> {
        if status.protocol < PROTOCOL {
            return Some(Stale::Older(format!(
                "it spoke protocol {}, this server {PROTOCOL}",
                status.protocol
            )));
        }
        if status.protocol > PROTOCOL || newer(&status.version, cutover_proxy::VERSION) {
            return None;
        }
        if newer(cutover_proxy::VERSION, &status.version) {
            return Some(Stale::Older(format!(
                "it ran cutover {}, this server {}",
                status.version,
                cutover_proxy::VERSION
            )));
        }
        let exe = status.exe.as_deref()?;
        let replaced_by_this = status.binary_replaced
            && status.version == cutover_proxy::VERSION
            && cutover_daemon::runs(&self.exe)
            && cutover_daemon::runs(exe);
        replaced_by_this.then(|| {
            Stale::Replaced(format!(
                "its binary {} was replaced on disk by the one this server runs",
                exe.display()
            ))
        })
    }

    /// Brings the edge that answered `status` up to this server's binary when it is stale,
    /// by an upgrade that drops nothing (`cutover_proxy::upgrade`), said in the server's log.
    /// False when it must go but could not hand over: it was asked to stop, and the caller
    /// starts another (it reads the routes file the old one kept). An edge whose only fault is
    /// a replaced binary serves on when its upgrade fails.
    async fn keep_current(&self, status: &ProxyStatus) -> bool {
        let Some(stale) = self.stale(status) else {
            return true;
        };
        let (exe, dir) = (self.exe.clone(), self.edge_dir.clone());
        let upgraded = tokio::task::spawn_blocking(move || cutover_proxy::upgrade(&exe, &dir))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let old = format!("pid {} (cutover {})", status.pid, status.version);
        match (upgraded, stale) {
            (Ok(done), Stale::Older(why) | Stale::Replaced(why)) => {
                let how = if done.restarted {
                    "could not hand its sockets over, so it was stopped and"
                } else {
                    "handed its listening sockets to"
                };
                eprintln!(
                    "cutover server: edge upgraded: {old} {how} pid {} (cutover {}, {}), because {why}",
                    done.new_pid,
                    cutover_proxy::VERSION,
                    self.exe.display()
                );
                true
            }
            (Err(e), Stale::Replaced(why)) => {
                eprintln!(
                    "cutover server: the edge was not upgraded, although {why}: {e}; {old} serves on with the binary it runs"
                );
                true
            }
            (Err(e), Stale::Older(why)) => {
                eprintln!(
                    "cutover server: the edge was not upgraded, although {why}: {e}; {old} is stopped and an edge of this binary started"
                );
                let _ = self.client().shutdown().await;
                false
            }
        }
    }

    /// An edge of the older kind (one per environment, files under the state dir's `proxy/`)
    /// that serves `env`: stopped, and its route taken over by the machine's edge with the
    /// upstreams and hold it had. A one-time migration with a short gap in listening.
    async fn migrate(&self, env: &str, site: &Site) -> Result<(), String> {
        let dir = self.state_dir.join("proxy");
        let routes_file = dir.join(format!("{env}.routes.json"));
        let pid_file = dir.join(format!("{env}.pid"));
        if !routes_file.exists() && !pid_file.exists() {
            return Ok(());
        }
        let old = cutover_proxy::legacy_routes(&routes_file, env).map_err(|e| e.to_string())?;
        let socket = cutover_daemon::socket_path(&self.state_dir, &format!("proxy-{env}"));
        // Asked to stop over its admin socket (any protocol version answers `shutdown`), or
        // by SIGTERM when it does not answer.
        if ProxyClient::new(&socket).shutdown().await.is_err() {
            if let Some(pid) = cutover_daemon::read_pid(&pid_file)
                .filter(|pid| cutover_daemon::pid_runs(*pid, &["proxy", env]))
            {
                cutover_daemon::signal(pid, libc::SIGTERM);
                for _ in 0..200 {
                    if !cutover_daemon::pid_alive(pid) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
            }
        }
        self.running().await?;
        if let Some(old) = old {
            let mut route = self.route(env, site, old.upstreams);
            route.limits = old.limits;
            self.client().set(route).await.map_err(|e| e.to_string())?;
            if old.hold.is_some() {
                self.client()
                    .hold(self.key(env), old.hold)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let _ = std::fs::remove_file(&routes_file);
        let _ = std::fs::remove_file(&pid_file);
        Ok(())
    }
}

impl Edge for ProxyEdge {
    async fn ensure(&self, env: &str, site: &Site) -> Result<(), EdgeRefusal> {
        self.migrate(env, site).await?;
        self.running().await?;
        let claim = self.route(env, site, Vec::new());
        self.client().check(claim).await.map_err(EdgeRefusal::of)
    }

    async fn switch(
        &self,
        env: &str,
        release: i64,
        instances: &[InstanceInfo],
        site: &Site,
    ) -> Result<(), String> {
        let upstreams = instances
            .iter()
            .map(|i| Upstream::new(i.address, DEFAULT_WEIGHT).named(&i.id, release))
            .collect();
        self.client()
            .set(self.route(env, site, upstreams))
            .await
            .map(|_| ())
            .map_err(|e| EdgeRefusal::of(e).to_string())
    }

    async fn drain(&self, _env: &str, upstreams: &[SocketAddr]) -> Result<bool, String> {
        self.client()
            .drain(upstreams, None)
            .await
            .map(|d| d.drained)
            .map_err(|e| e.to_string())
    }

    async fn hold(&self, env: &str, hold: Option<Hold>) -> Result<(), String> {
        self.client()
            .hold(self.key(env), hold)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn upstreams(&self, env: &str) -> Option<Vec<SocketAddr>> {
        let status = self.client().status().await.ok()?;
        let key = self.key(env);
        status.route(&key)?;
        Some(status.serving(&key))
    }

    async fn stop(&self, env: &str) {
        let _ = self.client().remove(&self.owner(), Some(env)).await;
    }

    async fn refresh(&self) {
        let Ok(status) = self.client().status().await else {
            return;
        };
        if !status.stopping && !self.keep_current(&status).await {
            if let Err(e) = self.spawn().await {
                eprintln!("cutover server: the edge cannot start: {e}");
            }
        }
    }

    async fn certificates(&self) -> Vec<CertificateState> {
        let Ok(status) = self.client().status().await else {
            return Vec::new();
        };
        status
            .acme
            .into_iter()
            .map(|c| CertificateState {
                host: c.host,
                not_after: c.not_after,
                error: c.error,
            })
            .collect()
    }
}

/// Why the running edge is to make way for an edge of this server's binary.
enum Stale {
    /// An older protocol or cutover: it goes, by a restart if it cannot hand over.
    Older(String),
    /// Its binary was replaced by this server's: upgraded when it can be, else it serves on.
    Replaced(String),
}

/// Whether version `a` is newer than `b` ("0.2.0" than "0.1.9"; a version that does not parse
/// is never newer, so an edge is never replaced on a guess).
fn newer(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Option<Vec<u64>> {
        v.split(['-', '+'])
            .next()?
            .split('.')
            .map(|n| n.parse().ok())
            .collect()
    };
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

/// The edge's limits of a route, from `[environments.X.edge]`.
fn edge_limits(limits: &EdgeLimits) -> Limits {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    Limits {
        max_body: limits.max_body,
        upstream_timeout_ms: ms(limits.upstream_timeout),
        idle_timeout_ms: ms(limits.idle_timeout),
        header_timeout_ms: ms(limits.header_timeout),
        drain_timeout_ms: ms(limits.drain_timeout),
        hsts: limits.hsts,
    }
}

#[cfg(test)]
mod tests {
    use super::{ProxyEdge, Stale};
    use cutover_proxy::protocol::PROTOCOL;
    use cutover_proxy::ProxyStatus;
    use std::path::PathBuf;

    fn edge(exe: PathBuf) -> ProxyEdge {
        ProxyEdge {
            exe,
            edge_dir: "/nonexistent/edge".into(),
            state_dir: "/nonexistent/.cutover".into(),
        }
    }

    fn status(protocol: u32, version: &str, exe: PathBuf, replaced: bool) -> ProxyStatus {
        ProxyStatus {
            protocol,
            version: version.into(),
            exe: Some(exe),
            binary_replaced: replaced,
            stopping: false,
            pid: 1,
            listeners: Vec::new(),
            generation: 0,
            routes: Vec::new(),
            draining: Default::default(),
            held: 0,
            acme: Vec::new(),
        }
    }

    /// Which edges a server replaces. Here "this server" is the test binary: it runs the file
    /// at its own path; another file is another build.
    #[test]
    fn an_edge_makes_way_when_older_or_replaced_by_this_binary_never_when_newer() {
        let me = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("cutover");
        std::fs::write(&other, "another build").unwrap();
        let version = cutover_proxy::VERSION;
        let stale = |server: &PathBuf, status: ProxyStatus| edge(server.clone()).stale(&status);

        // The same version, and its binary not replaced: current.
        assert!(stale(&me, status(PROTOCOL, version, me.clone(), false)).is_none());
        // Its binary replaced by the one this server runs: upgraded.
        assert!(matches!(
            stale(&me, status(PROTOCOL, version, me.clone(), true)),
            Some(Stale::Replaced(_))
        ));
        // Replaced by another file than this server's (another install, or this server's own
        // binary was replaced too): left alone.
        assert!(stale(&me, status(PROTOCOL, version, other.clone(), true)).is_none());
        assert!(stale(&other, status(PROTOCOL, version, me.clone(), true)).is_none());
        // Older: upgraded, replaced or not; newer: never.
        assert!(matches!(
            stale(&other, status(PROTOCOL - 1, version, me.clone(), false)),
            Some(Stale::Older(_))
        ));
        assert!(matches!(
            stale(&other, status(PROTOCOL, "0.0.1", me.clone(), false)),
            Some(Stale::Older(_))
        ));
        assert!(stale(&me, status(PROTOCOL, "999.0.0", me.clone(), true)).is_none());
        assert!(stale(&me, status(PROTOCOL + 1, version, me.clone(), true)).is_none());
    }

    #[test]
    fn an_edge_is_upgraded_only_by_a_newer_cutover() {
        assert!(super::newer("0.2.0", "0.1.9"));
        assert!(super::newer("1.0.0", "0.10.0"));
        assert!(!super::newer("0.1.0", "0.1.0"));
        assert!(!super::newer("0.1.0", "0.2.0"));
        assert!(!super::newer("0.1.0", ""));
        assert!(!super::newer("0.1.0", "garbage"));
    }
}
