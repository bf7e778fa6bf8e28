//! The engine: the release state machine (`pending → (awaiting-approval) → starting → verifying
//! → live → superseded`, or `failed` / `rolled-back`) and its strategies, as plain logic over
//! traits. It does not know what runs an instance or where its artifact comes from (`Runtime`), how
//! traffic is switched (`Edge`) or how health is asked (`Prober`).
//!
//! Every change of which release serves an environment — deploy, manual and automatic
//! rollback, the restore after a failed recreate, start-up reconciliation and the watcher's
//! healing — goes through one converge path (`converge.rs`): ledger first, then the edge, and a
//! refused switch is reverted.
//!
//! Architecture invariants:
//! - Every state change is written to the ledger before it takes effect.
//! - Once an environment has had a live release, some healthy instance serves it at every
//!   moment of a blue-green deploy, a failed deploy and a rollback: traffic is switched only
//!   to instances that passed their health check, and old instances stop only after the
//!   switch and a drain.

mod converge;
mod gates;
mod instances;
mod locks;
mod memory;
mod monitor;
mod outcome;
pub mod ports;
mod promote;
mod reconcile;
mod record;
mod release;
mod restarts;
mod strategy;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cutover_artifact::ArtifactStore;
use cutover_ledger::Ledger;
use cutover_runtime::{InstanceInfo, Runtime};
use tokio::sync::{mpsc, watch};

pub use gates::GateChoice;
pub use outcome::{Outcome, Progress};
pub use ports::{CertificateState, Edge, EdgeRefusal, HttpProber, Prober, ProxyEdge, Site};
pub use promote::PromoteRequest;

/// Where the engine keeps its files.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub state_dir: PathBuf,
    /// The repository the state dir belongs to (secret files and commands resolve from here
    /// when the server must resolve them itself).
    pub repo_root: PathBuf,
}

/// A request to make an artifact live in an environment.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub env: String,
    pub app: String,
    pub version: String,
    /// One-off `--env NAME=VALUE` overrides.
    pub overrides: BTreeMap<String, String>,
    /// Secret values resolved by the caller, by name. Kept in memory only.
    pub secrets: BTreeMap<String, String>,
    pub requested_by: String,
    /// Wait for a busy environment instead of refusing at once.
    pub queue: bool,
    /// The login (user, password) the runtime needs to get the artifact in place, resolved by
    /// the caller.
    pub artifact_login: Option<(String, String)>,
    /// What asked: "cli" (a person: the human click), "pipeline", "webhook" or "watch".
    pub trigger: String,
    /// The commit's author, who may not approve it.
    pub author: Option<String>,
    /// Its checks were skipped on purpose (`--skip-checks`): said in the release's timeline.
    pub skip_checks: bool,
    /// Required environments that live on other servers, by name, with the server the caller
    /// read there that the version passed their monitor window (taken only for environments
    /// whose committed config names another server than this environment's).
    pub passed_elsewhere: Vec<(String, String)>,
    /// A promotion from another server: the release whose digest this deploy must run.
    pub promoted_from: Option<cutover_ledger::PromotedFrom>,
}

impl DeployRequest {
    /// A person asked (a CLI or API user), as opposed to an automation.
    pub fn is_person(&self) -> bool {
        self.trigger == "cli"
    }
}

/// A request to go back to a known-good release.
#[derive(Debug, Clone)]
pub struct RollbackRequest {
    pub env: String,
    /// A release id or a version (sha prefix); `None` = the rollback target.
    pub to: Option<String>,
    pub secrets: BTreeMap<String, String>,
    pub requested_by: String,
    pub queue: bool,
    /// The login (user, password) the runtime needs to get the artifact in place, resolved by
    /// the caller.
    pub artifact_login: Option<(String, String)>,
}

pub type ProgressTx = mpsc::UnboundedSender<Progress>;

/// Called with a release when it becomes awaiting-approval, live, failed or rolled-back.
pub type Observer = Arc<dyn Fn(&cutover_ledger::Release) + Send + Sync>;

/// The control plane's brain. Cheap to clone; clones share everything.
pub struct Engine<R, E, P> {
    inner: Arc<Inner<R, E, P>>,
}

impl<R, E, P> Clone for Engine<R, E, P> {
    fn clone(&self) -> Self {
        Engine {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<R, E, P> {
    options: EngineOptions,
    ledger: Mutex<Ledger>,
    store: ArtifactStore,
    runtime: R,
    edge: E,
    prober: P,
    /// One deploy per environment at a time.
    env_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Which release holds each environment's lock, to name it in a refusal.
    holders: Mutex<HashMap<String, String>>,
    /// The open monitor window of each environment.
    monitors: Mutex<HashMap<String, MonitorSlot>>,
    /// Secret values of releases this server started, for restarts and restores.
    secrets: Mutex<HashMap<i64, BTreeMap<String, String>>>,
    /// Artifact logins given with deploys, by release.
    artifact_logins: Mutex<HashMap<i64, (String, String)>>,
    /// Set by `shut_down_everything`: the watcher heals nothing from then on (it would bring
    /// back what `cutover down` just stopped).
    shutting_down: std::sync::atomic::AtomicBool,
    /// Environments the server's watcher is healing right now.
    healing: Mutex<std::collections::HashSet<String>>,
    /// Environments whose in-flight deploy was asked to stop, and by whom.
    aborts: Mutex<HashMap<String, String>>,
    /// Told of every release that reaches a state people are notified of.
    observer: Mutex<Option<Observer>>,
}

/// An open monitor window: the release watched, the warm standby kept for a fast way back,
/// and how to stop the watch.
struct MonitorSlot {
    release: i64,
    standby: Option<Standby>,
    cancel: watch::Sender<bool>,
    done: watch::Receiver<Option<Outcome>>,
}

/// The previous release's instances, kept running through the monitor window.
#[derive(Debug, Clone)]
struct Standby {
    release: i64,
    instances: Vec<InstanceInfo>,
}

impl<R: Runtime, E: Edge, P: Prober> Engine<R, E, P> {
    pub fn new(
        options: EngineOptions,
        ledger: Ledger,
        runtime: R,
        edge: E,
        prober: P,
    ) -> anyhow::Result<Self> {
        let store = ArtifactStore::open(&options.state_dir.join("artifacts"))?;
        Ok(Engine {
            inner: Arc::new(Inner {
                options,
                ledger: Mutex::new(ledger),
                store,
                runtime,
                edge,
                prober,
                env_locks: Mutex::default(),
                holders: Mutex::default(),
                monitors: Mutex::default(),
                secrets: Mutex::default(),
                artifact_logins: Mutex::default(),
                shutting_down: std::sync::atomic::AtomicBool::new(false),
                healing: Mutex::default(),
                aborts: Mutex::default(),
                observer: Mutex::default(),
            }),
        })
    }

    /// Runs `f` with the ledger. Ledger calls are short; never hold it across an await.
    pub fn with_ledger<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        let mut guard = crate::locked(&self.inner.ledger);
        f(&mut guard)
    }

    /// Sets who is told of release state changes (notifications).
    pub fn observe(&self, observer: Observer) {
        *crate::locked(&self.inner.observer) = Some(observer);
    }

    pub fn runtime(&self) -> &R {
        &self.inner.runtime
    }

    pub fn edge(&self) -> &E {
        &self.inner.edge
    }

    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    /// The release whose instances stay warm in `env`'s open monitor window, if any.
    pub fn standby_release(&self, env: &str) -> Option<i64> {
        crate::locked(&self.inner.monitors)
            .get(env)
            .and_then(|m| m.standby.as_ref().map(|s| s.release))
    }

    /// Waits until the monitor window of `release` closes; returns how it ended.
    pub async fn wait_monitor(&self, release: i64) -> Outcome {
        let done = {
            let monitors = crate::locked(&self.inner.monitors);
            monitors
                .values()
                .find(|m| m.release == release)
                .map(|m| m.done.clone())
        };
        if let Some(mut done) = done {
            loop {
                if let Some(outcome) = done.borrow().clone() {
                    return outcome;
                }
                if done.changed().await.is_err() {
                    break;
                }
            }
        }
        self.settled_outcome(release)
    }

    /// The end of the monitor window of a release, read from the ledger.
    fn settled_outcome(&self, release: i64) -> Outcome {
        match self.with_ledger(|l| l.get(release)) {
            Ok(r) if r.state == cutover_ledger::ReleaseState::RolledBack => {
                Outcome::failed_restored(
                    Some(release),
                    r.reason.unwrap_or_else(|| "rolled back".into()),
                    Vec::new(),
                )
            }
            Ok(r) if r.state == cutover_ledger::ReleaseState::Failed => {
                Outcome::refused(r.reason.unwrap_or_else(|| "failed".into()), None)
                    .with_release(release)
            }
            Ok(r) => Outcome::done(
                release,
                format!("release {release} ({}) is {}", r.short_version(), r.state),
            ),
            Err(e) => Outcome::refused(e.to_string(), None),
        }
    }

    /// Stops every instance and proxy this engine knows of (for `cutover down`). From the
    /// first moment no converge starts an instance; an operation already under way gets a
    /// bounded moment to finish (its environment's lock), so that nothing it starts outlives
    /// the shutdown; then every instance the runtime lists stops, twice over, and the edges.
    pub async fn shut_down_everything(&self) {
        self.inner
            .shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let cancels: Vec<_> = {
            let mut monitors = crate::locked(&self.inner.monitors);
            monitors.drain().map(|(_, m)| m.cancel).collect()
        };
        for c in cancels {
            let _ = c.send(true);
        }
        let envs = self.with_ledger(|l| l.environments()).unwrap_or_default();
        let mut held = Vec::new();
        for env in &envs {
            let lock = self.env_lock(env);
            if let Ok(guard) = tokio::time::timeout(SHUTDOWN_WAIT, lock.lock_owned()).await {
                held.push(guard);
            }
        }
        for _ in 0..2 {
            match self.inner.runtime.list().await {
                Ok(instances) if !instances.is_empty() => self.stop_instances(&instances).await,
                _ => break,
            }
        }
        for env in envs {
            self.inner.edge.stop(&env).await;
        }
        drop(held);
    }

    /// Whether `cutover down` has begun: nothing starts from then on.
    pub(crate) fn shutting_down(&self) -> bool {
        self.inner
            .shutting_down
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// How long `cutover down` waits for an operation under way in an environment.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Locks a std mutex, taking the data even if a panicking thread poisoned it: the engine's
/// maps stay usable, and the ledger is the source of truth anyway.
fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
