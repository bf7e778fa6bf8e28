//! The route table: for each route, its upstreams and their weights, behind one `ArcSwap` so
//! that a cutover is a single atomic swap, plus per-upstream in-flight counters for drains.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use hyper::http::request;
use hyper::http::uri::Authority;
use serde::{Deserialize, Serialize};

use crate::protocol::{
    AdminError, ErrorCode, Hold, Limits, Route, RouteHold, RouteKey, RouteStatus, Upstream,
    UpstreamStatus, DEFAULT_WEIGHT,
};

/// What the proxy keeps on disk: every route it serves, as installed by the last `set`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesFile {
    pub generation: u64,
    pub routes: Vec<Route>,
    /// Holds on routes (maintenance, pause), set with the `hold` op.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<RouteHold>,
}

/// The routes file as read: today's shape, or that of an edge from before routes and weights
/// (`{generation, upstreams}`: one list of upstreams for the whole environment).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    #[serde(default)]
    generation: u64,
    routes: Option<Vec<Route>>,
    upstreams: Option<Vec<SocketAddr>>,
    #[serde(default)]
    holds: Vec<RouteHold>,
}

impl RoutesFile {
    /// Reads and checks the routes file of the edge serving `env`; a missing file means "no
    /// routes yet". A file of an older edge routes `env` to its upstreams, each at weight
    /// [`DEFAULT_WEIGHT`]; the next change writes it in today's shape.
    pub fn load(path: &Path, env: &str) -> std::io::Result<RoutesFile> {
        let invalid = |detail: String| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a valid routes file: {detail}", path.display()),
            )
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RoutesFile::default()),
            Err(e) => return Err(e),
        };
        let on_disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        let routes = match (on_disk.routes, on_disk.upstreams) {
            (Some(routes), None) => routes,
            (None, Some(old)) => {
                let mut upstreams: Vec<Upstream> = Vec::new();
                for addr in old {
                    // Older edges ignored an upstream listed twice.
                    if !upstreams.iter().any(|u| u.addr == addr) {
                        upstreams.push(Upstream::new(addr, DEFAULT_WEIGHT));
                    }
                }
                vec![Route {
                    key: RouteKey::env(env),
                    upstreams,
                    limits: Limits::default(),
                }]
            }
            (None, None) => Vec::new(),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "it has both `routes` and `upstreams` (an older edge's field)".to_string(),
                ))
            }
        };
        let file = RoutesFile {
            generation: on_disk.generation,
            routes,
            holds: on_disk.holds,
        };
        file.validate(env).map_err(|e| invalid(e.to_string()))?;
        Ok(file)
    }

    /// Writes the routes file atomically (readers see the old or the new routes, never a mix).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        cutover_daemon::write_atomic(path, &bytes)
    }

    /// These routes with `route` installed in place of the route of the same key (or added),
    /// as the next generation.
    pub fn with(&self, route: Route) -> RoutesFile {
        let mut routes = self.routes.clone();
        match routes.iter_mut().find(|r| r.key == route.key) {
            Some(slot) => *slot = route,
            None => routes.push(route),
        }
        RoutesFile {
            generation: self.generation + 1,
            routes,
            holds: self.holds.clone(),
        }
    }

    /// These routes with the hold of `route` replaced (or lifted), as the next generation.
    pub fn with_hold(&self, route: &RouteKey, hold: Option<Hold>) -> RoutesFile {
        let mut holds: Vec<RouteHold> = self
            .holds
            .iter()
            .filter(|h| &h.route != route)
            .cloned()
            .collect();
        if let Some(hold) = hold {
            holds.push(RouteHold {
                route: route.clone(),
                hold,
            });
        }
        RoutesFile {
            generation: self.generation + 1,
            routes: self.routes.clone(),
            holds,
        }
    }

    /// Checks every route, and that the edge of `env` serves each of them.
    pub fn validate(&self, env: &str) -> Result<(), AdminError> {
        for (i, route) in self.routes.iter().enumerate() {
            let at = |e: AdminError| AdminError {
                field: Some(format!(
                    "routes[{i}].{}",
                    e.field.as_deref().unwrap_or("route")
                )),
                ..e
            };
            route.validate().map_err(at)?;
            serves(env, &route.key).map_err(at)?;
            if self.routes[..i].iter().any(|r| r.key == route.key) {
                return Err(at(AdminError::bad_request(
                    "route",
                    format!("route {} is listed twice", route.key),
                    "list each route once",
                )));
            }
        }
        Ok(())
    }
}

/// Whether the edge of `env` serves `key`: each edge serves one environment, so one route.
pub(crate) fn serves(env: &str, key: &RouteKey) -> Result<(), AdminError> {
    if key.env == env {
        return Ok(());
    }
    Err(AdminError::new(
        ErrorCode::UnknownRoute,
        format!("this edge serves the environment {env}, not {}", key.env),
    )
    .field("route.env")
    .hint(format!(
        "each environment has its own edge proxy: send the request to {}'s admin socket",
        key.env
    )))
}

/// Whether a request belongs to `key`. A key made of an environment only takes every request
/// that reaches its edge; a listen address or `Host` in the key will narrow it here.
fn matches(key: &RouteKey, _request: &request::Parts) -> bool {
    // Every field of the key, so that a new one cannot be forgotten here.
    let RouteKey { env: _ } = key;
    true
}

/// Which upstream served a request, for the access log (in the response's extensions).
#[derive(Debug)]
pub(crate) struct Served {
    pub addr: String,
    pub instance: Option<String>,
    pub release: Option<i64>,
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
}

struct RouteState {
    key: RouteKey,
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
    /// The index of the upstream that takes the next request (not `avoid` when another one
    /// has a weight). `None` when no upstream has a weight.
    fn next(&self, avoid: Option<SocketAddr>) -> Option<usize> {
        let len = self.schedule.len();
        if len <= 1 {
            // One upstream with a weight (the usual case): no shared cursor to bounce between
            // cores.
            return self.schedule.first().map(|&i| usize::from(i));
        }
        let at = self.cursor.fetch_add(1, Ordering::Relaxed);
        let picked = usize::from(self.schedule[at % len]);
        match avoid {
            Some(avoid) if self.upstreams[picked].addr == avoid => (1..len)
                .map(|k| usize::from(self.schedule[(at + k) % len]))
                .find(|&i| self.upstreams[i].addr != avoid)
                .or(Some(picked)),
            _ => Some(picked),
        }
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
}

impl Table {
    fn route_for(&self, request: &request::Parts) -> Option<&RouteState> {
        self.routes.iter().find(|r| matches(&r.key, request))
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
}

impl Routes {
    pub fn new(initial: &RoutesFile) -> Routes {
        let routes = Routes {
            table: ArcSwap::from_pointee(Table {
                generation: 0,
                routes: Vec::new(),
            }),
            counters: Mutex::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
            held: AtomicU64::new(0),
        };
        routes.install(initial);
        routes
    }

    fn counters(&self) -> MutexGuard<'_, HashMap<SocketAddr, Arc<Shared>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Swaps in new routes: every request that picks its upstream after this returns uses them.
    /// Start-up and every `set` go through here.
    pub fn install(&self, file: &RoutesFile) {
        let mut counters = self.counters();
        let mut routes = Vec::with_capacity(file.routes.len());
        for route in &file.routes {
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
        self.table.store(Arc::new(Table {
            generation: file.generation,
            routes,
        }));
        self.changed.notify_waiters();
        // Forget idle upstreams that are no longer routed to. A request that picked one from
        // the old table notices the swap in `pick` and picks again.
        let routed = |addr: &SocketAddr| {
            file.routes
                .iter()
                .any(|r| r.upstreams.iter().any(|u| u.addr == *addr))
        };
        counters.retain(|addr, n| routed(addr) || n.inflight.load(Ordering::SeqCst) > 0);
    }

    /// Picks the upstream of the request's route by weight (avoiding `avoid` when another one
    /// has a weight) and counts the request in flight. `None` when nothing serves the request.
    pub fn pick(
        &self,
        request: &request::Parts,
        avoid: Option<SocketAddr>,
    ) -> Option<InflightGuard> {
        loop {
            // `load` (not `load_full`): no reference count shared by all threads on the hot path.
            let table = self.table.load();
            let route = table.route_for(request)?;
            if route.hold.as_ref().is_some_and(|h| h.applies(now_ms())) {
                return None;
            }
            let upstream = &route.upstreams[route.next(avoid)?];
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
                return Some(guard);
            }
        }
    }

    /// The hold on the request's route, while it applies (why `pick` found nothing).
    pub fn hold_for(&self, request: &request::Parts) -> Option<Arc<Hold>> {
        let table = self.table.load();
        let hold = table.route_for(request)?.hold.clone()?;
        hold.applies(now_ms()).then_some(hold)
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

    /// The limits a client connection starts with, before its first request picks a route:
    /// those of the edge's route (each edge serves one), else the defaults.
    pub fn connection_limits(&self) -> Limits {
        self.table
            .load()
            .routes
            .first()
            .map(|r| r.limits)
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
        let routes: Vec<RouteStatus> = table
            .routes
            .iter()
            .map(|r| RouteStatus {
                hold: r.hold.as_deref().filter(|h| h.applies(now_ms())).cloned(),
                route: r.key.clone(),
                upstreams: r
                    .upstreams
                    .iter()
                    .map(|u| UpstreamStatus {
                        addr: u.addr,
                        weight: u.weight,
                        inflight: u.shared.inflight.load(Ordering::SeqCst),
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

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn file(generation: u64, upstreams: &[(u16, u32)]) -> RoutesFile {
        RoutesFile {
            generation,
            holds: Vec::new(),
            routes: vec![Route {
                key: RouteKey::env("staging"),
                upstreams: upstreams
                    .iter()
                    .map(|&(port, weight)| Upstream::new(addr(port), weight))
                    .collect(),
                limits: Limits::default(),
            }],
        }
    }

    fn request() -> request::Parts {
        hyper::Request::new(()).into_parts().0
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
        let routes = Routes::new(&file(1, &[(1, 100), (2, 100)]));
        let a = routes.pick(&request(), None).unwrap();
        let b = routes.pick(&request(), None).unwrap();
        assert_ne!(a.addr, b.addr);
        assert_eq!(routes.inflight_to(&[addr(1), addr(2)]), 2);
        drop(a);
        assert_eq!(routes.inflight_to(&[addr(1), addr(2)]), 1);
        drop(b);
        assert_eq!(routes.inflight_to(&[addr(1), addr(2)]), 0);
    }

    #[test]
    fn avoid_picks_another_upstream_with_a_weight_when_there_is_one() {
        let routes = Routes::new(&file(1, &[(1, 90), (2, 10)]));
        for _ in 0..30 {
            assert_eq!(
                routes.pick(&request(), Some(addr(1))).unwrap().addr,
                addr(2)
            );
            assert_eq!(
                routes.pick(&request(), Some(addr(2))).unwrap().addr,
                addr(1)
            );
        }
        routes.install(&file(2, &[(1, 100), (2, 0)]));
        assert_eq!(
            routes.pick(&request(), Some(addr(1))).unwrap().addr,
            addr(1)
        );
        routes.install(&file(3, &[(1, 100)]));
        assert_eq!(
            routes.pick(&request(), Some(addr(1))).unwrap().addr,
            addr(1)
        );
    }

    #[test]
    fn counters_survive_a_swap_while_busy() {
        let routes = Routes::new(&file(1, &[(1, 100)]));
        let busy = routes.pick(&request(), None).unwrap();
        routes.install(&file(2, &[(2, 100)]));
        assert_eq!(routes.inflight_to(&[addr(1)]), 1);
        assert_eq!(routes.status().2.get(&addr(1)), Some(&1));
        drop(busy);
        assert_eq!(routes.inflight_to(&[addr(1)]), 0);
        assert!(routes.status().2.is_empty());
        assert!(routes
            .pick(&request(), None)
            .is_some_and(|g| g.addr == addr(2)));
        assert!(Routes::new(&RoutesFile::default())
            .pick(&request(), None)
            .is_none());
        assert!(Routes::new(&file(1, &[(1, 0)]))
            .pick(&request(), None)
            .is_none());
    }

    #[test]
    fn a_set_replaces_its_route_and_counts_a_generation() {
        let first = file(4, &[(1, 100)]);
        let route = file(0, &[(2, 100)]).routes.remove(0);
        let next = first.with(route.clone());
        assert_eq!(next.generation, 5);
        assert_eq!(next.routes, vec![route]);
        next.validate("staging").unwrap();
        let error = next.validate("production").unwrap_err();
        assert_eq!(error.code, ErrorCode::UnknownRoute);
        assert_eq!(error.field.as_deref(), Some("routes[0].route.env"));
    }
}
