//! Passive health of the upstreams: an upstream that cannot be connected to is skipped for a
//! while (see [`Health`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::protocol::Ejection;

/// How long an upstream is skipped after its first connect failure; each further ejection in a
/// row lasts twice as long, up to [`LONGEST_EJECTION_MS`].
pub(crate) const FIRST_EJECTION_MS: u64 = 10_000;
pub(crate) const LONGEST_EJECTION_MS: u64 = 160_000;
/// When an ejection ends, one request tries the upstream again; the others keep skipping it
/// for this long, or until that request connects.
const TRIAL_MS: u64 = 5_000;

/// Passive health of one upstream, as nginx's `max_fails=1 fail_timeout` or Envoy's outlier
/// detection on connect failures: a connect that fails (refused, timed out) ejects the upstream
/// for [`FIRST_EJECTION_MS`], doubling on each ejection in a row; [`RouteState::next`] skips it
/// while another upstream of the route is not ejected (the last one is never skipped). When
/// the time is up, one request tries it: a connection clears the ejection, a failure ejects it
/// again for twice as long. A request costs one atomic load while nothing is ejected.
#[derive(Default)]
pub(crate) struct Health {
    /// Unix ms until which the upstream is skipped; 0: not ejected.
    until_ms: AtomicU64,
    /// Ejections in a row.
    times: AtomicU32,
    /// One request is trying it again after its ejection.
    trying: AtomicBool,
    /// Why the last connect failed (written on failures only).
    error: Mutex<String>,
}

impl Health {
    /// Whether a new request may go to the upstream now (`now` is read only when it is
    /// ejected). When its ejection is over, the first request to ask is let through and the
    /// others keep skipping it while that one tries.
    pub fn admits(&self, now: impl FnOnce() -> u64) -> bool {
        let until = self.until_ms.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        let now = now();
        if now < until {
            return false;
        }
        let won = self
            .until_ms
            .compare_exchange(until, now + TRIAL_MS, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if won {
            self.trying.store(true, Ordering::Relaxed);
        }
        won
    }

    /// A connection to the upstream succeeded: true when that ends an ejection.
    pub fn connected(&self) -> bool {
        if self.until_ms.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.trying.store(false, Ordering::Relaxed);
        self.times.store(0, Ordering::Relaxed);
        self.until_ms.swap(0, Ordering::Relaxed) != 0
    }

    /// A connect to the upstream failed at `now`: it is ejected (returns for how long), unless
    /// it already is and this request set out before that (then nothing changes).
    pub fn connect_failed(&self, now: u64, error: &str) -> Option<u64> {
        let trial = self.trying.swap(false, Ordering::Relaxed);
        if !trial && self.until_ms.load(Ordering::Relaxed) > now {
            return None;
        }
        let times = self.times.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let length = FIRST_EJECTION_MS
            .saturating_mul(1u64 << (times - 1).min(16))
            .min(LONGEST_EJECTION_MS);
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = error.to_string();
        self.until_ms.store(now + length, Ordering::Relaxed);
        Some(length)
    }

    /// The ejection in force at `now`, for `status`.
    pub fn ejection(&self, now: u64) -> Option<Ejection> {
        let until_ms = self.until_ms.load(Ordering::Relaxed);
        (until_ms > now).then(|| Ejection {
            until_ms,
            times: self.times.load(Ordering::Relaxed),
            error: self.error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_connect_ejects_for_10_s_doubling_and_one_request_tries_again() {
        let health = Health::default();
        let at = |t: u64| move || t;
        assert!(health.admits(|| unreachable!("no clock while nothing is ejected")));
        assert_eq!(health.connect_failed(1_000, "refused"), Some(10_000));
        assert!(!health.admits(at(5_000)));
        // A request that set out before the ejection fails too: nothing doubles.
        assert_eq!(health.connect_failed(5_000, "refused"), None);
        assert_eq!(health.ejection(5_000).map(|e| e.until_ms), Some(11_000));
        // Its time is up: one request tries it, the others keep skipping it meanwhile.
        assert!(health.admits(at(11_000)));
        assert!(!health.admits(at(11_001)));
        // That one fails: twice as long, and so on up to the cap.
        assert_eq!(health.connect_failed(12_000, "timed out"), Some(20_000));
        assert!(!health.admits(at(31_999)));
        let mut now = 32_000;
        for expected in [40_000, 80_000, 160_000, 160_000] {
            assert!(health.admits(at(now)));
            assert_eq!(health.connect_failed(now, "timed out"), Some(expected));
            now += expected;
        }
        let shown = health.ejection(now - 1).unwrap();
        assert_eq!((shown.times, shown.error.as_str()), (6, "timed out"));
        // The one that tries it connects: the ejection ends, the next failure starts over.
        assert!(health.admits(at(now)));
        assert!(health.connected());
        assert!(!health.connected(), "said once");
        assert!(health.admits(|| unreachable!()));
        assert_eq!(health.ejection(now), None);
        assert_eq!(health.connect_failed(now, "refused"), Some(10_000));
    }
}
