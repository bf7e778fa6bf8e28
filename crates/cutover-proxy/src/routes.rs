//! The route table: which upstreams serve the environment right now, behind one `ArcSwap` so
//! that a cutover is a single atomic swap, plus per-upstream in-flight counters for drains.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use hyper::http::uri::Authority;
use serde::{Deserialize, Serialize};

/// What the proxy keeps on disk (and what one `set` installs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutesFile {
    pub generation: u64,
    pub upstreams: Vec<SocketAddr>,
}

impl RoutesFile {
    /// Reads the routes file; a missing file means "no routes yet".
    pub fn load(path: &Path) -> std::io::Result<RoutesFile> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a valid routes file: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RoutesFile::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the routes file atomically (readers see the old or the new routes, never a mix).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        cutover_daemon::write_atomic(path, &bytes)
    }
}

struct Upstream {
    addr: SocketAddr,
    /// `addr` as the authority of request URIs, made once per table rather than per request.
    authority: Authority,
    inflight: Arc<AtomicU64>,
}

struct Table {
    generation: u64,
    upstreams: Vec<Upstream>,
}

/// Counts one request in flight to `addr` until dropped.
#[derive(Debug)]
pub(crate) struct InflightGuard {
    pub addr: SocketAddr,
    pub authority: Authority,
    counter: Arc<AtomicU64>,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) struct Routes {
    table: ArcSwap<Table>,
    next: AtomicUsize,
    /// One counter per upstream, shared by every table that names it, so that a request sent
    /// before a swap is still counted after it.
    counters: Mutex<HashMap<SocketAddr, Arc<AtomicU64>>>,
}

impl Routes {
    pub fn new(initial: &RoutesFile) -> Routes {
        let routes = Routes {
            table: ArcSwap::from_pointee(Table {
                generation: 0,
                upstreams: Vec::new(),
            }),
            next: AtomicUsize::new(0),
            counters: Mutex::new(HashMap::new()),
        };
        routes.install(initial);
        routes
    }

    fn counters(&self) -> MutexGuard<'_, HashMap<SocketAddr, Arc<AtomicU64>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Swaps in new routes: every request that picks its upstream after this returns uses them.
    pub fn install(&self, routes: &RoutesFile) {
        let mut counters = self.counters();
        let mut upstreams: Vec<Upstream> = Vec::new();
        for addr in &routes.upstreams {
            if upstreams.iter().any(|u| u.addr == *addr) {
                continue;
            }
            let inflight = counters.entry(*addr).or_default().clone();
            let authority = Authority::try_from(addr.to_string())
                .expect("a socket address is a valid URI authority");
            upstreams.push(Upstream {
                addr: *addr,
                authority,
                inflight,
            });
        }
        self.table.store(Arc::new(Table {
            generation: routes.generation,
            upstreams,
        }));
        // Forget idle upstreams that are no longer routed to. A request that picked one from
        // the old table notices the swap in `pick` and picks again.
        counters.retain(|addr, n| routes.upstreams.contains(addr) || n.load(Ordering::SeqCst) > 0);
    }

    pub fn generation(&self) -> u64 {
        self.table.load().generation
    }

    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.table.load().upstreams.iter().map(|u| u.addr).collect()
    }

    /// Picks the next upstream round-robin (avoiding `avoid` when there is another one) and
    /// counts the request in flight. `None` when no upstream is routed.
    pub fn pick(&self, avoid: Option<SocketAddr>) -> Option<InflightGuard> {
        loop {
            // `load` (not `load_full`): no reference count shared by all threads on the hot path.
            let table = self.table.load();
            let len = table.upstreams.len();
            if len == 0 {
                return None;
            }
            // One upstream (the usual case): no shared round-robin counter to bounce between cores.
            let mut i = if len == 1 {
                0
            } else {
                self.next.fetch_add(1, Ordering::Relaxed) % len
            };
            if len > 1 && Some(table.upstreams[i].addr) == avoid {
                i = (i + 1) % len;
            }
            let upstream = &table.upstreams[i];
            upstream.inflight.fetch_add(1, Ordering::SeqCst);
            let guard = InflightGuard {
                addr: upstream.addr,
                authority: upstream.authority.clone(),
                counter: upstream.inflight.clone(),
            };
            // If a swap happened between the load and the increment, a drain may already have
            // seen zero for this upstream: pick again from the new table.
            if Arc::ptr_eq(&*table, &*self.table.load()) {
                return Some(guard);
            }
        }
    }

    /// Requests in flight to any of `addrs`.
    pub fn inflight_to(&self, addrs: &[SocketAddr]) -> u64 {
        let counters = self.counters();
        addrs
            .iter()
            .filter_map(|a| counters.get(a))
            .map(|n| n.load(Ordering::SeqCst))
            .sum()
    }

    /// In-flight counts of the routed upstreams and of any other upstream still busy.
    pub fn inflight(&self) -> BTreeMap<SocketAddr, u64> {
        let routed = self.upstreams();
        self.counters()
            .iter()
            .map(|(addr, n)| (*addr, n.load(Ordering::SeqCst)))
            .filter(|(addr, n)| *n > 0 || routed.contains(addr))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn round_robin_and_inflight_counts() {
        let routes = Routes::new(&RoutesFile {
            generation: 1,
            upstreams: vec![addr(1), addr(2)],
        });
        let a = routes.pick(None).unwrap();
        let b = routes.pick(None).unwrap();
        assert_ne!(a.addr, b.addr);
        assert_eq!(routes.inflight_to(&[addr(1), addr(2)]), 2);
        drop(a);
        assert_eq!(routes.inflight_to(&[addr(1), addr(2)]), 1);
        drop(b);
        assert_eq!(routes.inflight_to(&[addr(1), addr(2)]), 0);
    }

    #[test]
    fn avoid_picks_another_upstream_when_there_is_one() {
        let routes = Routes::new(&RoutesFile {
            generation: 1,
            upstreams: vec![addr(1), addr(2)],
        });
        for _ in 0..10 {
            assert_eq!(routes.pick(Some(addr(1))).unwrap().addr, addr(2));
        }
        routes.install(&RoutesFile {
            generation: 2,
            upstreams: vec![addr(1)],
        });
        assert_eq!(routes.pick(Some(addr(1))).unwrap().addr, addr(1));
    }

    #[test]
    fn counters_survive_a_swap_while_busy() {
        let routes = Routes::new(&RoutesFile {
            generation: 1,
            upstreams: vec![addr(1)],
        });
        let busy = routes.pick(None).unwrap();
        routes.install(&RoutesFile {
            generation: 2,
            upstreams: vec![addr(2)],
        });
        assert_eq!(routes.inflight_to(&[addr(1)]), 1);
        assert_eq!(routes.inflight().get(&addr(1)), Some(&1));
        drop(busy);
        assert_eq!(routes.inflight_to(&[addr(1)]), 0);
        assert!(routes.pick(None).is_some_and(|g| g.addr == addr(2)));
        assert!(Routes::new(&RoutesFile::default()).pick(None).is_none());
    }
}
