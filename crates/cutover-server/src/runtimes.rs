//! The runtime the server gives the engine: processes and containers behind one
//! `Runtime`. A spec with an image goes to the container engine it names (Docker or Podman,
//! connected on first use); everything else is a process under a supervisor. Instances are
//! found again by id in whichever runtime holds them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_docker::{DockerRuntime, Engine, EngineKind};
use cutover_runtime::{
    ImagePull, InstanceInfo, InstanceSpec, ProcessRuntime, Runtime, RuntimeError,
};
use tokio::sync::Mutex;

/// How long a failed connection to a container engine is remembered before trying again, so
/// that `status` on a machine without Docker stays fast.
const RETRY_CONNECT_AFTER: Duration = Duration::from_secs(30);

const SCOPE_LABEL: &str = "cutover.scope";

pub struct Runtimes {
    process: ProcessRuntime,
    /// Labels this state dir's containers (`cutover.scope`), so that a server sees and stops
    /// only its own.
    scope: String,
    /// `[docker] host` of the working tree's config (else DOCKER_HOST, else the default socket).
    docker_host: Option<String>,
    containers: Mutex<HashMap<&'static str, Connection>>,
}

enum Connection {
    Up(Arc<DockerRuntime>),
    Down { at: Instant, error: String },
}

impl Runtimes {
    pub fn new(state_dir: &Path, exe: &Path, docker_host: Option<String>) -> Runtimes {
        let scope = cutover_daemon::state_id(state_dir);
        Runtimes {
            process: ProcessRuntime::new(state_dir, exe),
            scope,
            docker_host,
            containers: Mutex::default(),
        }
    }

    fn kind(engine: &str) -> EngineKind {
        if engine == "podman" {
            EngineKind::Podman
        } else {
            EngineKind::Docker
        }
    }

    /// The container runtime of `kind`, connecting if needed.
    async fn container(&self, kind: EngineKind) -> Result<Arc<DockerRuntime>, RuntimeError> {
        let mut containers = self.containers.lock().await;
        if let Some(Connection::Up(rt)) = containers.get(kind.name()) {
            return Ok(rt.clone());
        }
        if let Some(Connection::Down { at, error }) = containers.get(kind.name()) {
            if at.elapsed() < RETRY_CONNECT_AFTER {
                return Err(RuntimeError::Start(error.clone()));
            }
        }
        let host = match kind {
            EngineKind::Docker => self.docker_host.as_deref(),
            EngineKind::Podman => None,
        };
        match Engine::connect(host, kind).await {
            Ok(engine) => {
                let rt =
                    Arc::new(DockerRuntime::new(engine, None).with_label(SCOPE_LABEL, &self.scope));
                containers.insert(kind.name(), Connection::Up(rt.clone()));
                Ok(rt)
            }
            Err(e) => {
                let error = e.to_string();
                containers.insert(
                    kind.name(),
                    Connection::Down {
                        at: Instant::now(),
                        error: error.clone(),
                    },
                );
                Err(RuntimeError::Start(error))
            }
        }
    }

    /// Container runtimes that answer now (used to find instances).
    async fn reachable(&self) -> Vec<Arc<DockerRuntime>> {
        let mut out = Vec::new();
        for kind in [EngineKind::Docker, EngineKind::Podman] {
            if let Ok(rt) = self.container(kind).await {
                out.push(rt);
            }
        }
        out
    }

    /// Which container runtime holds instance `id`, if one does.
    async fn holder(&self, id: &str) -> Option<Arc<DockerRuntime>> {
        for rt in self.reachable().await {
            if let Ok(Some(_)) = rt.inspect(id).await {
                return Some(rt);
            }
        }
        None
    }
}

impl Runtimes {
    /// Removes an image reference (a tag or `repo@digest`) from the Docker engine.
    pub async fn remove_image(&self, reference: &str) -> Result<(), String> {
        let rt = self
            .container(EngineKind::Docker)
            .await
            .map_err(|e| e.to_string())?;
        cutover_docker::remove_image(rt.engine(), reference)
            .await
            .map_err(|e| e.to_string())
    }
}

impl Runtime for Runtimes {
    async fn start(&self, spec: InstanceSpec) -> Result<InstanceInfo, RuntimeError> {
        match &spec.engine {
            Some(engine) if spec.image.is_some() => {
                self.container(Self::kind(engine)).await?.start(spec).await
            }
            _ => self.process.start(spec).await,
        }
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        if self.process.inspect(id).await?.is_some() {
            return self.process.stop(id).await;
        }
        match self.holder(id).await {
            Some(rt) => rt.stop(id).await,
            None => self.process.stop(id).await,
        }
    }

    async fn inspect(&self, id: &str) -> Result<Option<InstanceInfo>, RuntimeError> {
        if let Some(info) = self.process.inspect(id).await? {
            return Ok(Some(info));
        }
        match self.holder(id).await {
            Some(rt) => rt.inspect(id).await,
            None => Ok(None),
        }
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, RuntimeError> {
        let mut all = self.process.list().await?;
        for rt in self.reachable().await {
            all.extend(rt.list().await.unwrap_or_default());
        }
        Ok(all)
    }

    async fn prepare(&self, image: &ImagePull) -> Result<(), RuntimeError> {
        self.container(Self::kind(&image.engine))
            .await?
            .prepare(image)
            .await
    }

    async fn logs(&self, id: &str, lines: usize) -> Result<Vec<String>, RuntimeError> {
        if self.process.inspect(id).await?.is_some() {
            return self.process.logs(id, lines).await;
        }
        match self.holder(id).await {
            Some(rt) => rt.logs(id, lines).await,
            // A stopped process instance still has its log file.
            None => self.process.logs(id, lines).await,
        }
    }
}
