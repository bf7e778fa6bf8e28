//! The runtime the server gives the engine: one runtime per `RuntimeKind`, each from its own
//! crate, held side by side as [`DynRuntime`]s and connected on first use. A placement or a
//! start goes to the runtime its environment's config names; an instance is found again by id
//! in whichever runtime holds it.
//!
//! Adding a runtime is one crate and one arm in [`Runtimes::connect`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_config::RuntimeKind;
use cutover_docker::{DockerRuntime, Engine, EngineKind};
use cutover_process::ProcessRuntime;
use cutover_runtime::{
    DynRuntime, InstanceInfo, InstanceSpec, PlaceRequest, Placement, Runtime, RuntimeError,
};
use cutover_swarm::SwarmRuntime;
use tokio::sync::Mutex;

/// How long a failed connection to a runtime is remembered before trying again, so that
/// `status` on a machine without Docker stays fast.
const RETRY_CONNECT_AFTER: Duration = Duration::from_secs(30);

const SCOPE_LABEL: &str = "cutover.scope";

/// Every kind a server may run, in the order instances are looked for.
const KINDS: [RuntimeKind; 4] = [
    RuntimeKind::Process,
    RuntimeKind::Docker,
    RuntimeKind::Podman,
    RuntimeKind::Swarm,
];

pub struct Runtimes {
    state_dir: PathBuf,
    exe: PathBuf,
    /// Labels this state dir's containers and services (`cutover.scope`), so that a server sees and stops
    /// only its own.
    scope: String,
    /// `[docker] host` of the working tree's config (else DOCKER_HOST, else the default socket).
    docker_host: Option<String>,
    connected: Mutex<HashMap<RuntimeKind, Connection>>,
}

enum Connection {
    Up(Arc<dyn DynRuntime>),
    Down { at: Instant, error: String },
}

impl Runtimes {
    pub fn new(state_dir: &Path, exe: &Path, docker_host: Option<String>) -> Runtimes {
        Runtimes {
            state_dir: state_dir.to_path_buf(),
            exe: exe.to_path_buf(),
            scope: cutover_daemon::state_id(state_dir),
            docker_host,
            connected: Mutex::default(),
        }
    }

    /// Makes the runtime of `kind`. The one place that knows every kind.
    async fn connect(&self, kind: RuntimeKind) -> Result<Arc<dyn DynRuntime>, String> {
        let container = |engine: Engine| -> Arc<dyn DynRuntime> {
            Arc::new(DockerRuntime::new(engine, None).with_label(SCOPE_LABEL, &self.scope))
        };
        match kind {
            RuntimeKind::Process => Ok(Arc::new(ProcessRuntime::new(&self.state_dir, &self.exe))),
            RuntimeKind::Docker => Engine::connect(self.docker_host.as_deref(), EngineKind::Docker)
                .await
                .map(container)
                .map_err(|e| e.to_string()),
            RuntimeKind::Podman => Engine::connect(None, EngineKind::Podman)
                .await
                .map(container)
                .map_err(|e| e.to_string()),
            RuntimeKind::Swarm => {
                let engine = Engine::connect(self.docker_host.as_deref(), EngineKind::Docker)
                    .await
                    .map_err(|e| e.to_string())?;
                let swarm = SwarmRuntime::connect(engine)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Arc::new(swarm.with_label(SCOPE_LABEL, &self.scope)))
            }
        }
    }

    /// The runtime of `kind`, connecting if needed.
    async fn runtime(&self, kind: RuntimeKind) -> Result<Arc<dyn DynRuntime>, RuntimeError> {
        let mut connected = self.connected.lock().await;
        match connected.get(&kind) {
            Some(Connection::Up(rt)) => return Ok(rt.clone()),
            Some(Connection::Down { at, error }) if at.elapsed() < RETRY_CONNECT_AFTER => {
                return Err(RuntimeError::Start(error.clone()))
            }
            _ => {}
        }
        match self.connect(kind).await {
            Ok(rt) => {
                connected.insert(kind, Connection::Up(rt.clone()));
                Ok(rt)
            }
            Err(error) => {
                connected.insert(
                    kind,
                    Connection::Down {
                        at: Instant::now(),
                        error: error.clone(),
                    },
                );
                Err(RuntimeError::Start(error))
            }
        }
    }

    /// Runtimes that answer now (used to find instances).
    async fn reachable(&self) -> Vec<Arc<dyn DynRuntime>> {
        let mut out = Vec::new();
        for kind in KINDS {
            if let Ok(rt) = self.runtime(kind).await {
                out.push(rt);
            }
        }
        out
    }

    /// Which runtime holds instance `id`, if one does.
    async fn holder(&self, id: &str) -> Option<Arc<dyn DynRuntime>> {
        for rt in self.reachable().await {
            if let Ok(Some(_)) = rt.inspect(id).await {
                return Some(rt);
            }
        }
        None
    }

    /// Removes an image reference (a tag or `repo@digest`) from the Docker engine.
    pub async fn remove_image(&self, reference: &str) -> Result<(), String> {
        let engine = Engine::connect(self.docker_host.as_deref(), EngineKind::Docker)
            .await
            .map_err(|e| e.to_string())?;
        cutover_docker::remove_image(&engine, reference)
            .await
            .map_err(|e| e.to_string())
    }
}

impl Runtime for Runtimes {
    async fn identify(&self, req: &PlaceRequest<'_>) -> Result<String, RuntimeError> {
        self.runtime(req.kind).await?.identify(req).await
    }

    async fn place(&self, req: &PlaceRequest<'_>) -> Result<Placement, RuntimeError> {
        self.runtime(req.kind).await?.place(req).await
    }

    async fn start(&self, spec: InstanceSpec) -> Result<InstanceInfo, RuntimeError> {
        self.runtime(spec.kind).await?.start(spec).await
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        match self.holder(id).await {
            Some(rt) => rt.stop(id).await,
            None => Ok(()),
        }
    }

    async fn inspect(&self, id: &str) -> Result<Option<InstanceInfo>, RuntimeError> {
        match self.holder(id).await {
            Some(rt) => rt.inspect(id).await,
            None => Ok(None),
        }
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, RuntimeError> {
        let mut all = Vec::new();
        for rt in self.reachable().await {
            all.extend(rt.list().await.unwrap_or_default());
        }
        Ok(all)
    }

    async fn logs(&self, id: &str, lines: usize) -> Result<Vec<String>, RuntimeError> {
        match self.holder(id).await {
            Some(rt) => rt.logs(id, lines).await,
            // A stopped process instance still has its log file.
            None => {
                self.runtime(RuntimeKind::Process)
                    .await?
                    .logs(id, lines)
                    .await
            }
        }
    }
}
