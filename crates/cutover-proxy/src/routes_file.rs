//! The routes file: what the edge keeps on disk (`routes.json`), as installed by the last
//! `set`, and the older shapes an edge of an earlier kind left (read once, by a migration).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::protocol::{
    conflict, AdminError, Hold, Limits, Route, RouteHold, RouteKey, Upstream, DEFAULT_WEIGHT,
};

/// What the edge keeps on disk: every route it serves, as installed by the last `set`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesFile {
    pub generation: u64,
    pub routes: Vec<Route>,
    /// Holds on routes (maintenance, pause), set with the `hold` op.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<RouteHold>,
}

impl RoutesFile {
    /// Reads and checks the routes file; a missing file means "no routes yet".
    pub fn load(path: &Path) -> std::io::Result<RoutesFile> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RoutesFile::default()),
            Err(e) => return Err(e),
        };
        let invalid = |detail: String| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a valid routes file: {detail}", path.display()),
            )
        };
        let file: RoutesFile =
            serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        file.validate().map_err(|e| invalid(e.to_string()))?;
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

    /// These routes without those of `owner` (only `env`'s when given), as the next
    /// generation. Their holds stay, as the app's ledger keeps them, for its next deploy.
    pub fn without(&self, owner: &str, env: Option<&str>) -> RoutesFile {
        let gone = |key: &RouteKey| key.owner == owner && env.is_none_or(|e| key.env == e);
        RoutesFile {
            generation: self.generation + 1,
            routes: self
                .routes
                .iter()
                .filter(|r| !gone(&r.key))
                .cloned()
                .collect(),
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

    /// The addresses the routes listen on (their `http_redirect`s too).
    pub fn listens(&self) -> BTreeSet<SocketAddr> {
        self.routes
            .iter()
            .flat_map(|r| std::iter::once(r.listen).chain(r.http_redirect))
            .collect()
    }

    /// Checks every route, and that no two claim the same address and host.
    pub fn validate(&self) -> Result<(), AdminError> {
        for (i, route) in self.routes.iter().enumerate() {
            let at = |e: AdminError| AdminError {
                field: Some(format!(
                    "routes[{i}].{}",
                    e.field.as_deref().unwrap_or("route")
                )),
                ..e
            };
            route.validate().map_err(at)?;
            if self.routes[..i].iter().any(|r| r.key == route.key) {
                return Err(at(AdminError::bad_request(
                    "route",
                    format!("route {} is listed twice", route.key),
                    "list each route once",
                )));
            }
            if let Some(e) = conflict(route, &self.routes[..i]) {
                return Err(at(e));
            }
        }
        Ok(())
    }
}

/// What the edge of one environment (before one edge served the machine) routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyRoute {
    pub upstreams: Vec<Upstream>,
    pub limits: Limits,
    pub hold: Option<Hold>,
}

/// What a routes file of the edge of one environment routed for `env`. `None` when there is no
/// such file. Reads both older shapes: `{generation, routes, holds}` keyed by `{env}`, and
/// `{generation, upstreams}`.
pub fn legacy_routes(path: &Path, env: &str) -> std::io::Result<Option<LegacyRoute>> {
    #[derive(Deserialize)]
    struct OldKey {
        env: String,
    }
    #[derive(Deserialize)]
    struct OldRoute {
        route: OldKey,
        upstreams: Vec<Upstream>,
        #[serde(default)]
        limits: Limits,
    }
    #[derive(Deserialize)]
    struct OldHold {
        route: OldKey,
        hold: Hold,
    }
    #[derive(Deserialize)]
    struct OldFile {
        routes: Option<Vec<OldRoute>>,
        upstreams: Option<Vec<SocketAddr>>,
        #[serde(default)]
        holds: Vec<OldHold>,
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let old: OldFile = serde_json::from_slice(&bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is not a routes file of an older edge: {e}",
                path.display()
            ),
        )
    })?;
    let hold = old
        .holds
        .into_iter()
        .find(|h| h.route.env == env)
        .map(|h| h.hold);
    if let Some(route) = old
        .routes
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.route.env == env)
    {
        return Ok(Some(LegacyRoute {
            upstreams: route.upstreams,
            limits: route.limits,
            hold,
        }));
    }
    let mut upstreams: Vec<Upstream> = Vec::new();
    for addr in old.upstreams.unwrap_or_default() {
        // Older edges ignored an upstream listed twice.
        if !upstreams.iter().any(|u| u.addr == addr) {
            upstreams.push(Upstream::new(addr, DEFAULT_WEIGHT));
        }
    }
    Ok(Some(LegacyRoute {
        upstreams,
        limits: Limits::default(),
        hold,
    }))
}
