//! The certificates the machine's edge obtains by ACME, as this server's environments see them:
//! in `status`, and a notification when an attempt for one of their hosts fails (the edge keeps
//! serving the old certificate; someone should know before it expires).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cutover_api::{CertificateEvent, CertificateView};
use cutover_config::{Config, Environment, Tls};
use cutover_daemon::StateDir;
use cutover_engine::{CertificateState, Edge as _};

use crate::ServerEngine;

/// How often the server asks the edge how its certificates are (one status call on its admin
/// socket).
const EVERY: Duration = Duration::from_secs(10);

fn time(epoch: Option<i64>) -> Option<DateTime<Utc>> {
    epoch.and_then(|t| DateTime::from_timestamp(t, 0))
}

/// The certificates of `env`'s hosts when it has `tls = "acme"`.
pub fn of_environment(env: &Environment, acme: &[CertificateState]) -> Vec<CertificateView> {
    if env.tls != Some(Tls::Acme) {
        return Vec::new();
    }
    acme.iter()
        .filter(|c| env.hosts.contains(&c.host))
        .map(|c| CertificateView {
            host: c.host.clone(),
            not_after: time(c.not_after),
            error: c.error.clone(),
        })
        .collect()
}

/// Asks the edge every few seconds, and notifies once per new error of an ACME attempt for a host
/// of one of this server's environments (the committed config of what is live, or the working
/// tree's).
pub fn watch(engine: ServerEngine, state: StateDir) {
    tokio::spawn(async move {
        let mut told: HashMap<String, String> = HashMap::new();
        loop {
            tokio::time::sleep(EVERY).await;
            let acme = engine.edge().certificates().await;
            if acme.is_empty() {
                continue;
            }
            let working = Config::load(&state.repo_root().join(cutover_config::CONFIG_FILE)).ok();
            for cert in acme {
                let Some(error) = cert.error.clone() else {
                    told.remove(&cert.host);
                    continue;
                };
                if told.get(&cert.host) == Some(&error) {
                    continue;
                }
                let Some((app, environment)) = owner(&engine, working.as_ref(), &cert.host) else {
                    continue;
                };
                told.insert(cert.host.clone(), error.clone());
                crate::triggers::notify(cutover_hooks::Notification::Certificate(
                    CertificateEvent {
                        app,
                        environment,
                        host: cert.host,
                        not_after: time(cert.not_after),
                        error,
                        at: Utc::now(),
                    },
                ));
            }
        }
    });
}

/// This server's app and environment whose `tls = "acme"` hosts include `host`.
fn owner(engine: &ServerEngine, working: Option<&Config>, host: &str) -> Option<(String, String)> {
    let names = engine.with_ledger(|l| l.environments()).unwrap_or_default();
    let live_configs = names.iter().filter_map(|name| {
        let live = engine.with_ledger(|l| l.live(name)).ok().flatten()?;
        Config::parse(&live.snapshot.config_text, "snapshot").ok()
    });
    live_configs.chain(working.cloned()).find_map(|config| {
        config.environments.iter().find_map(|(name, env)| {
            let ours = env.tls == Some(Tls::Acme) && env.hosts.iter().any(|h| h == host);
            ours.then(|| (config.app.name.to_string(), name.clone()))
        })
    })
}
