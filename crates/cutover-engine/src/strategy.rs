//! Strategies: how the instances of a new release take over from the serving ones. The
//! converge path asks the strategy; it never matches on strategy names itself.
//!
//! - blue-green (default): the new instances start beside the serving ones, are verified, and
//!   traffic switches to them at once; the old ones stay warm through the monitor window.
//! - recreate: the serving instances stop first (the course's `deploy.sh`), so the environment
//!   does not serve until the new version is up — a gap by design.
//!
//! A canary strategy adds traffic steps (weights) between "verified" and "all traffic".

use cutover_config::Strategy as Configured;

pub(crate) trait Strategy: Send + Sync {
    /// Stop the serving instances before the new ones start.
    fn stops_first(&self) -> bool;
    /// Keep the instances left behind warm through the monitor window (a rollback inside it
    /// is then a switch, not a restart).
    fn keeps_standby(&self) -> bool;
}

pub(crate) struct BlueGreen;
pub(crate) struct Recreate;

impl Strategy for BlueGreen {
    fn stops_first(&self) -> bool {
        false
    }
    fn keeps_standby(&self) -> bool {
        true
    }
}

impl Strategy for Recreate {
    fn stops_first(&self) -> bool {
        true
    }
    fn keeps_standby(&self) -> bool {
        false
    }
}

/// The strategy an environment's config names.
pub(crate) fn of(configured: Configured) -> &'static dyn Strategy {
    match configured {
        Configured::BlueGreen => &BlueGreen,
        Configured::Recreate => &Recreate,
    }
}
