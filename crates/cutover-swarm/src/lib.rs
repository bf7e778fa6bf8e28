//! cutover-swarm: the [`Runtime`] that runs each instance as a Docker Swarm service.
//!
//! One cutover instance is one Swarm service of one replica, named `cutover-<instance id>`, so
//! that `start`, `stop` and `inspect` mean what they mean on every runtime and the engine's
//! converge path, per-instance health checks, warm standbys and rollback-by-switch work
//! unchanged. The service publishes the app's port in `mode: host` on a port Swarm picks; the
//! instance's address is its task's node address and that port, read back from the task, so the
//! edge reaches each replica itself rather than the routing mesh's virtual IP.
//!
//! - Images: [`Runtime::identify`] and [`Runtime::place`] are the Docker runtime's (registry
//!   digest checked, pulled by digest on the manager); services run `repository@digest`.
//! - Labels on the service (`cutover.app/env/release/version/instance/scope`), never on its
//!   containers (the Docker runtime of the same engine would adopt those); a restarted server
//!   finds its services by them.
//! - Secrets: each of the instance's secrets becomes a Swarm secret of its own, created with the
//!   service and removed with it; the app reads `/run/secrets/NAME`, and `NAME_FILE` says where.
//!   The value is in no label, no environment variable and no `docker service inspect`.
//! - Restarts: `restart_policy: on-failure` (no limit), so Swarm replaces a crashed task; each
//!   replaced task of the service counts as one restart. Swarm keeps only a few ended tasks (its
//!   `task-history-limit`, 5 by default), so the runtime remembers every task id it has counted:
//!   the count is exact past that limit. A task replaced because its node went down is said so
//!   (`its node NAME went down`).
//!
//! Architecture invariant: the engine learns no Swarm word; everything Swarm-specific is here,
//! behind the runtime trait, and secret values only travel in the engine API's request bodies.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, LocalNodeState, Mount, MountType, Node, NodeState, SecretSpec, Service,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, Task, TaskSpec, TaskSpecContainerSpec,
    TaskSpecContainerSpecFile, TaskSpecContainerSpecSecrets, TaskSpecPlacement,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    ListSecretsOptionsBuilder, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
    LogsOptionsBuilder,
};
use chrono::Utc;
use cutover_docker::{
    engine_message, last_lines, parse_time, status_of, DockerRuntime, Engine, LABEL_APP, LABEL_ENV,
    LABEL_INSTANCE, LABEL_RELEASE, LABEL_STOP_TIMEOUT, LABEL_VERSION,
};
use cutover_runtime::{
    launch_env, ExitRecord, InstanceInfo, InstanceSpec, InstanceState, PlaceRequest, Placement,
    Runtime, RuntimeError,
};

/// The variable name a secret of the instance is kept under, on its Swarm secret.
pub const LABEL_SECRET: &str = "cutover.secret";

/// How often Swarm replaces a crashed task before it gives up: never (0), as the process
/// runtime's supervisor. (With a limit N, Swarm would also keep N + 1 ended tasks of the
/// service instead of its task history limit.)
const MAX_RESTARTS: i64 = 0;
/// How long Swarm waits before it replaces a crashed task.
const RESTART_DELAY: Duration = Duration::from_millis(500);
/// How long a new service may take to have a running task (an image pull on a worker included).
const START_DEADLINE: Duration = Duration::from_secs(120);
/// How long reading a service's logs may take (Swarm waits for every node that ran a task).
const LOGS_DEADLINE: Duration = Duration::from_secs(3);
/// Swarm names services as DNS labels: at most 63 characters; `-sNN` is added for secrets,
/// which may have 64.
const MAX_SERVICE_NAME: usize = 59;

/// Runs each instance as a one-replica Swarm service named `cutover-<instance id>`.
pub struct SwarmRuntime {
    /// The Docker runtime of the same engine: images are its business.
    docker: DockerRuntime,
    /// Labels put on every service and secret, and required of every service `list()` returns.
    extra_labels: Vec<(String, String)>,
    /// Registry logins by image reference, from `place` to the services' `start` (in memory
    /// only), so that the nodes can pull.
    logins: Mutex<HashMap<String, (String, String)>>,
    /// The last address and node of each instance's running task: Swarm forgets a task's port
    /// when it ends, and until the replacing task runs the instance keeps that address (as a
    /// restarting container keeps its port), so the edge's route stays what it was.
    last_seen: Mutex<HashMap<String, (SocketAddr, Option<String>)>>,
    /// Every replaced task counted as a restart of each instance, with how it ended: Swarm
    /// forgets ended tasks past its task history limit, the count must not.
    counted: Mutex<HashMap<String, Counted>>,
}

/// The replaced tasks of one instance seen so far.
#[derive(Debug, Default)]
struct Counted {
    tasks: HashSet<String>,
    /// How they ended, oldest first (the last 20).
    exits: Vec<ExitRecord>,
}

impl std::fmt::Debug for SwarmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the logins.
        f.debug_struct("SwarmRuntime")
            .field("endpoint", &self.engine().endpoint)
            .field("extra_labels", &self.extra_labels)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error(
        "the Docker engine at {endpoint} is not a Swarm manager (its Swarm state: {state})\n\
         hint: run `docker swarm init` on it to make it a Swarm of one node, or point \
         `[docker] host` at a manager of your Swarm"
    )]
    NotAManager { endpoint: String, state: String },
    #[error(
        "the Docker engine at {endpoint} is a Swarm worker; services are created on a manager\n\
         hint: point `[docker] host` (or DOCKER_HOST) at a manager of the Swarm (`docker node ls` \
         there lists the nodes)"
    )]
    Worker { endpoint: String },
    #[error("asking the Docker engine at {endpoint} about its Swarm: {detail}")]
    Info { endpoint: String, detail: String },
}

impl SwarmRuntime {
    /// A runtime on `engine`, which must be a Swarm manager.
    pub async fn connect(engine: Engine) -> Result<SwarmRuntime, SwarmError> {
        let endpoint = engine.endpoint.clone();
        let info = engine.docker().info().await.map_err(|e| SwarmError::Info {
            endpoint: endpoint.clone(),
            detail: engine_message(&e),
        })?;
        let swarm = info.swarm.unwrap_or_default();
        match swarm.local_node_state {
            Some(LocalNodeState::ACTIVE) if swarm.control_available == Some(true) => {}
            Some(LocalNodeState::ACTIVE) => return Err(SwarmError::Worker { endpoint }),
            other => {
                let state = other
                    .map(|s| s.to_string())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "inactive".into());
                return Err(SwarmError::NotAManager { endpoint, state });
            }
        }
        Ok(SwarmRuntime {
            docker: DockerRuntime::new(engine, None),
            extra_labels: Vec::new(),
            logins: Mutex::default(),
            last_seen: Mutex::default(),
            counted: Mutex::default(),
        })
    }

    /// Adds a label to every service and secret this runtime creates, and lists only those.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> SwarmRuntime {
        self.extra_labels.push((key.into(), value.into()));
        self
    }

    /// The service name of instance `id`.
    pub fn service_name(id: &str) -> String {
        format!("cutover-{id}")
    }

    fn engine(&self) -> &Engine {
        self.docker.engine()
    }

    fn api_err(&self, what: String, e: bollard::errors::Error) -> RuntimeError {
        RuntimeError::Start(format!(
            "{what}: {} (Swarm manager at {})",
            engine_message(&e),
            self.engine().endpoint
        ))
    }

    async fn service(&self, name: &str) -> Result<Option<Service>, RuntimeError> {
        match self.engine().docker().inspect_service(name, None).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.api_err(format!("inspecting service {name}"), e)),
        }
    }

    /// The tasks of service `service_id`, oldest first.
    async fn tasks(&self, service_id: &str) -> Result<Vec<Task>, RuntimeError> {
        let filters = HashMap::from([("service".to_string(), vec![service_id.to_string()])]);
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        let mut tasks = match self.engine().docker().list_tasks(Some(options)).await {
            Ok(t) => t,
            Err(e) if status_of(&e) == Some(404) => Vec::new(),
            Err(e) => return Err(self.api_err(format!("listing the tasks of {service_id}"), e)),
        };
        tasks.retain(|t| t.service_id.as_deref() == Some(service_id));
        tasks.sort_by_key(|t| parse_time(t.created_at.as_deref()));
        Ok(tasks)
    }

    async fn nodes(&self) -> HashMap<String, Node> {
        let nodes = self
            .engine()
            .docker()
            .list_nodes(None)
            .await
            .unwrap_or_default();
        nodes
            .into_iter()
            .filter_map(|n| Some((n.id.clone()?, n)))
            .collect()
    }

    async fn info(&self, service: &Service) -> Result<Option<InstanceInfo>, RuntimeError> {
        let Some(id) = service.id.as_deref() else {
            return Ok(None);
        };
        let tasks = self.tasks(id).await?;
        let nodes = self.nodes().await;
        Ok(info_of(service, &tasks, &nodes).map(|(i, replaced)| self.remembered(i, replaced)))
    }

    /// `info` with the address of its last running task while it has none of its own, and
    /// its restarts counted over every replaced task ever seen (`replaced`: those Swarm still
    /// keeps, oldest first).
    fn remembered(
        &self,
        mut info: InstanceInfo,
        replaced: Vec<(String, ExitRecord)>,
    ) -> InstanceInfo {
        {
            let mut seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
            if info.port != 0 {
                seen.insert(info.id.clone(), (info.address, info.node.clone()));
            } else if let Some((address, node)) = seen.get(&info.id) {
                info.address = *address;
                info.port = address.port();
                info.node = node.clone();
            }
        }
        let mut counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        let counted = counted.entry(info.id.clone()).or_default();
        for (task, exit) in replaced {
            if counted.tasks.insert(task) {
                counted.exits.push(exit);
            }
        }
        if counted.exits.len() > 20 {
            counted.exits.drain(..counted.exits.len() - 20);
        }
        info.restarts = u32::try_from(counted.tasks.len()).unwrap_or(u32::MAX);
        info.exits = counted.exits.clone();
        info
    }

    /// Removes the secrets of instance `id` (whatever created them).
    async fn remove_secrets(&self, id: &str) -> Result<(), RuntimeError> {
        let filters =
            HashMap::from([("label".to_string(), vec![format!("{LABEL_INSTANCE}={id}")])]);
        let options = ListSecretsOptionsBuilder::default()
            .filters(&filters)
            .build();
        let secrets = self
            .engine()
            .docker()
            .list_secrets(Some(options))
            .await
            .map_err(|e| self.api_err(format!("listing the secrets of instance {id}"), e))?;
        for s in secrets {
            let Some(sid) = s.id else { continue };
            match self.engine().docker().delete_secret(&sid).await {
                Ok(()) => {}
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => {
                    return Err(self.api_err(format!("removing secret {sid} of instance {id}"), e))
                }
            }
        }
        Ok(())
    }

    /// Removes the service and its secrets; returns once no task of it runs any more.
    async fn remove(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let name = Self::service_name(id);
        if let Some(service) = self.service(&name).await? {
            match self.engine().docker().delete_service(&name).await {
                Ok(()) => {}
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(self.api_err(format!("removing service {name}"), e)),
            }
            if let Some(sid) = service.id.as_deref() {
                let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(15);
                while tokio::time::Instant::now() < deadline {
                    let tasks = self.tasks(sid).await.unwrap_or_default();
                    if !tasks.iter().any(is_up) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.counted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.remove_secrets(id).await
    }

    /// Creates the instance's secrets; their references, and `NAME_FILE` variables for `vars`.
    async fn create_secrets(
        &self,
        spec: &InstanceSpec,
        name: &str,
        labels: &HashMap<String, String>,
        vars: &mut HashMap<String, String>,
    ) -> Result<Vec<TaskSpecContainerSpecSecrets>, RuntimeError> {
        let mut refs = Vec::new();
        let mut names: Vec<&String> = spec.secret_names.iter().collect();
        names.sort();
        names.dedup();
        for (i, var) in names.into_iter().enumerate() {
            let Some(value) = vars.remove(var) else {
                continue;
            };
            let secret_name = format!("{name}-s{i}");
            let mut secret_labels = labels.clone();
            secret_labels.insert(LABEL_SECRET.to_string(), var.clone());
            let secret = SecretSpec {
                name: Some(secret_name.clone()),
                labels: Some(secret_labels),
                data: Some(base64::engine::general_purpose::STANDARD.encode(value.as_bytes())),
                ..Default::default()
            };
            let created = self
                .engine()
                .docker()
                .create_secret(secret)
                .await
                // The engine's message names the secret, never its data.
                .map_err(|e| {
                    self.api_err(
                        format!(
                            "creating the Swarm secret of {var} for instance {}",
                            spec.id
                        ),
                        e,
                    )
                })?;
            let file = format!("/run/secrets/{var}");
            vars.insert(format!("{var}_FILE"), file);
            refs.push(TaskSpecContainerSpecSecrets {
                file: Some(TaskSpecContainerSpecFile {
                    name: Some(var.clone()),
                    uid: Some("0".into()),
                    gid: Some("0".into()),
                    mode: Some(0o444),
                }),
                secret_id: Some(created.id),
                secret_name: Some(secret_name),
            });
        }
        Ok(refs)
    }

    /// Waits until the service's task runs and has its port; why not, if it does not.
    async fn wait_running(&self, name: &str, service_id: &str) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        let mut last = String::from("no task yet");
        loop {
            let tasks = self.tasks(service_id).await.map_err(|e| e.to_string())?;
            if let Some(task) = tasks.last() {
                let status = task.status.clone().unwrap_or_default();
                let err = status.err.clone().unwrap_or_default();
                match status.state {
                    Some(TaskState::RUNNING) if published_port(task).is_some() => return Ok(()),
                    Some(
                        TaskState::FAILED
                        | TaskState::REJECTED
                        | TaskState::COMPLETE
                        | TaskState::SHUTDOWN
                        | TaskState::ORPHANED,
                    ) => {
                        return Err(format!(
                            "its task {}: {}",
                            status.state.map(|s| s.to_string()).unwrap_or_default(),
                            if err.is_empty() {
                                status.message.unwrap_or_default()
                            } else {
                                err
                            }
                        ))
                    }
                    // "no suitable node (scheduling constraints not satisfied on 1 node)"
                    Some(TaskState::PENDING) if err.contains("no suitable node") => {
                        return Err(format!(
                            "Swarm cannot place it: {err}\nhint: compare the environment's \
                             [environments.<name>.swarm] constraints with the nodes \
                             (`docker node ls`, `docker node inspect NODE`)"
                        ))
                    }
                    state => {
                        last = format!(
                            "{} {}",
                            state.map(|s| s.to_string()).unwrap_or_default(),
                            if err.is_empty() {
                                status.message.unwrap_or_default()
                            } else {
                                err
                            }
                        );
                    }
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "service {name} had no running task after {}s (last: {})",
                    START_DEADLINE.as_secs(),
                    last.trim()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Runtime for SwarmRuntime {
    /// The image's registry digest, as for containers.
    async fn identify(&self, req: &PlaceRequest<'_>) -> Result<String, RuntimeError> {
        Runtime::identify(&self.docker, req).await
    }

    /// The image checked against the registry and pulled by digest on the manager (as for
    /// containers), named volumes scoped to the app and environment, and the environment's
    /// `[environments.X.swarm] constraints`.
    async fn place(&self, req: &PlaceRequest<'_>) -> Result<Placement, RuntimeError> {
        let mut placement = Runtime::place(&self.docker, req).await?;
        if let Some(swarm) = req
            .config
            .environments
            .get(req.env)
            .and_then(|e| e.swarm.as_ref())
        {
            placement.constraints = swarm.constraints.clone();
        }
        if let (cutover_runtime::Workload::Image { reference }, Some(login)) =
            (&placement.workload, req.credentials)
        {
            self.logins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(reference.clone(), login.clone());
        }
        Ok(placement)
    }

    async fn start(&self, spec: InstanceSpec) -> Result<InstanceInfo, RuntimeError> {
        let (image, container_port) = cutover_docker::check_spec(&spec)?;
        let name = Self::service_name(&spec.id);
        if name.len() > MAX_SERVICE_NAME {
            return Err(RuntimeError::InvalidSpec(format!(
                "instance id {} is too long for a Swarm service name (`cutover-<id>`, at most \
                 {MAX_SERVICE_NAME} characters): give the environment a shorter name",
                spec.id
            )));
        }
        let (_argv, vars) = launch_env(&spec, container_port)?;
        let mut vars: HashMap<String, String> = vars.into_iter().collect();
        if let Some(existing) = self.service(&name).await? {
            if self.info(&existing).await?.is_some_and(|i| {
                matches!(
                    i.state,
                    InstanceState::Running | InstanceState::Starting | InstanceState::Restarting
                )
            }) {
                return Err(RuntimeError::AlreadyRunning(spec.id.clone()));
            }
        }
        // A leftover of the same id (a start that died half-way): ours and dead, replace it.
        self.remove(&spec.id, spec.stop_timeout).await?;

        let mut labels: HashMap<String, String> = HashMap::from([
            (LABEL_APP.to_string(), spec.app.clone()),
            (LABEL_ENV.to_string(), spec.env.clone()),
            (LABEL_RELEASE.to_string(), spec.release.to_string()),
            (LABEL_VERSION.to_string(), spec.version.clone()),
            (LABEL_INSTANCE.to_string(), spec.id.clone()),
            (
                LABEL_STOP_TIMEOUT.to_string(),
                spec.stop_timeout.as_millis().to_string(),
            ),
        ]);
        for (k, v) in &self.extra_labels {
            labels.insert(k.clone(), v.clone());
        }
        let result = async {
            let secrets = self
                .create_secrets(&spec, &name, &labels, &mut vars)
                .await?;
            let mut env: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
            env.sort();
            let mounts = spec
                .placement
                .volumes
                .iter()
                .map(|v| {
                    let mut parts = v.splitn(3, ':');
                    Mount {
                        source: parts.next().map(str::to_string),
                        target: parts.next().map(str::to_string),
                        read_only: Some(parts.next() == Some("ro")),
                        typ: Some(MountType::VOLUME),
                        ..Default::default()
                    }
                })
                .collect::<Vec<_>>();
            let service = ServiceSpec {
                name: Some(name.clone()),
                labels: Some(labels.clone()),
                mode: Some(ServiceSpecMode {
                    replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                    ..Default::default()
                }),
                task_template: Some(TaskSpec {
                    container_spec: Some(TaskSpecContainerSpec {
                        image: Some(image.to_string()),
                        env: Some(env),
                        init: Some(true),
                        stop_grace_period: i64::try_from(spec.stop_timeout.as_nanos()).ok(),
                        secrets: (!secrets.is_empty()).then_some(secrets),
                        mounts: (!mounts.is_empty()).then_some(mounts),
                        ..Default::default()
                    }),
                    restart_policy: Some(TaskSpecRestartPolicy {
                        condition: Some(TaskSpecRestartPolicyConditionEnum::ON_FAILURE),
                        delay: i64::try_from(RESTART_DELAY.as_nanos()).ok(),
                        max_attempts: Some(MAX_RESTARTS),
                        window: Some(0),
                    }),
                    placement: (!spec.placement.constraints.is_empty()).then(|| {
                        TaskSpecPlacement {
                            constraints: Some(spec.placement.constraints.clone()),
                            ..Default::default()
                        }
                    }),
                    ..Default::default()
                }),
                endpoint_spec: Some(EndpointSpec {
                    ports: Some(vec![EndpointPortConfig {
                        protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                        target_port: Some(i64::from(container_port)),
                        publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let credentials = self
                .logins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(image)
                .map(|(u, p)| DockerCredentials {
                    username: Some(u.clone()),
                    password: Some(p.clone()),
                    ..Default::default()
                });
            let created = self
                .engine()
                .docker()
                .create_service(service, credentials)
                .await
                .map_err(|e| {
                    RuntimeError::Start(format!(
                        "creating service {name} (image {image}, instance {}): {}",
                        spec.id,
                        engine_message(&e)
                    ))
                })?;
            let service_id = created.id.unwrap_or_else(|| name.clone());
            self.wait_running(&name, &service_id).await.map_err(|why| {
                RuntimeError::Start(format!(
                    "service {name} (image {image}, instance {}): {why}",
                    spec.id
                ))
            })?;
            match self.service(&name).await? {
                Some(s) => self
                    .info(&s)
                    .await?
                    .ok_or_else(|| RuntimeError::Start(format!("service {name} lost its labels"))),
                None => Err(RuntimeError::Start(format!(
                    "service {name} vanished right after it started (removed by someone else?)"
                ))),
            }
        }
        .await;
        if result.is_err() {
            let _ = self.remove(&spec.id, spec.stop_timeout).await;
        }
        result
    }

    /// Removes the service (Swarm stops its task: SIGTERM, the stop timeout, SIGKILL) and its
    /// secrets; returns once its task is down.
    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let name = Self::service_name(id);
        let grace = self
            .service(&name)
            .await?
            .and_then(|s| s.spec?.labels?.get(LABEL_STOP_TIMEOUT)?.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_secs(10));
        self.remove(id, grace).await
    }

    async fn inspect(&self, id: &str) -> Result<Option<InstanceInfo>, RuntimeError> {
        match self.service(&Self::service_name(id)).await? {
            Some(s) => self.info(&s).await,
            None => Ok(None),
        }
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, RuntimeError> {
        let mut label_filters = vec![LABEL_INSTANCE.to_string()];
        for (k, v) in &self.extra_labels {
            label_filters.push(format!("{k}={v}"));
        }
        let filters = HashMap::from([("label".to_string(), label_filters)]);
        let options = ListServicesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let services = self
            .engine()
            .docker()
            .list_services(Some(options))
            .await
            .map_err(|e| self.api_err("listing services".into(), e))?;
        let nodes = self.nodes().await;
        let mut out = Vec::new();
        for s in services {
            let Some(sid) = s.id.as_deref() else { continue };
            let Ok(tasks) = self.tasks(sid).await else {
                continue;
            };
            if let Some((info, replaced)) = info_of(&s, &tasks, &nodes) {
                if info.state != InstanceState::Stopped {
                    out.push(self.remembered(info, replaced));
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn logs(&self, id: &str, lines: usize) -> Result<Vec<String>, RuntimeError> {
        let name = Self::service_name(id);
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let stream = self.engine().docker().service_logs(&name, Some(options));
        // Swarm asks every node that ran a task of the service for its logs, and waits for a
        // node that is down: bounded, so that a failure report never hangs on a lost node.
        match tokio::time::timeout(LOGS_DEADLINE, last_lines(stream, lines)).await {
            Ok(read) => read.map_err(|e| match status_of(&e) {
                Some(404) => RuntimeError::NotFound(id.to_string()),
                _ => self.api_err(format!("reading the logs of {name}"), e),
            }),
            Err(_) => Err(RuntimeError::Start(format!(
                "reading the logs of {name}: no answer within {}s (is a node that ran one of \
                 its tasks down? `docker node ls` on the manager)",
                LOGS_DEADLINE.as_secs()
            ))),
        }
    }
}

/// A task that runs or is on its way to.
fn is_up(t: &Task) -> bool {
    t.status
        .as_ref()
        .and_then(|s| s.state)
        .is_some_and(|s| s == TaskState::RUNNING || is_on_its_way(s))
}

/// A task state before `running`.
fn is_on_its_way(s: TaskState) -> bool {
    matches!(
        s,
        TaskState::NEW
            | TaskState::ALLOCATED
            | TaskState::PENDING
            | TaskState::ASSIGNED
            | TaskState::ACCEPTED
            | TaskState::PREPARING
            | TaskState::READY
            | TaskState::STARTING
    )
}

/// The host port Swarm published the task's port on.
fn published_port(t: &Task) -> Option<u16> {
    t.status
        .as_ref()?
        .port_status
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find_map(|p| u16::try_from(p.published_port?).ok().filter(|p| *p != 0))
}

/// How a replaced task ended, in the words of the other runtimes; a task whose node is down
/// (or no longer in the Swarm) ended with its node.
fn exit_of(t: &Task, nodes: &HashMap<String, Node>) -> ExitRecord {
    let status = t.status.clone().unwrap_or_default();
    let at = parse_time(status.timestamp.as_deref()).unwrap_or_else(Utc::now);
    let node = t.node_id.as_deref().map(|id| (id, nodes.get(id)));
    let node_state = node.and_then(|(_, n)| n?.status.as_ref()?.state);
    let lost = match node {
        Some((_, None)) => true,
        Some((_, Some(_))) => matches!(
            node_state,
            Some(NodeState::DOWN | NodeState::DISCONNECTED | NodeState::UNKNOWN)
        ),
        None => false,
    };
    if lost {
        let (id, n) = node.unwrap_or_default();
        let name = n
            .and_then(|n| n.description.as_ref()?.hostname.clone())
            .unwrap_or_else(|| id.to_string());
        let state = node_state.map_or("gone".to_string(), |s| s.to_string());
        return ExitRecord {
            at,
            status: format!(
                "was lost with its node {name} (node {state}); Swarm placed a new task"
            ),
        };
    }
    let code = status
        .container_status
        .as_ref()
        .and_then(|c| c.exit_code)
        .unwrap_or(0);
    let mut text = if code > 128 && code < 160 {
        format!("exit status {code} (signal {})", code - 128)
    } else {
        format!("exit status {code}")
    };
    if let Some(err) = status.err.as_deref().filter(|e| !e.is_empty()) {
        text.push_str(&format!(": {err}"));
    }
    text.push_str("; Swarm replaced its task");
    ExitRecord { at, status: text }
}

/// The [`InstanceInfo`] of a service and its tasks (oldest first), if the service is ours, and
/// the tasks it replaced (their ids and how they ended), oldest first.
fn info_of(
    service: &Service,
    tasks: &[Task],
    nodes: &HashMap<String, Node>,
) -> Option<(InstanceInfo, Vec<(String, ExitRecord)>)> {
    let labels = service.spec.as_ref()?.labels.as_ref()?;
    let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let id = labels.get(LABEL_INSTANCE)?.clone();
    // The task Swarm wants running now: the newest one meant to run, else the newest.
    let current = tasks
        .iter()
        .rposition(|t| t.desired_state == Some(TaskState::RUNNING))
        .or(tasks.len().checked_sub(1));
    let task = current.map(|i| &tasks[i]);
    let replaced = &tasks[..current.unwrap_or(0)];
    let state = match task.and_then(|t| t.status.as_ref()?.state) {
        Some(TaskState::RUNNING) => InstanceState::Running,
        Some(s) if is_on_its_way(s) && replaced.is_empty() => InstanceState::Starting,
        Some(s) if is_on_its_way(s) => InstanceState::Restarting,
        // No task, or the last one ended and Swarm gave up on it.
        _ if task.is_some_and(|t| t.desired_state == Some(TaskState::RUNNING)) => {
            InstanceState::Restarting
        }
        _ => InstanceState::Stopped,
    };
    // Port 0 until the task runs (Swarm clears a task's ports when it ends): the runtime
    // fills in the address of the task it replaces ([`SwarmRuntime::remembered`]).
    let at = task.filter(|t| published_port(t).is_some());
    let port = at.and_then(published_port).unwrap_or(0);
    let node = at
        .and_then(|t| t.node_id.as_deref())
        .and_then(|n| nodes.get(n));
    let ip = node
        .and_then(|n| n.status.as_ref()?.addr.as_deref()?.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let node_name = node
        .and_then(|n| n.description.as_ref()?.hostname.clone())
        .or_else(|| at.and_then(|t| t.node_id.clone()));
    let started_at = task
        .and_then(|t| parse_time(t.status.as_ref()?.timestamp.as_deref()))
        .or_else(|| parse_time(service.created_at.as_deref()))
        .unwrap_or_else(Utc::now);
    let pid = task
        .filter(|_| state == InstanceState::Running)
        .and_then(|t| t.status.as_ref()?.container_status.as_ref()?.pid)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0);
    let replaced = replaced
        .iter()
        .map(|t| {
            let task =
                t.id.clone()
                    .unwrap_or_else(|| format!("{:?}", t.created_at));
            (task, exit_of(t, nodes))
        })
        .collect::<Vec<_>>();
    let info = InstanceInfo {
        id,
        app: label(LABEL_APP),
        env: label(LABEL_ENV),
        release: label(LABEL_RELEASE).parse().unwrap_or(0),
        version: label(LABEL_VERSION),
        port,
        address: SocketAddr::new(ip, port),
        supervisor_pid: None,
        pid,
        state,
        started_at,
        // Counted by the runtime over every task it has seen ([`SwarmRuntime::remembered`]).
        restarts: 0,
        exits: Vec::new(),
        log_file: None,
        node: node_name,
    };
    Some((info, replaced))
}
