//! [`DockerRuntime`]: one container per instance, found again by its labels.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig,
    PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use chrono::{DateTime, Utc};
use cutover_runtime::{
    free_port, launch_env, ExitRecord, InstanceInfo, InstanceSpec, InstanceState, PlaceRequest,
    Placement, Runtime, RuntimeError, Workload,
};
use futures_util::StreamExt;

use crate::{engine_message, status_of, Credentials, Engine, RegistryAccess};

pub const LABEL_APP: &str = "cutover.app";
pub const LABEL_ENV: &str = "cutover.env";
pub const LABEL_RELEASE: &str = "cutover.release";
pub const LABEL_VERSION: &str = "cutover.version";
pub const LABEL_INSTANCE: &str = "cutover.instance";
pub const LABEL_PORT: &str = "cutover.port";
pub const LABEL_STOP_TIMEOUT: &str = "cutover.stop_timeout_ms";

/// How often the engine restarts a crashing container before it gives up (`on-failure:N`).
const MAX_RESTARTS: i64 = 10;

/// Runs each instance as a container named `cutover-<instance id>`.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    engine: Engine,
    app_filter: Option<String>,
    /// Extra labels put on every container, and required of every container `list()` returns
    /// (the server scopes a runtime to its state dir with one; tests clean up with one).
    extra_labels: Vec<(String, String)>,
}

impl DockerRuntime {
    /// `app_filter`: when set, `list()` only returns containers of that app.
    pub fn new(engine: Engine, app_filter: Option<String>) -> DockerRuntime {
        DockerRuntime {
            engine,
            app_filter,
            extra_labels: Vec::new(),
        }
    }

    /// Adds a label to every container this runtime creates.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> DockerRuntime {
        self.extra_labels.push((key.into(), value.into()));
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The container name of instance `id`.
    pub fn container_name(id: &str) -> String {
        format!("cutover-{id}")
    }

    fn api_err(&self, what: String, e: bollard::errors::Error) -> RuntimeError {
        RuntimeError::Start(format!(
            "{what}: {} ({} engine at {})",
            engine_message(&e),
            self.engine.kind,
            self.engine.endpoint
        ))
    }

    async fn inspect_raw(
        &self,
        id: &str,
    ) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        let name = Self::container_name(id);
        self.inspect_name(&name).await
    }

    async fn inspect_name(
        &self,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        match self.engine.docker().inspect_container(name, None).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(bollard::errors::Error::JsonDataError { .. }) => self.inspect_lenient(name).await,
            Err(e) => Err(self.api_err(format!("inspecting container {name}"), e)),
        }
    }

    /// Inspect through a raw request, mapping Podman's extra states to Docker's.
    async fn inspect_lenient(
        &self,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        let fail = |d: String| {
            RuntimeError::Start(format!(
                "inspecting container {name}: {d} ({} engine at {})",
                self.engine.kind, self.engine.endpoint
            ))
        };
        let (status, body) = crate::raw_get(&self.engine, &format!("/containers/{name}/json"))
            .await
            .map_err(fail)?;
        if status == 404 {
            return Ok(None);
        }
        let mut v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))?;
        if let Some(st) = v.pointer_mut("/State/Status") {
            let docker_name = match st.as_str() {
                Some("stopped" | "configured" | "initialized") => Some("exited"),
                Some("stopping") => Some("running"),
                _ => None,
            };
            if let Some(n) = docker_name {
                *st = serde_json::Value::String(n.into());
            }
        }
        serde_json::from_value(v)
            .map(Some)
            .map_err(|e| fail(e.to_string()))
    }

    async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(false)
            .build();
        match self
            .engine
            .docker()
            .remove_container(name, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            // "removal of container … is already in progress"
            Err(e) if status_of(&e) == Some(409) => Ok(()),
            Err(e) => Err(self.api_err(format!("removing container {name}"), e)),
        }
    }
}

/// Checks an instance spec a container runtime runs, and gives its image reference and the
/// port the app listens on inside the container (shared with the Swarm runtime).
pub fn check_spec(spec: &InstanceSpec) -> Result<(&str, u16), RuntimeError> {
    cutover_runtime::validate_id(&spec.id).map_err(RuntimeError::InvalidSpec)?;
    let image = match &spec.placement.workload {
        Workload::Image { reference } if !reference.trim().is_empty() => reference.as_str(),
        _ => {
            return Err(RuntimeError::InvalidSpec(format!(
            "instance {} has no image: the docker runtime runs an image by digest (repo@sha256:…)",
            spec.id
        )))
        }
    };
    let Some(container_port) = spec.app_port.filter(|p| *p != 0) else {
        return Err(RuntimeError::InvalidSpec(format!(
            "instance {} has no container port: set [run] port to the port the app listens on inside the container",
            spec.id
        )));
    };
    for v in &spec.placement.volumes {
        volume_bind(v).map_err(RuntimeError::InvalidSpec)?;
    }
    for k in spec.vars.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(RuntimeError::InvalidSpec(format!(
                "instance {}: environment variable name `{k}` is invalid",
                spec.id
            )));
        }
    }
    Ok((image, container_port))
}

/// `name:/path[:ro]` → the bind string, for named volumes only (no host paths).
pub fn volume_bind(v: &str) -> Result<String, String> {
    let mut parts = v.splitn(3, ':');
    let name = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let mode = parts.next();
    let name_ok = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !name_ok || !path.starts_with('/') || !matches!(mode, None | Some("ro" | "rw")) {
        return Err(format!(
            "volume `{v}` must be `name:/path` (a named volume; name of letters, digits, _ . -; optional :ro)"
        ));
    }
    Ok(v.to_string())
}

/// An engine timestamp (RFC 3339); `None` for none or the zero time, which means never.
pub fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s?).ok()?.with_timezone(&Utc);
    // "0001-01-01T00:00:00Z" means never.
    (t.timestamp() > 0).then_some(t)
}

/// The [`InstanceInfo`] of an inspected container, if it is one of ours.
fn info_of(c: &ContainerInspectResponse) -> Option<InstanceInfo> {
    let labels = c.config.as_ref()?.labels.as_ref()?;
    let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let id = labels.get(LABEL_INSTANCE)?.clone();
    let port: u16 = label(LABEL_PORT).parse().unwrap_or(0);
    let state = c.state.as_ref();
    let status = state.and_then(|s| s.status);
    let restarting = state.and_then(|s| s.restarting).unwrap_or(false);
    let instance_state = match status {
        _ if restarting => InstanceState::Restarting,
        Some(ContainerStateStatusEnum::RUNNING) => InstanceState::Running,
        Some(ContainerStateStatusEnum::RESTARTING) => InstanceState::Restarting,
        Some(ContainerStateStatusEnum::CREATED) => InstanceState::Starting,
        Some(ContainerStateStatusEnum::REMOVING) => InstanceState::Stopping,
        _ => InstanceState::Stopped,
    };
    let pid = state
        .and_then(|s| s.pid)
        .filter(|p| *p > 0)
        .and_then(|p| u32::try_from(p).ok());
    let started_at = parse_time(state.and_then(|s| s.started_at.as_deref()))
        .or_else(|| parse_time(c.created.as_deref()))
        .unwrap_or_else(Utc::now);
    let mut exits = Vec::new();
    if let Some(at) = parse_time(state.and_then(|s| s.finished_at.as_deref())) {
        let code = state.and_then(|s| s.exit_code).unwrap_or(0);
        let mut status = if instance_state == InstanceState::Running {
            // Running again after an exit: engines reset ExitCode when they restart it.
            "exited and was restarted by the engine".to_string()
        } else if state.and_then(|s| s.oom_killed).unwrap_or(false) {
            "killed (out of memory)".to_string()
        } else if code > 128 && code < 160 {
            format!("exit status {code} (signal {})", code - 128)
        } else {
            format!("exit status {code}")
        };
        if let Some(err) = state
            .and_then(|s| s.error.as_deref())
            .filter(|e| !e.is_empty())
        {
            status.push_str(&format!(": {err}"));
        }
        exits.push(ExitRecord { at, status });
    }
    let restarts = c
        .restart_count
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    Some(InstanceInfo {
        id,
        app: label(LABEL_APP),
        env: label(LABEL_ENV),
        release: label(LABEL_RELEASE).parse().unwrap_or(0),
        version: label(LABEL_VERSION),
        port,
        address: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        supervisor_pid: None,
        pid: if instance_state == InstanceState::Running {
            pid
        } else {
            None
        },
        state: instance_state,
        started_at,
        restarts,
        exits,
        log_file: None,
        node: None,
    })
}

impl Runtime for DockerRuntime {
    /// A container release is identified by its image's registry digest (or, without a
    /// registry, the local image id).
    async fn identify(&self, req: &PlaceRequest<'_>) -> Result<String, RuntimeError> {
        let image = image_of(req)?;
        match (&req.config.registry, &image.registry_digest) {
            (Some(_), Some(digest)) => Ok(digest.clone()),
            (Some(_), None) => Err(RuntimeError::Place(format!(
                "image {}:{} was never published\nhint: publish it first: cutover publish {}",
                image.repository, req.version, req.version
            ))),
            (None, _) => Ok(image.id.clone()),
        }
    }

    /// Checks that the registry still maps the version tag to the recorded digest (a tag moved
    /// under us is refused), then pulls `repository@digest` unless the engine has it already.
    /// Without a digest (never published) the image must already be on the engine. Named
    /// volumes are scoped to the app and environment.
    async fn place(&self, req: &PlaceRequest<'_>) -> Result<Placement, RuntimeError> {
        let image = image_of(req)?;
        let reference = match &image.registry_digest {
            Some(digest) => format!("{}@{digest}", image.repository),
            None => image.id.clone(),
        };
        let pull = ImagePull {
            reference: reference.clone(),
            repository: image.repository.clone(),
            digest: image.registry_digest.clone(),
            tag: req.version.to_string(),
            credentials: req.credentials.cloned(),
            access: registry_access(req),
        };
        prepare_image(&self.engine, &pull).await?;
        let volumes = &req.config.run.volumes;
        Ok(Placement {
            workload: Workload::Image { reference },
            // In a container, the data dir is where the first named volume is mounted.
            data_dir: volumes
                .first()
                .and_then(|v| v.split_once(':'))
                .map(|(_, path)| path.to_string()),
            volumes: volumes
                .iter()
                .map(|v| format!("{}-{}-{v}", req.app, req.env))
                .collect(),
            constraints: Vec::new(),
        })
    }

    async fn start(&self, spec: InstanceSpec) -> Result<InstanceInfo, RuntimeError> {
        let (image, container_port) = check_spec(&spec)?;
        let port = free_port().map_err(|e| RuntimeError::io("picking a free port", e))?;
        let (_argv, vars) = launch_env(&spec, container_port)?;
        let name = Self::container_name(&spec.id);
        if let Some(existing) = self.inspect_raw(&spec.id).await? {
            let running = existing
                .state
                .as_ref()
                .is_some_and(|s| s.running == Some(true) || s.restarting == Some(true));
            if running {
                return Err(RuntimeError::AlreadyRunning(spec.id.clone()));
            }
            // A stopped leftover of the same id: it is ours and dead, replace it.
            self.remove(&name).await?;
        }

        let port_key = format!("{container_port}/tcp");
        let mut labels: HashMap<String, String> = HashMap::from([
            (LABEL_APP.to_string(), spec.app.clone()),
            (LABEL_ENV.to_string(), spec.env.clone()),
            (LABEL_RELEASE.to_string(), spec.release.to_string()),
            (LABEL_VERSION.to_string(), spec.version.clone()),
            (LABEL_INSTANCE.to_string(), spec.id.clone()),
            (LABEL_PORT.to_string(), port.to_string()),
            (
                LABEL_STOP_TIMEOUT.to_string(),
                spec.stop_timeout.as_millis().to_string(),
            ),
        ]);
        for (k, v) in &self.extra_labels {
            labels.insert(k.clone(), v.clone());
        }
        let host_config = HostConfig {
            init: Some(true),
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(port.to_string()),
                }]),
            )])),
            binds: (!spec.placement.volumes.is_empty()).then(|| spec.placement.volumes.clone()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ON_FAILURE),
                maximum_retry_count: Some(MAX_RESTARTS),
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            env: Some(vars.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            exposed_ports: Some(vec![port_key]),
            host_config: Some(host_config),
            stop_timeout: Some(i64::from(stop_seconds(spec.stop_timeout))),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        if let Err(e) = self
            .engine
            .docker()
            .create_container(Some(options), body)
            .await
        {
            let msg = if status_of(&e) == Some(404) {
                format!(
                    "image {image} is not on the {} engine (pull it by digest first): {}",
                    self.engine.kind,
                    engine_message(&e)
                )
            } else {
                let m = engine_message(&e);
                let hint = if m.contains("container-init binary not found") {
                    "\nhint: Podman runs containers with an init process from the `catatonit` \
                     package: apt-get install catatonit"
                } else {
                    ""
                };
                format!("creating container {name}: {m}{hint}")
            };
            return Err(RuntimeError::Start(format!(
                "{msg} (instance {}, engine at {})",
                spec.id, self.engine.endpoint
            )));
        }
        if let Err(e) = self.engine.docker().start_container(&name, None).await {
            let _ = self.remove(&name).await;
            let mut msg = engine_message(&e);
            if msg.contains("port is already allocated") || msg.contains("address already in use") {
                msg = format!("host port 127.0.0.1:{port} is already in use: {msg}");
            }
            return Err(RuntimeError::Start(format!(
                "starting container {name} (image {image}, instance {}): {msg}",
                spec.id
            )));
        }
        match self.inspect_raw(&spec.id).await? {
            Some(c) => info_of(&c)
                .ok_or_else(|| RuntimeError::Start(format!("container {name} lost its labels"))),
            None => Err(RuntimeError::Start(format!(
                "container {name} vanished right after it started (removed by someone else?)"
            ))),
        }
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let name = Self::container_name(id);
        let Some(c) = self.inspect_raw(id).await? else {
            return Ok(());
        };
        let timeout_ms: u64 = c
            .config
            .as_ref()
            .and_then(|cfg| cfg.labels.as_ref())
            .and_then(|l| l.get(LABEL_STOP_TIMEOUT))
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        let t = stop_seconds(Duration::from_millis(timeout_ms));
        let options = StopContainerOptionsBuilder::default().t(t).build();
        match self
            .engine
            .docker()
            .stop_container(&name, Some(options))
            .await
        {
            Ok(()) => {}
            // 304: already stopped; 404: gone meanwhile.
            Err(e) if matches!(status_of(&e), Some(304 | 404)) => {}
            Err(e) => return Err(self.api_err(format!("stopping container {name}"), e)),
        }
        self.remove(&name).await
    }

    async fn inspect(&self, id: &str) -> Result<Option<InstanceInfo>, RuntimeError> {
        Ok(self.inspect_raw(id).await?.as_ref().and_then(info_of))
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, RuntimeError> {
        let mut label_filters = vec![LABEL_INSTANCE.to_string()];
        if let Some(app) = &self.app_filter {
            label_filters.push(format!("{LABEL_APP}={app}"));
        }
        // A runtime sees only the containers it labels (a state dir sees only its own).
        for (k, v) in &self.extra_labels {
            label_filters.push(format!("{k}={v}"));
        }
        // Filtered by state after inspecting: Podman rejects `status=restarting` in filters.
        let filters: HashMap<String, Vec<String>> =
            HashMap::from([("label".to_string(), label_filters)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .engine
            .docker()
            .list_containers(Some(options))
            .await
            .map_err(|e| self.api_err("listing containers".into(), e))?;
        let mut out = Vec::new();
        for c in containers {
            let Some(cid) = c.id else { continue };
            // A container gone between the listing and the inspection (removed meanwhile;
            // Podman answers 500 rather than 404 for that) has nothing to adopt.
            let Ok(Some(full)) = self.inspect_name(&cid).await else {
                continue;
            };
            if let Some(info) = info_of(&full) {
                if matches!(
                    info.state,
                    InstanceState::Running | InstanceState::Restarting | InstanceState::Starting
                ) {
                    out.push(info);
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn logs(&self, id: &str, lines: usize) -> Result<Vec<String>, RuntimeError> {
        let name = Self::container_name(id);
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let stream = self.engine.docker().logs(&name, Some(options));
        last_lines(stream, lines)
            .await
            .map_err(|e| match status_of(&e) {
                Some(404) => RuntimeError::NotFound(id.to_string()),
                _ => self.api_err(format!("reading the logs of {name}"), e),
            })
    }
}

/// The last `lines` lines of an engine's log stream (a container's or a Swarm service's).
pub async fn last_lines(
    stream: impl futures_util::Stream<
        Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
    >,
    lines: usize,
) -> Result<Vec<String>, bollard::errors::Error> {
    let mut stream = std::pin::pin!(stream);
    let mut text = Vec::new();
    while let Some(item) = stream.next().await {
        text.extend_from_slice(&item?.into_bytes());
    }
    let text = String::from_utf8_lossy(&text);
    let all: Vec<String> = text.lines().map(str::to_string).collect();
    let skip = all.len().saturating_sub(lines);
    Ok(all.into_iter().skip(skip).collect())
}

/// The image of the artifact a container release runs.
fn image_of<'a>(
    req: &PlaceRequest<'a>,
) -> Result<&'a cutover_artifact::ImageArtifact, RuntimeError> {
    req.artifact.image.as_ref().ok_or_else(|| {
        RuntimeError::Place(format!(
            "artifact {}:{} has no image, but {} runs containers\n\
             hint: add [build] dockerfile to cutover.toml, commit, and deploy the new commit",
            req.app,
            cutover_git::short(req.version),
            req.env
        ))
    })
}

/// An image a container runtime must have before instances of it start: pulled by digest,
/// and checked against the registry (a tag moved under us is refused).
#[derive(Debug, Clone)]
pub struct ImagePull {
    /// What instances run: `repository@sha256:…` (or a local image id without a registry).
    pub reference: String,
    /// `host[:port]/name`, without tag or digest.
    pub repository: String,
    /// The registry digest recorded when the artifact was published; `None`: never published.
    pub digest: Option<String>,
    /// The version tag (the full sha) the registry must still map to `digest`.
    pub tag: String,
    /// Registry login, resolved from its secret sources by whoever asked for the deploy.
    pub credentials: Option<(String, String)>,
    /// How the registry is reached (`[registry] insecure`, `ca_bundle`).
    pub access: RegistryAccess,
}

/// `[registry] insecure` and `ca_bundle` of the release's config, the bundle's path made
/// absolute from the directory of cutover.toml.
pub fn registry_access(req: &PlaceRequest<'_>) -> RegistryAccess {
    match &req.config.registry {
        Some(r) => RegistryAccess {
            insecure: r.insecure,
            ca_bundle: r.ca_bundle.as_ref().map(|p| req.base_dir.join(p)),
            ..RegistryAccess::default()
        },
        None => RegistryAccess::default(),
    }
}

/// Checks the registry and pulls by digest ([`DockerRuntime`]'s placement), usable without a
/// runtime.
pub async fn prepare_image(engine: &Engine, image: &ImagePull) -> Result<(), RuntimeError> {
    let fail = |msg: String| RuntimeError::Place(msg);
    let Some(digest) = image.digest.as_deref() else {
        return match crate::image_exists(engine, &image.reference).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(fail(format!(
                "image {} was never published and the {} engine at {} does not have it\n\
                 hint: run `cutover build` and `cutover publish` for version {}",
                image.reference, engine.kind, engine.endpoint, image.tag
            ))),
            Err(e) => Err(fail(e.to_string())),
        };
    };
    let creds = image.credentials.as_ref().map(|(u, p)| Credentials {
        username: u.clone(),
        password: p.clone(),
    });
    let (registry, name) = crate::split_repository(&image.repository);
    let now = crate::registry_digest(&registry, &name, &image.tag, creds.as_ref(), &image.access)
        .await
        .map_err(|e| {
            fail(format!(
                "checking {}:{} in the registry: {e}",
                image.repository, image.tag
            ))
        })?;
    match now {
        Some(d) if d == digest => {}
        Some(other) => {
            return Err(fail(format!(
                "refusing to deploy {}:{}: the registry now maps the tag to {other}, \
                 but the ledger recorded {digest} when it was published (someone re-pushed the tag)\n\
                 hint: rebuild and publish the version, or find out who pushed {}:{}",
                image.repository, image.tag, image.repository, image.tag
            )))
        }
        None => {
            return Err(fail(format!(
                "refusing to deploy {}:{}: the registry {registry} no longer has the tag \
                 (the ledger recorded {digest})\nhint: publish the version again",
                image.repository, image.tag
            )))
        }
    }
    let by_digest = format!("{}@{digest}", image.repository);
    match crate::image_exists(engine, &by_digest).await {
        Ok(true) => Ok(()),
        Ok(false) => crate::pull_digest(engine, &image.repository, digest, creds.as_ref())
            .await
            .map_err(|e| fail(format!("pulling {by_digest}: {e}"))),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// The engine counts stop timeouts in whole seconds: round up, so a 1500 ms timeout gives 2 s.
fn stop_seconds(d: Duration) -> i32 {
    let ms = d.as_millis();
    i32::try_from(ms.div_ceil(1000)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_named_only() {
        assert!(volume_bind("tasks-data:/data").is_ok());
        assert!(volume_bind("tasks-data:/data:ro").is_ok());
        assert!(volume_bind("/etc:/data").is_err());
        assert!(volume_bind("data").is_err());
        assert!(volume_bind("d:rel").is_err());
        assert!(volume_bind("d:/x:zz").is_err());
    }

    #[test]
    fn stop_timeouts_round_up_to_seconds() {
        assert_eq!(stop_seconds(Duration::from_millis(0)), 0);
        assert_eq!(stop_seconds(Duration::from_millis(1)), 1);
        assert_eq!(stop_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(stop_seconds(Duration::from_secs(10)), 10);
    }
}
