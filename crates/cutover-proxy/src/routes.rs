//! The route table: for each route, its upstreams and their weights, behind one `ArcSwap` so
//! that a cutover is a single atomic swap, plus per-upstream in-flight counters for drains and
//! each upstream's passive health (`health.rs`). What it keeps on disk is `routes_file.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use hyper::http::request;
use hyper::http::uri::Authority;

use crate::access::AccessLog;
use crate::health::Health;
use crate::protocol::{normal_host, Hold, Limits, RouteKey, RouteStatus, UpstreamStatus};
pub use crate::routes_file::RoutesFile;

/// The `Host` a request is for: its `Host` header, else its URI's authority (absolute-form,
/// HTTP/2's `:authority`).
fn request_host(request: &request::Parts) -> Option<&str> {
    match request.headers.get(hyper::header::HOST) {
        Some(host) => host.to_str().ok(),
        None => request.uri.authority().map(|a| a.as_str()),
    }
}

/// Which upstream served a request, for the access log (in the response's extensions).
pub(crate) struct Served {
    pub addr: String,
    pub instance: Option<String>,
    pub release: Option<i64>,
    /// The route's name and access log.
    pub route: Arc<RouteInfo>,
}

/// What an answer needs of the route a request matched, when no upstream serves it.
pub(crate) struct RouteInfo {
    pub env: String,
    pub app: String,
    pub log: Arc<AccessLog>,
    /// `Strict-Transport-Security` on its HTTPS answers.
    pub hsts: bool,
}

/// Why [`Routes::pick`] found no upstream.
pub(crate) enum Miss {
    /// No route takes this address and host: 404.
    NoRoute,
    /// The route has no upstream with a weight: 503.
    NothingLive(Arc<RouteInfo>),
    /// The route's hold applies.
    Held(Arc<Hold>, Arc<RouteInfo>),
}

struct UpstreamState {
    served: Arc<Served>,
    addr: SocketAddr,
    weight: u32,
    /// `addr` as the authority of request URIs, made once per table rather than per request.
    authority: Authority,
    shared: Arc<Shared>,
}

/// What every table and every request to one upstream share: its requests in flight, and the
/// signal that closes its tunnels (upgraded connections) at the end of a drain.
#[derive(Default)]
pub(crate) struct Shared {
    inflight: AtomicU64,
    /// Of the requests in flight, the tunnels.
    tunnels: AtomicU64,
    close_tunnels: tokio::sync::Notify,
    /// The drain timeout of the route that last sent traffic here.
    drain_timeout_ms: AtomicU64,
    /// Whether new connections to it succeed.
    health: Health,
}

struct RouteState {
    key: RouteKey,
    info: Arc<RouteInfo>,
    listen: SocketAddr,
    hosts: Vec<String>,
    limits: Limits,
    hold: Option<Arc<Hold>>,
    upstreams: Vec<UpstreamState>,
    /// One period of smooth weighted round-robin, as indices into `upstreams` (see
    /// [`smooth_schedule`]); upstreams of weight 0 are not in it.
    schedule: Box<[u16]>,
    /// Where the next request is in `schedule`.
    cursor: AtomicUsize,
}

impl RouteState {
    /// The index of the upstream that takes the next request: by weight, skipping `avoid` and
    /// the ejected upstreams (see [`Health`]) while another one with a weight is neither; else
    /// one that is not `avoid`; else the one whose turn it is. `None` when no upstream has a
    /// weight.
    fn next(&self, avoid: Option<SocketAddr>) -> Option<usize> {
        let len = self.schedule.len();
        if len <= 1 {
            // One upstream with a weight (the usual case): no shared cursor to bounce between
            // cores, and nothing to skip it for.
            return self.schedule.first().map(|&i| usize::from(i));
        }
        let at = self.cursor.fetch_add(1, Ordering::Relaxed);
        let turn = |k: usize| usize::from(self.schedule[(at + k) % len]);
        let not_avoided = |i: usize| Some(self.upstreams[i].addr) != avoid;
        let mut now = None;
        let mut usable = |i: usize| {
            not_avoided(i)
                && self.upstreams[i]
                    .shared
                    .health
                    .admits(|| *now.get_or_insert_with(now_ms))
        };
        let picked = turn(0);
        if usable(picked) {
            return Some(picked);
        }
        (1..len)
            .map(turn)
            .find(|&i| usable(i))
            .or_else(|| (0..len).map(turn).find(|&i| not_avoided(i)))
            .or(Some(picked))
    }
}

/// nginx's smooth weighted round-robin (each pick: every upstream's current weight grows by
/// its weight, the largest is picked and loses the total), run once over a whole period when
/// routes are installed, so that a request only reads the next entry: no lock and no allocation
/// per request, shared by all serving threads. Weights are divided by their greatest common
/// divisor first (100/100 is a period of 2, 90/10 of 10). Weights 5, 1, 1 give a a b a c a a.
fn smooth_schedule(weights: &[u32]) -> Box<[u16]> {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let divisor = weights.iter().fold(0, |g, &w| gcd(g, w));
    if divisor == 0 {
        return Box::new([]);
    }
    let reduced: Vec<i64> = weights.iter().map(|&w| i64::from(w / divisor)).collect();
    let total: i64 = reduced.iter().sum();
    let mut current = vec![0i64; reduced.len()];
    let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or_default());
    for _ in 0..total {
        let mut best: Option<usize> = None;
        for (i, &weight) in reduced.iter().enumerate() {
            if weight == 0 {
                continue;
            }
            current[i] += weight;
            match best {
                Some(b) if current[b] >= current[i] => {}
                _ => best = Some(i),
            }
        }
        let Some(best) = best else { break };
        current[best] -= total;
        schedule.push(u16::try_from(best).expect("at most MAX_UPSTREAMS upstreams"));
    }
    schedule.into_boxed_slice()
}

struct Table {
    generation: u64,
    routes: Vec<RouteState>,
    /// For each listen address, which route takes which host: made once per change, so that a
    /// request costs one lookup of its address and one of its host.
    sites: HashMap<SocketAddr, Site>,
}

#[derive(Default)]
struct Site {
    /// The route without hosts, which takes every request of the address.
    any: Option<usize>,
    /// Lowercase host (or `*.parent` wildcard) → route.
    hosts: HashMap<String, usize>,
    /// What a connection starts with, before its first request picks a route: the longest
    /// idle and header timeouts of the address's routes.
    limits: Limits,
}

impl Table {
    fn new(generation: u64, routes: Vec<RouteState>) -> Table {
        let mut sites: HashMap<SocketAddr, Site> = HashMap::new();
        for (i, route) in routes.iter().enumerate() {
            let fresh = !sites.contains_key(&route.listen);
            let site = sites.entry(route.listen).or_default();
            if fresh {
                site.limits = route.limits;
            } else {
                site.limits.idle_timeout_ms = site
                    .limits
                    .idle_timeout_ms
                    .max(route.limits.idle_timeout_ms);
                site.limits.header_timeout_ms = site
                    .limits
                    .header_timeout_ms
                    .max(route.limits.header_timeout_ms);
            }
            if route.hosts.is_empty() {
                site.any = Some(i);
            }
            for host in &route.hosts {
                site.hosts.insert(host.clone(), i);
            }
        }
        Table {
            generation,
            routes,
            sites,
        }
    }

    fn route_for(&self, listen: SocketAddr, request: &request::Parts) -> Option<&RouteState> {
        let site = self.sites.get(&listen)?;
        if let Some(i) = site.any {
            return Some(&self.routes[i]);
        }
        let host = normal_host(request_host(request)?);
        let i = match site.hosts.get(host.as_ref()) {
            Some(&i) => i,
            None => {
                let (_, parent) = host.split_once('.')?;
                *site.hosts.get(&format!("*.{parent}"))?
            }
        };
        Some(&self.routes[i])
    }
}

/// The time now in Unix milliseconds (what a pause's `until_ms` is compared with).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Counts one request waiting for a pause to end, until dropped.
pub(crate) struct HeldGuard<'a>(&'a AtomicU64);

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts one request in flight to `addr` until dropped.
pub(crate) struct InflightGuard {
    pub addr: SocketAddr,
    pub authority: Authority,
    /// The limits of the route the request took.
    pub limits: Limits,
    pub served: Arc<Served>,
    shared: Arc<Shared>,
}

impl InflightGuard {
    /// A connection to this upstream succeeded: true when that ends its ejection.
    pub fn connected(&self) -> bool {
        self.shared.health.connected()
    }

    /// A connect to this upstream failed (`error` says why): how long new requests now skip
    /// it, unless it was ejected already.
    pub fn connect_failed(&self, error: &str) -> Option<std::time::Duration> {
        self.shared
            .health
            .connect_failed(now_ms(), error)
            .map(std::time::Duration::from_millis)
    }

    /// Resolves when the tunnels to this upstream are to close (see [`Routes::close_tunnels`]).
    pub fn closing(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.close_tunnels.notified()
    }

    /// Counts this request as a tunnel (as well as in flight) until the result is dropped.
    pub fn tunnel(&self) -> TunnelGuard {
        self.shared.tunnels.fetch_add(1, Ordering::SeqCst);
        TunnelGuard(self.shared.clone())
    }
}

/// Counts one tunnel to an upstream until dropped.
pub(crate) struct TunnelGuard(Arc<Shared>);

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.shared.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) struct Routes {
    table: ArcSwap<Table>,
    /// One counter per upstream, shared by every table that names it, so that a request sent
    /// before a swap is still counted after it.
    counters: Mutex<HashMap<SocketAddr, Arc<Shared>>>,
    /// Wakes requests held by a pause when the routes change.
    changed: tokio::sync::Notify,
    /// Requests waiting for a pause to end, across all serving threads.
    held: AtomicU64,
    /// The routes' access logs by path, open while a route names them.
    logs: Mutex<HashMap<PathBuf, Arc<AccessLog>>>,
    /// The edge's own access log: requests no route takes, and routes that name none.
    default_log: Arc<AccessLog>,
}

impl Routes {
    /// Routes installing `initial`; a route whose access log cannot be opened logs to the
    /// edge's own (and says so).
    pub fn new(initial: &RoutesFile, default_log: Arc<AccessLog>) -> Routes {
        let routes = Routes {
            table: ArcSwap::from_pointee(Table::new(0, Vec::new())),
            counters: Mutex::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
            held: AtomicU64::new(0),
            logs: Mutex::new(HashMap::new()),
            default_log,
        };
        if let Err((path, e)) = routes.open_logs(initial) {
            eprintln!(
                "edge: cannot open the access log {}: {e}; its requests go to the edge's own",
                path.display()
            );
        }
        routes.install(initial);
        routes
    }

    fn counters(&self) -> MutexGuard<'_, HashMap<SocketAddr, Arc<Shared>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn logs(&self) -> MutexGuard<'_, HashMap<PathBuf, Arc<AccessLog>>> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the access logs `file` names that are not open yet (before it is installed, so
    /// that a log that cannot be opened refuses the change). Blocking.
    pub fn open_logs(&self, file: &RoutesFile) -> Result<(), (PathBuf, std::io::Error)> {
        let mut logs = self.logs();
        let mut failed = None;
        for path in file.routes.iter().filter_map(|r| r.access_log.as_ref()) {
            if logs.contains_key(path) {
                continue;
            }
            match AccessLog::open(path) {
                Ok(log) => {
                    logs.insert(path.clone(), Arc::new(log));
                }
                Err(e) => failed = failed.or(Some((path.clone(), e))),
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Writes what every access log holds and stops their writers (the edge is stopping).
    pub fn close_logs(&self) {
        for (_, log) in self.logs().drain() {
            log.close();
        }
        self.default_log.close();
    }

    /// Swaps in new routes: every request that picks its upstream after this returns uses them.
    /// Start-up and every `set` go through here.
    pub fn install(&self, file: &RoutesFile) {
        let mut counters = self.counters();
        let mut logs = self.logs();
        let mut routes = Vec::with_capacity(file.routes.len());
        for route in &file.routes {
            let log = route
                .access_log
                .as_ref()
                .and_then(|p| logs.get(p).cloned())
                .unwrap_or_else(|| self.default_log.clone());
            let info = Arc::new(RouteInfo {
                env: route.key.env.clone(),
                app: route.app.clone(),
                log,
                hsts: route.limits.hsts,
            });
            let upstreams: Vec<UpstreamState> = route
                .upstreams
                .iter()
                .map(|u| {
                    let shared = counters.entry(u.addr).or_default().clone();
                    shared
                        .drain_timeout_ms
                        .store(route.limits.drain_timeout_ms, Ordering::SeqCst);
                    UpstreamState {
                        served: Arc::new(Served {
                            addr: u.addr.to_string(),
                            instance: u.instance.clone(),
                            release: u.release,
                            route: info.clone(),
                        }),
                        addr: u.addr,
                        weight: u.weight,
                        authority: Authority::try_from(u.addr.to_string())
                            .expect("a socket address is a valid URI authority"),
                        shared,
                    }
                })
                .collect();
            let weights: Vec<u32> = route.upstreams.iter().map(|u| u.weight).collect();
            routes.push(RouteState {
                key: route.key.clone(),
                info,
                listen: route.listen,
                hosts: route.hosts.clone(),
                limits: route.limits,
                hold: file
                    .holds
                    .iter()
                    .find(|h| h.route == route.key)
                    .map(|h| Arc::new(h.hold.clone())),
                upstreams,
                schedule: smooth_schedule(&weights),
                cursor: AtomicUsize::new(0),
            });
        }
        self.table
            .store(Arc::new(Table::new(file.generation, routes)));
        self.changed.notify_waiters();
        // Forget idle upstreams that are no longer routed to. A request that picked one from
        // the old table notices the swap in `pick` and picks again.
        let routed = |addr: &SocketAddr| {
            file.routes
                .iter()
                .any(|r| r.upstreams.iter().any(|u| u.addr == *addr))
        };
        counters.retain(|addr, n| routed(addr) || n.inflight.load(Ordering::SeqCst) > 0);
        // Close the logs no route names any more (requests still being answered hold theirs
        // until they are written).
        let named: BTreeSet<&PathBuf> = file
            .routes
            .iter()
            .filter_map(|r| r.access_log.as_ref())
            .collect();
        let unused: Vec<PathBuf> = logs
            .keys()
            .filter(|p| !named.contains(p))
            .cloned()
            .collect();
        for path in unused {
            if let Some(log) = logs.remove(&path) {
                log.close();
            }
        }
    }

    /// Picks the upstream of the route that takes the request on `listen` by weight (avoiding
    /// `avoid` when another one has a weight) and counts the request in flight; or says why
    /// nothing serves it.
    pub fn pick(
        &self,
        listen: SocketAddr,
        request: &request::Parts,
        avoid: Option<SocketAddr>,
    ) -> Result<InflightGuard, Miss> {
        loop {
            // `load` (not `load_full`): no reference count shared by all threads on the hot path.
            let table = self.table.load();
            let route = table.route_for(listen, request).ok_or(Miss::NoRoute)?;
            if let Some(hold) = route.hold.as_ref().filter(|h| h.applies(now_ms())) {
                return Err(Miss::Held(hold.clone(), route.info.clone()));
            }
            let Some(next) = route.next(avoid) else {
                return Err(Miss::NothingLive(route.info.clone()));
            };
            let upstream = &route.upstreams[next];
            upstream.shared.inflight.fetch_add(1, Ordering::SeqCst);
            let guard = InflightGuard {
                addr: upstream.addr,
                authority: upstream.authority.clone(),
                limits: route.limits,
                served: upstream.served.clone(),
                shared: upstream.shared.clone(),
            };
            // If a swap happened between the load and the increment, a drain may already have
            // seen zero for this upstream: pick again from the new table.
            if Arc::ptr_eq(&*table, &*self.table.load()) {
                return Ok(guard);
            }
        }
    }

    /// The edge's own access log (requests no route takes).
    pub fn default_log(&self) -> &Arc<AccessLog> {
        &self.default_log
    }

    /// Resolves at the next change of the routes (created before looking, so that none is
    /// missed).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Counts a request waiting for a pause to end, if fewer than `max` wait already.
    pub fn hold_one(&self, max: u64) -> Option<HeldGuard<'_>> {
        let before = self.held.fetch_add(1, Ordering::SeqCst);
        if before >= max {
            self.held.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(HeldGuard(&self.held))
    }

    /// Requests waiting for a pause to end.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    /// Requests in flight to any of `addrs`.
    pub fn inflight_to(&self, addrs: &[SocketAddr]) -> u64 {
        let counters = self.counters();
        addrs
            .iter()
            .filter_map(|a| counters.get(a))
            .map(|n| n.inflight.load(Ordering::SeqCst))
            .sum()
    }

    /// How long a drain of `addrs` waits when not told: the longest drain timeout of the
    /// routes that last sent them traffic (the default for an upstream never routed to).
    pub fn drain_timeout(&self, addrs: &[SocketAddr]) -> std::time::Duration {
        let counters = self.counters();
        let ms = addrs
            .iter()
            .map(|a| {
                counters
                    .get(a)
                    .map(|n| n.drain_timeout_ms.load(Ordering::SeqCst))
                    .filter(|ms| *ms > 0)
                    .unwrap_or(Limits::default().drain_timeout_ms)
            })
            .max()
            .unwrap_or(0);
        std::time::Duration::from_millis(ms)
    }

    /// The longest drain timeout of the routes: how long an edge that handed its sockets over
    /// waits for what it still serves (WebSockets).
    pub fn longest_drain(&self) -> std::time::Duration {
        let ms = self
            .table
            .load()
            .routes
            .iter()
            .map(|r| r.limits.drain_timeout_ms)
            .max()
            .unwrap_or(Limits::default().drain_timeout_ms);
        std::time::Duration::from_millis(ms)
    }

    /// The limits a client connection on `listen` starts with, before its first request picks
    /// a route: the longest idle and header timeouts of the address's routes, else the
    /// defaults.
    pub fn connection_limits(&self, listen: SocketAddr) -> Limits {
        self.table
            .load()
            .sites
            .get(&listen)
            .map(|s| s.limits)
            .unwrap_or_default()
    }

    /// Tunnels (upgraded connections) open to any of `addrs`.
    pub fn tunnels_to(&self, addrs: &[SocketAddr]) -> u64 {
        let counters = self.counters();
        addrs
            .iter()
            .filter_map(|a| counters.get(a))
            .map(|n| n.tunnels.load(Ordering::SeqCst))
            .sum()
    }

    /// Closes every tunnel (upgraded connection) to `addrs`: what a drain does when its
    /// timeout passes, before the upstreams stop.
    pub fn close_tunnels(&self, addrs: &[SocketAddr]) {
        let counters = self.counters();
        for shared in addrs.iter().filter_map(|a| counters.get(a)) {
            shared.close_tunnels.notify_waiters();
        }
    }

    /// The generation installed, every route with its upstreams' weights and requests in
    /// flight, and the upstreams no longer routed to that still have requests in flight.
    pub fn status(&self) -> (u64, Vec<RouteStatus>, BTreeMap<SocketAddr, u64>) {
        let table = self.table.load();
        let now = now_ms();
        let routes: Vec<RouteStatus> = table
            .routes
            .iter()
            .map(|r| RouteStatus {
                hold: r.hold.as_deref().filter(|h| h.applies(now_ms())).cloned(),
                route: r.key.clone(),
                app: r.info.app.clone(),
                listen: r.listen,
                hosts: r.hosts.clone(),
                upstreams: r
                    .upstreams
                    .iter()
                    .map(|u| UpstreamStatus {
                        addr: u.addr,
                        weight: u.weight,
                        inflight: u.shared.inflight.load(Ordering::SeqCst),
                        ejected: u.shared.health.ejection(now),
                    })
                    .collect(),
            })
            .collect();
        let routed = |addr: &SocketAddr| {
            routes
                .iter()
                .any(|r| r.upstreams.iter().any(|u| u.addr == *addr))
        };
        let draining = self
            .counters()
            .iter()
            .map(|(addr, n)| (*addr, n.inflight.load(Ordering::SeqCst)))
            .filter(|(addr, n)| *n > 0 && !routed(addr))
            .collect();
        (table.generation, routes, draining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{conflict, Route, Upstream};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    const LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8000);

    fn route(env: &str, hosts: &[&str], upstreams: &[(u16, u32)]) -> Route {
        let mut route = Route::new(RouteKey::new("/srv/lab/.cutover", env), LISTEN);
        route.hosts = hosts.iter().map(|h| h.to_string()).collect();
        route.upstreams = upstreams
            .iter()
            .map(|&(port, weight)| Upstream::new(addr(port), weight))
            .collect();
        route
    }

    fn file(generation: u64, upstreams: &[(u16, u32)]) -> RoutesFile {
        RoutesFile {
            generation,
            holds: Vec::new(),
            routes: vec![route("staging", &[], upstreams)],
        }
    }

    fn table(file: &RoutesFile) -> Routes {
        let dir = tempfile::tempdir().unwrap().keep();
        let log = Arc::new(AccessLog::open(&dir.join("access.log")).unwrap());
        Routes::new(file, log)
    }

    fn request() -> request::Parts {
        hyper::Request::new(()).into_parts().0
    }

    fn for_host(host: &str) -> request::Parts {
        hyper::Request::builder()
            .header("host", host)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    impl Routes {
        fn pick_any(
            &self,
            request: &request::Parts,
            avoid: Option<SocketAddr>,
        ) -> Option<InflightGuard> {
            self.pick(LISTEN, request, avoid).ok()
        }
    }

    #[test]
    fn smooth_weighted_round_robin_is_nginx_s() {
        let names = |weights: &[u32]| -> String {
            smooth_schedule(weights)
                .iter()
                .map(|&i| char::from(b'a' + u8::try_from(i).unwrap()))
                .collect()
        };
        // The sequence nginx documents for weights 5, 1, 1.
        assert_eq!(names(&[5, 1, 1]), "aabacaa");
        assert_eq!(names(&[100, 100]), "ab");
        assert_eq!(names(&[90, 10]), "aaaaabaaaa");
        assert_eq!(names(&[100, 0]), "a");
        assert_eq!(names(&[0, 100, 0]), "b");
        assert_eq!(names(&[0, 0]), "");
        assert_eq!(names(&[]), "");
        let widest = smooth_schedule(&[1000, 999]);
        assert_eq!(widest.len(), 1999);
        assert_eq!(widest.iter().filter(|&&i| i == 1).count(), 999);
    }

    #[test]
    fn round_robin_and_inflight_counts() {
        let routes = table(&file(1, &[(1, 100), (2, 100)]));
        let a = routes.pick_any(&request(), None).unwrap();
        let b = routes.pick_any(&request(), None).unwrap();
        assert_ne!(a.addr, b.addr);
        assert_eq!(routes.inflight_to(&[addr(1), addr(2)]), 2);
        drop(a);
        assert_eq!(routes.inflight_to(&[addr(1), addr(2)]), 1);
        drop(b);
        assert_eq!(routes.inflight_to(&[addr(1), addr(2)]), 0);
    }

    #[test]
    fn avoid_picks_another_upstream_with_a_weight_when_there_is_one() {
        let routes = table(&file(1, &[(1, 90), (2, 10)]));
        for _ in 0..30 {
            assert_eq!(
                routes.pick_any(&request(), Some(addr(1))).unwrap().addr,
                addr(2)
            );
            assert_eq!(
                routes.pick_any(&request(), Some(addr(2))).unwrap().addr,
                addr(1)
            );
        }
        routes.install(&file(2, &[(1, 100), (2, 0)]));
        assert_eq!(
            routes.pick_any(&request(), Some(addr(1))).unwrap().addr,
            addr(1)
        );
        routes.install(&file(3, &[(1, 100)]));
        assert_eq!(
            routes.pick_any(&request(), Some(addr(1))).unwrap().addr,
            addr(1)
        );
    }

    #[test]
    fn an_ejected_upstream_is_skipped_while_another_is_not_and_the_last_is_tried_anyway() {
        let routes = table(&file(1, &[(1, 100), (2, 100), (3, 100)]));
        let failed = routes.pick_any(&request(), None).unwrap();
        let dead = failed.addr;
        assert!(failed.connect_failed("refused").is_some());
        drop(failed);
        for _ in 0..30 {
            assert_ne!(routes.pick_any(&request(), None).unwrap().addr, dead);
        }
        let (_, status_routes, _) = routes.status();
        let shown: Vec<_> = status_routes[0]
            .upstreams
            .iter()
            .filter(|u| u.ejected.is_some())
            .map(|u| u.addr)
            .collect();
        assert_eq!(shown, vec![dead]);
        // Every other one ejected too: the route still answers, by turn.
        for other in [1, 2, 3].map(addr).into_iter().filter(|a| *a != dead) {
            let guard = loop {
                let g = routes.pick_any(&request(), None).unwrap();
                if g.addr == other {
                    break g;
                }
            };
            assert!(guard.connect_failed("refused").is_some());
        }
        let picked: BTreeSet<SocketAddr> = (0..30)
            .map(|_| routes.pick_any(&request(), None).unwrap().addr)
            .collect();
        assert_eq!(picked.len(), 3, "{picked:?}");
        // A retry avoids the one that failed even when the other is ejected.
        let routes = table(&file(2, &[(1, 100), (2, 100)]));
        let guard = loop {
            let g = routes.pick_any(&request(), None).unwrap();
            if g.addr == addr(2) {
                break g;
            }
        };
        guard.connect_failed("refused");
        drop(guard);
        assert_eq!(
            routes.pick_any(&request(), Some(addr(1))).unwrap().addr,
            addr(2)
        );
        // One upstream: never skipped.
        let routes = table(&file(3, &[(1, 100)]));
        routes
            .pick_any(&request(), None)
            .unwrap()
            .connect_failed("refused");
        assert_eq!(routes.pick_any(&request(), None).unwrap().addr, addr(1));
    }

    #[test]
    fn counters_survive_a_swap_while_busy() {
        let routes = table(&file(1, &[(1, 100)]));
        let busy = routes.pick_any(&request(), None).unwrap();
        routes.install(&file(2, &[(2, 100)]));
        assert_eq!(routes.inflight_to(&[addr(1)]), 1);
        assert_eq!(routes.status().2.get(&addr(1)), Some(&1));
        drop(busy);
        assert_eq!(routes.inflight_to(&[addr(1)]), 0);
        assert!(routes.status().2.is_empty());
        assert!(routes
            .pick_any(&request(), None)
            .is_some_and(|g| g.addr == addr(2)));
        assert!(table(&RoutesFile::default())
            .pick_any(&request(), None)
            .is_none());
        assert!(table(&file(1, &[(1, 0)]))
            .pick_any(&request(), None)
            .is_none());
    }

    #[test]
    fn a_set_replaces_its_route_and_counts_a_generation() {
        let first = file(4, &[(1, 100)]);
        let route = file(0, &[(2, 100)]).routes.remove(0);
        let next = first.with(route.clone());
        assert_eq!(next.generation, 5);
        assert_eq!(next.routes, vec![route]);
        next.validate().unwrap();
        let gone = next.without("/srv/lab/.cutover", Some("production"));
        assert_eq!(gone.routes.len(), 1);
        assert!(next.without("/srv/lab/.cutover", None).routes.is_empty());
    }

    #[test]
    fn requests_go_by_host_then_wildcard_and_no_route_is_a_miss() {
        let file = RoutesFile {
            generation: 1,
            holds: Vec::new(),
            routes: vec![
                route("staging", &["staging.example.com"], &[(1, 100)]),
                route("production", &["example.com", "*.example.com"], &[(2, 100)]),
            ],
        };
        file.validate().unwrap();
        let routes = table(&file);
        let to = |host: &str| {
            routes
                .pick(LISTEN, &for_host(host), None)
                .ok()
                .map(|g| g.addr.port())
        };
        assert_eq!(to("staging.example.com"), Some(1));
        assert_eq!(to("STAGING.example.com.:8000"), Some(1));
        assert_eq!(to("example.com"), Some(2));
        assert_eq!(to("www.example.com"), Some(2));
        assert_eq!(to("other.org"), None);
        assert!(matches!(
            routes.pick(LISTEN, &request(), None),
            Err(Miss::NoRoute)
        ));
        let elsewhere = SocketAddr::from(([127, 0, 0, 1], 9));
        assert!(matches!(
            routes.pick(elsewhere, &for_host("example.com"), None),
            Err(Miss::NoRoute)
        ));
    }

    #[test]
    fn claims_are_refused_naming_the_owner() {
        let mut tasks = route("production", &["tasks.example.com"], &[]);
        tasks.app = "tasks".into();
        let mut blog = route("production", &["tasks.example.com"], &[]);
        blog.key.owner = "/srv/blog/.cutover".into();
        let error = conflict(&blog, [&tasks]).unwrap();
        assert_eq!(error.code, crate::protocol::ErrorCode::Claimed);
        assert_eq!(error.field.as_deref(), Some("hosts"));
        assert!(
            error
                .message
                .contains("tasks (state dir /srv/lab/.cutover)"),
            "{error}"
        );
        blog.hosts = vec!["blog.example.com".into()];
        assert!(conflict(&blog, [&tasks]).is_none());
        blog.hosts.clear();
        assert_eq!(
            conflict(&blog, [&tasks]).unwrap().field.as_deref(),
            Some("hosts")
        );
        assert_eq!(
            conflict(&tasks, [&blog]).unwrap().field.as_deref(),
            Some("listen")
        );
        // Its own key is no conflict: a set replaces it.
        assert!(conflict(&tasks, [&tasks]).is_none());
    }
}
