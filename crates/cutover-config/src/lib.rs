//! The `cutover.toml` schema: parsing with errors that name file, line, column, field and fix;
//! the committed config snapshot (JSON round-trip); secret resolution; the `cutover init` template.

mod argv;
mod docker_auth;
mod duration;
mod error;
mod fields;
mod locate;
mod secrets;
mod size;
mod template;

pub use argv::expand_argv;
pub use docker_auth::{docker_config_path, docker_login};
pub use duration::{format_duration, parse_duration};
pub use error::{ConfigError, ConfigErrorKind, Location};
pub use fields::{is_env_var_name, parse_server_url as server_url, AppName, SecretSource};
pub use secrets::SecretError;
pub use template::init_template;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The conventional name of the config file.
pub const CONFIG_FILE: &str = "cutover.toml";

/// How errors name the config committed in `version`: git's `<sha>:cutover.toml`, shortened.
pub fn committed_origin(version: &str) -> String {
    format!("{}:{CONFIG_FILE}", cutover_git::short(version))
}

/// Environment variables cutover sets on every instance (besides the `port_env` one); config
/// may not set them.
pub const RESERVED_ENV: &[&str] = &[
    "APP_VERSION",
    "CUTOVER_APP",
    "CUTOVER_ENV",
    "CUTOVER_RELEASE",
    "CUTOVER_INSTANCE",
    "CUTOVER_DATA_DIR",
];

/// A whole `cutover.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub app: App,
    pub build: Build,
    pub run: Run,
    #[serde(default)]
    pub health: Health,
    /// Plain environment variables for every environment.
    #[serde(default, deserialize_with = "fields::env_map")]
    pub env: BTreeMap<String, String>,
    /// Environment variable name → where its value comes from.
    #[serde(default, deserialize_with = "fields::secrets_map")]
    pub secrets: BTreeMap<String, SecretSource>,
    #[serde(deserialize_with = "fields::environments_map")]
    pub environments: BTreeMap<String, Environment>,
    /// Where image artifacts are published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<Registry>,
    #[serde(default)]
    pub retention: Retention,
    /// How to reach the container engine.
    #[serde(default)]
    pub docker: DockerSettings,
    #[serde(default)]
    pub pipeline: Pipeline,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,
}

/// `[registry]`: the OCI registry image artifacts are published to and pulled from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// `host:port` of the registry, e.g. "127.0.0.1:5000" or "ghcr.io".
    #[serde(deserialize_with = "fields::registry_url")]
    pub url: String,
    /// The image's name in the registry, e.g. "tasks-app" or "team/tasks-app".
    #[serde(deserialize_with = "fields::repository")]
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<SecretSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretSource>,
    /// Plain HTTP (and, over HTTPS, any certificate) is allowed, as Docker's
    /// insecure-registries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// A PEM file of CAs trusted besides the system's, relative to the directory of
    /// `cutover.toml`.
    #[serde(
        default,
        deserialize_with = "fields::ca_bundle",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_bundle: Option<PathBuf>,
}

impl Registry {
    /// `<url>/<repository>`, the image reference without tag or digest.
    pub fn image(&self) -> String {
        format!("{}/{}", self.url, self.repository)
    }
}

/// `[retention]`: what `cutover prune` must keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Known-good releases per environment (besides the live one) whose artifacts are kept.
    #[serde(deserialize_with = "fields::threshold")]
    pub keep: u32,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention { keep: 5 }
    }
}

/// `[docker]`: the Docker or Podman engine API endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSettings {
    /// e.g. "unix:///var/run/docker.sock"; default: `DOCKER_HOST`, then the engine's default socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// What runs an environment's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    /// Plain processes under cutover's supervisors (nothing to install).
    #[default]
    Process,
    /// Containers on a Docker Engine.
    Docker,
    /// Containers through Podman's Docker-compatible API.
    Podman,
    /// Services on a Docker Swarm (the Docker engine is a Swarm manager).
    Swarm,
}

impl RuntimeKind {
    pub fn is_container(self) -> bool {
        self != RuntimeKind::Process
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub name: AppName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// Run with `sh -c` in a checkout of the commit; `None`: nothing to build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Paths or globs, relative to the repository root, that make up the bundle artifact
    /// (for the process runtime).
    #[serde(
        default,
        deserialize_with = "fields::files",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub files: Vec<String>,
    /// A Dockerfile, relative to `context`: the artifact is also an OCI image (for container
    /// runtimes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// The image build's context, relative to the repository root.
    #[serde(default = "default_context")]
    pub context: String,
    /// Moving tags given to the image besides its `<sha>` tag (e.g. "latest"); never deployed.
    #[serde(
        default,
        deserialize_with = "fields::tags",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tags: Vec<String>,
}

fn default_context() -> String {
    ".".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// argv of the instance, run in the unpacked artifact (process runtime; container
    /// runtimes run the image's entrypoint when it is empty). `$NAME`, `${NAME}` and `$$` are
    /// expanded with [`expand_argv`] from the variables the instance gets (not its secrets).
    #[serde(
        default,
        deserialize_with = "fields::argv",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub command: Vec<String>,
    /// The variable that tells the instance which port to listen on.
    #[serde(
        default = "default_port_env",
        deserialize_with = "fields::env_var_name"
    )]
    pub port_env: String,
    /// Time between SIGTERM and SIGKILL.
    #[serde(default = "default_stop_timeout", with = "duration::serde_str")]
    pub stop_timeout: Duration,
    /// Container runtimes: the port the app listens on inside the container (also given as
    /// `port_env`).
    #[serde(
        default,
        deserialize_with = "fields::port",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<u16>,
    /// Container runtimes: named volumes kept across releases, "name:/path".
    #[serde(
        default,
        deserialize_with = "fields::volumes",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub volumes: Vec<String>,
}

fn default_port_env() -> String {
    "PORT".to_string()
}

fn default_stop_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// HTTP path probed on each instance.
    #[serde(deserialize_with = "fields::health_path")]
    pub path: String,
    /// Expected status; `None` accepts any 2xx.
    #[serde(
        deserialize_with = "fields::status",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    #[serde(with = "duration::serde_str")]
    pub interval: Duration,
    /// Timeout of one probe.
    #[serde(with = "duration::serde_str")]
    pub timeout: Duration,
    /// Consecutive successes that make a new instance healthy.
    #[serde(deserialize_with = "fields::threshold")]
    pub healthy_threshold: u32,
    /// How long a new instance has to become healthy.
    #[serde(with = "duration::serde_str")]
    pub deadline: Duration,
    /// The monitor window after cutover (`"0s"`: none).
    #[serde(with = "duration::serde_str")]
    pub monitor: Duration,
    /// Consecutive failures during the monitor window that trigger a rollback.
    #[serde(deserialize_with = "fields::threshold")]
    pub unhealthy_threshold: u32,
    /// `http` or `https` (the instance's certificate is not verified unless `ca_bundle` is
    /// given).
    pub scheme: HealthScheme,
    /// A PEM file of CAs that verify the instances' certificates (with `scheme = "https"`),
    /// relative to the directory of `cutover.toml`.
    #[serde(
        deserialize_with = "fields::ca_bundle",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_bundle: Option<PathBuf>,
}

/// How health probes talk to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthScheme {
    #[default]
    Http,
    Https,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            path: "/health".to_string(),
            status: None,
            body_contains: None,
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            deadline: Duration::from_secs(30),
            monitor: Duration::from_secs(10),
            unhealthy_threshold: 3,
            scheme: HealthScheme::Http,
            ca_bundle: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// Where the edge proxy of this environment listens.
    #[serde(deserialize_with = "fields::listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub strategy: Strategy,
    /// What runs this environment's instances.
    #[serde(default)]
    pub runtime: RuntimeKind,
    #[serde(default = "default_instances", deserialize_with = "fields::instances")]
    pub instances: u32,
    /// Plain environment variables for this environment (override the top-level `[env]`).
    #[serde(default, deserialize_with = "fields::env_map")]
    pub env: BTreeMap<String, String>,
    /// Who moves releases that the pipeline, a webhook or `watch` brings here: nobody
    /// (`auto`, continuous deployment) or a person (`manual`, continuous delivery).
    #[serde(default)]
    pub approval: Approval,
    /// Who may approve (empty: anyone but the commit's author).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Environments whose monitor window a version must have passed before it comes here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// `[environments.X.edge]`: the limits of the edge in front of this environment.
    #[serde(default)]
    pub edge: EdgeLimits,
    /// `[environments.<name>.swarm]`: settings of the `swarm` runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<SwarmSettings>,
    /// The cutover server that runs this environment, `https://host[:port]`; absent: the
    /// server of this machine's state dir, as always.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "fields::server_url"
    )]
    pub server: Option<String>,
}

/// `[environments.<name>.swarm]`: where the `swarm` runtime may place the instances.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmSettings {
    /// Swarm placement constraints, each `<attribute> == <value>` or `!=`, e.g.
    /// `node.role == worker` or `node.labels.zone == a`.
    #[serde(
        default,
        deserialize_with = "fields::constraints",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub constraints: Vec<String>,
}

/// `[environments.X.edge]`: what the edge accepts and how long it waits, each with a clear
/// answer when it runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeLimits {
    /// The largest request body passed on, in bytes; a larger one is answered 413.
    #[serde(with = "size::serde_str")]
    pub max_body: u64,
    /// How long the app has to start its answer; then 504.
    #[serde(with = "duration::positive")]
    pub upstream_timeout: Duration,
    /// How long a kept-alive client connection may sit with no request before it is closed.
    #[serde(with = "duration::positive")]
    pub idle_timeout: Duration,
    /// How long a client has to send a whole request head once it has begun one.
    #[serde(with = "duration::positive")]
    pub header_timeout: Duration,
    /// How long a cut-over waits for requests and WebSockets on the old instances before it
    /// closes what is left and stops them.
    #[serde(with = "duration::positive")]
    pub drain_timeout: Duration,
    /// Strict-Transport-Security on HTTPS answers (has no effect on plain HTTP).
    pub hsts: bool,
}

impl Default for EdgeLimits {
    fn default() -> EdgeLimits {
        EdgeLimits {
            max_body: 100_000_000,
            upstream_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            header_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            hsts: false,
        }
    }
}

/// The delivery-vs-deployment switch of an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Approval {
    /// Releases go live without a person (continuous deployment).
    #[default]
    Auto,
    /// Releases wait in `awaiting-approval` for `cutover approve` (continuous delivery).
    Manual,
}

/// `[pipeline]`: the gates that run before anything is built, and which branch ships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Only commits on this branch ship.
    #[serde(default = "default_branch", deserialize_with = "fields::git_name")]
    pub branch: String,
    /// The git remote a push webhook's commit is fetched from when the server's repository
    /// does not have it yet (a server whose repository is a clone of the forge's).
    #[serde(default = "default_remote", deserialize_with = "fields::git_name")]
    pub remote: String,
    /// The checks, a DAG through `needs`.
    #[serde(default, rename = "check", skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
}

impl Default for Pipeline {
    fn default() -> Pipeline {
        Pipeline {
            branch: default_branch(),
            remote: default_remote(),
            checks: Vec::new(),
        }
    }
}

fn default_branch() -> String {
    "main".to_string()
}

fn default_remote() -> String {
    "origin".to_string()
}

/// `[[pipeline.check]]`: one command run in a clean checkout of the commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    #[serde(deserialize_with = "fields::check_name")]
    pub name: String,
    /// Run with `sh -c`.
    #[serde(deserialize_with = "fields::check_run")]
    pub run: String,
    /// Checks that must pass first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    #[serde(default = "default_check_timeout", with = "duration::serde_str")]
    pub timeout: Duration,
}

fn default_check_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

/// `[webhook]`: push events from a forge start the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// The secret shared with the forge (HMAC key, or GitLab's token).
    pub secret: SecretSource,
    /// Where `cutover server` listens for deliveries (`POST /hooks/push`).
    #[serde(
        default = "default_webhook_listen",
        deserialize_with = "fields::listen"
    )]
    pub listen: SocketAddr,
}

fn default_webhook_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9870))
}

impl Webhook {
    /// The shared secret's value, from its source; an empty one is refused.
    pub fn resolve_secret(&self, base_dir: &Path) -> Result<String, SecretError> {
        let mut sources = BTreeMap::new();
        sources.insert("[webhook] secret".to_string(), self.secret.clone());
        let value = secrets::resolve_all(&sources, base_dir)?
            .remove("[webhook] secret")
            .unwrap_or_default();
        Ok(value)
    }
}

/// `[[notify]]`: a receiver of events (release state changes, …), POSTed over HTTP(S).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    #[serde(deserialize_with = "fields::http_url")]
    pub url: String,
    /// What the receiver is sent.
    #[serde(default)]
    pub format: NotifyFormat,
    /// Extra request headers, each value from a secret source (e.g. `Authorization`).
    #[serde(
        default,
        deserialize_with = "fields::headers",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub headers: BTreeMap<String, SecretSource>,
    /// A PEM file of CAs trusted besides the system's, relative to the directory of
    /// `cutover.toml`.
    #[serde(
        default,
        deserialize_with = "fields::ca_bundle",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_bundle: Option<PathBuf>,
}

impl Notify {
    /// The headers' values, from their sources (errors name the header, never a value).
    pub fn resolve_headers(&self, base_dir: &Path) -> Result<Vec<(String, String)>, SecretError> {
        let sources: BTreeMap<String, SecretSource> = self
            .headers
            .iter()
            .map(|(k, v)| (format!("[[notify]] headers.{k}"), v.clone()))
            .collect();
        let values = secrets::resolve_all(&sources, base_dir)?;
        Ok(self
            .headers
            .keys()
            .filter_map(|k| {
                let v = values.get(&format!("[[notify]] headers.{k}"))?;
                Some((k.clone(), v.clone()))
            })
            .collect())
    }
}

/// The body a `[[notify]]` receiver gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyFormat {
    /// The event as JSON, with its `kind`.
    #[default]
    Json,
    /// Slack-compatible incoming-webhook text (Mattermost and Rocket.Chat take it too).
    Slack,
    /// An Adaptive Card, as Microsoft Teams workflow webhooks take it.
    Teams,
}

fn default_instances() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Start the new version beside the old one, switch when healthy.
    #[default]
    BlueGreen,
    /// Stop the old version, then start the new one (for apps that cannot run twice).
    Recreate,
}

impl Config {
    /// Parses the text of a `cutover.toml`; `origin` is the file name shown in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::from_toml(text, origin, &e))?;
        config.check_consistency(text, origin)?;
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ConfigError::new(ConfigErrorKind::NotFound, "no such file")
                    .with_origin(&origin)
                    .with_hint("run `cutover init` to write a commented cutover.toml here")
            } else {
                ConfigError::new(ConfigErrorKind::Io, format!("cannot read the file: {e}"))
                    .with_origin(&origin)
                    .with_hint("check that the path is a readable file")
            }
        })?;
        Config::parse(&text, &origin)
    }

    /// The environment called `name`; the error lists the ones that exist.
    pub fn environment(&self, name: &str) -> Result<&Environment, ConfigError> {
        self.environments.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.environments.keys().map(String::as_str).collect();
            ConfigError::new(
                ConfigErrorKind::UnknownEnvironment,
                format!("no environment named `{name}`"),
            )
            .with_hint(format!(
                "known environments: {} (each is an [environments.<name>] table in cutover.toml)",
                known.join(", ")
            ))
        })
    }

    /// Checks `--env NAME=VALUE` overrides: valid names, not a secret, not set by cutover.
    /// Errors never show the value.
    pub fn check_overrides(&self, overrides: &[(String, String)]) -> Result<(), ConfigError> {
        for (name, _value) in overrides {
            let err = |message: String, hint: &str| {
                ConfigError::new(ConfigErrorKind::Override, message)
                    .with_field(format!("--env {name}"))
                    .with_hint(hint)
            };
            if !is_env_var_name(name) {
                return Err(err(
                    format!("{name:?} is not a valid environment variable name"),
                    &format!("{}; write --env NAME=VALUE", fields::ENV_VAR_HINT),
                ));
            }
            if let Some(source) = self.secrets.get(name) {
                return Err(err(
                    format!(
                        "{name} is a secret; set it through its source {}, not with --env",
                        source.describe()
                    ),
                    "values given with --env are recorded with the release; secrets never are",
                ));
            }
            if self.is_reserved(name) {
                return Err(err(
                    format!("{name} is set by cutover for every instance"),
                    "remove this override",
                ));
            }
        }
        Ok(())
    }

    /// Resolves every secret: env vars of this process, files relative to `base_dir`,
    /// commands run with `sh -c` in `base_dir`.
    pub fn resolve_secrets(
        &self,
        base_dir: &Path,
    ) -> Result<BTreeMap<String, String>, SecretError> {
        secrets::resolve_all(&self.secrets, base_dir)
    }

    /// Resolves `[registry] username` and `password` (same sources as secrets); without them,
    /// the login the Docker client config of this user has for the registry; `None`: no login.
    pub fn registry_credentials(
        &self,
        base_dir: &Path,
    ) -> Result<Option<(String, String)>, SecretError> {
        let Some(registry) = &self.registry else {
            return Ok(None);
        };
        let mut sources = BTreeMap::new();
        if let Some(u) = &registry.username {
            sources.insert("[registry] username".to_string(), u.clone());
        }
        if let Some(p) = &registry.password {
            sources.insert("[registry] password".to_string(), p.clone());
        }
        if sources.is_empty() {
            return docker_auth::docker_login(&registry.url);
        }
        let mut values = secrets::resolve_all(&sources, base_dir)?;
        let user = values.remove("[registry] username").unwrap_or_default();
        let password = values.remove("[registry] password").unwrap_or_default();
        Ok(Some((user, password)))
    }

    fn is_reserved(&self, name: &str) -> bool {
        name == self.run.port_env || RESERVED_ENV.contains(&name)
    }

    /// Checks that involve more than one field; errors point at the later offending place.
    fn check_consistency(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let entries = locate::entries(text);
        let at_value = |path: &[&str]| locate::value_span(&entries, path).map_or(0, |s| s.start);
        let at_key = |path: &[&str]| locate::key_span(&entries, path).map_or(0, |s| s.start);
        let field = |path: &[&str], table: bool| {
            let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            locate::field_name(&path, table)
        };

        if self.environments.is_empty() {
            return Err(ConfigError::at(
                text,
                origin,
                at_value(&["environments"]),
                "no environment is declared",
            )
            .with_field("[environments]")
            .with_hint("add one, e.g. [environments.staging] with listen = \"127.0.0.1:8001\""));
        }

        // Listen addresses, in document order: a later one may not overlap an earlier one.
        let mut listens: Vec<(usize, &str, SocketAddr)> = self
            .environments
            .iter()
            .map(|(name, env)| {
                (
                    at_value(&["environments", name, "listen"]),
                    name.as_str(),
                    env.listen,
                )
            })
            .collect();
        listens.sort();
        for (i, (offset, name, addr)) in listens.iter().enumerate() {
            if let Some((_, first, _)) = listens[..i].iter().find(|(_, _, a)| overlaps(*a, *addr)) {
                return Err(ConfigError::at(
                    text,
                    origin,
                    *offset,
                    format!("{addr} is already the listen address of environment `{first}`"),
                )
                .with_field(field(&["environments", name, "listen"], false))
                .with_hint(
                    "give each environment its own port, e.g. 127.0.0.1:8001 and 127.0.0.1:8002",
                ));
            }
        }

        // TLS keys that would be ignored are a mistake, not a default.
        if self.health.ca_bundle.is_some() && self.health.scheme == HealthScheme::Http {
            return Err(ConfigError::at(
                text,
                origin,
                at_value(&["health", "ca_bundle"]),
                "ca_bundle verifies the certificates of instances that serve HTTPS, but scheme is \"http\"",
            )
            .with_field(field(&["health", "ca_bundle"], false))
            .with_hint("add scheme = \"https\" to [health] if the app serves TLS, or remove ca_bundle"));
        }
        if let Some(r) = self
            .registry
            .as_ref()
            .filter(|r| r.insecure && r.ca_bundle.is_some())
        {
            return Err(ConfigError::at(
                text,
                origin,
                at_value(&["registry", "insecure"]),
                format!(
                    "insecure = true accepts any certificate from {}, so ca_bundle would never be used",
                    r.url
                ),
            )
            .with_field(field(&["registry", "insecure"], false))
            .with_hint("remove insecure to verify the registry against ca_bundle, or remove ca_bundle"));
        }

        self.check_pipeline(text, origin, &entries)?;
        for (name, env) in &self.environments {
            for (i, required) in env.requires.iter().enumerate() {
                let problem = if required == name {
                    Some(format!("environment `{name}` cannot require itself"))
                } else if !self.environments.contains_key(required) {
                    Some(format!("no environment named `{required}`"))
                } else {
                    None
                };
                if let Some(message) = problem {
                    let at = locate::value_span(&entries, &["environments", name, "requires"])
                        .map_or(0, |s| s.start);
                    let known: Vec<&str> = self
                        .environments
                        .keys()
                        .filter(|k| *k != name)
                        .map(String::as_str)
                        .collect();
                    return Err(ConfigError::at(text, origin, at, message)
                        .with_field(format!("[environments.{name}] requires[{i}]"))
                        .with_hint(format!(
                            "name environments a version must pass first: {}",
                            known.join(", ")
                        )));
                }
            }
        }

        // `[environments.X.swarm]` configures the swarm runtime only.
        for (name, env) in &self.environments {
            if env.swarm.is_some() && env.runtime != RuntimeKind::Swarm {
                return Err(ConfigError::at(
                    text,
                    origin,
                    at_key(&["environments", name, "swarm"]),
                    format!(
                        "environment `{name}` runs on {}, and [environments.{name}.swarm] configures the swarm runtime",
                        runtime_name(env.runtime)
                    ),
                )
                .with_field(format!("[environments.{name}.swarm]"))
                .with_hint(format!(
                    "set runtime = \"swarm\" in [environments.{name}], or remove [environments.{name}.swarm]"
                )));
            }
        }

        // What each environment's runtime needs from [build] and [run].
        for (name, env) in &self.environments {
            let need = |table: &str, key: &str, what: &str, hint: &str| {
                let at = locate::key_span(&entries, &[table])
                    .or_else(|| locate::key_span(&entries, &["environments", name]))
                    .map_or(0, |s| s.start);
                Err(ConfigError::at(
                    text,
                    origin,
                    at,
                    format!(
                        "environment `{name}` runs on {}, which needs {what}",
                        runtime_name(env.runtime)
                    ),
                )
                .with_field(format!("[{table}] {key}"))
                .with_hint(hint.to_string()))
            };
            if env.runtime.is_container() {
                if self.build.dockerfile.is_none() {
                    return need(
                        "build",
                        "dockerfile",
                        "an image to run",
                        "add dockerfile = \"Dockerfile\" to [build]",
                    );
                }
                if self.run.port.is_none() {
                    return need(
                        "run",
                        "port",
                        "the port the app listens on in the container",
                        "add port = 8000 to [run]",
                    );
                }
            } else {
                if self.build.files.is_empty() {
                    return need("build", "files", "a bundle of files", "list what goes into the bundle, e.g. files = [\"target/release/app\"], or set runtime = \"docker\"");
                }
                if self.run.command.is_empty() {
                    return need(
                        "run",
                        "command",
                        "a command to run",
                        "add command = [\"./app\"] to [run], or set runtime = \"docker\"",
                    );
                }
            }
        }

        // Plain env names: not secrets, not set by cutover.
        let mut plain: Vec<Vec<&str>> = self.env.keys().map(|k| vec!["env", k.as_str()]).collect();
        for (env_name, env) in &self.environments {
            plain.extend(
                env.env
                    .keys()
                    .map(|k| vec!["environments", env_name, "env", k.as_str()]),
            );
        }
        for path in &plain {
            let Some(name) = path.last() else { continue };
            if self.secrets.contains_key(*name) {
                return Err(ConfigError::at(
                    text,
                    origin,
                    at_key(path),
                    format!("{name} is also declared in [secrets]"),
                )
                .with_field(field(path, false))
                .with_hint(format!(
                    "a variable is either plain or a secret: remove {name} from one of them"
                )));
            }
        }
        let secret_paths = self.secrets.keys().map(|k| vec!["secrets", k.as_str()]);
        for path in plain.iter().cloned().chain(secret_paths) {
            let Some(name) = path.last() else { continue };
            if self.is_reserved(name) {
                return Err(ConfigError::at(
                    text,
                    origin,
                    at_key(&path),
                    format!("{name} is set by cutover for every instance"),
                )
                .with_field(field(&path, false))
                .with_hint(format!(
                    "remove it; cutover sets {}, {}",
                    self.run.port_env,
                    RESERVED_ENV.join(", ")
                )));
            }
        }
        self.check_run_command(text, origin)
    }

    /// `$NAME` in `[run] command`: well formed, not a secret, and given to the instances of
    /// every environment.
    fn check_run_command(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        for (i, arg) in self.run.command.iter().enumerate() {
            let err = |message: String, hint: String| {
                let at =
                    locate::array_item_span(text, &["run", "command"], i).map_or(0, |s| s.start);
                Err(ConfigError::at(text, origin, at, message)
                    .with_field(format!("[run] command[{i}]"))
                    .with_hint(hint))
            };
            let names = match argv::names(arg) {
                Ok(names) => names,
                Err(message) => {
                    return err(
                        message,
                        "write $NAME or ${NAME} for a variable, and $$ for a literal $".into(),
                    )
                }
            };
            for name in names {
                if self.secrets.contains_key(name) {
                    return err(
                        format!("{name} is a secret, and a process's arguments are visible to every user of the machine (`ps`)"),
                        format!("remove it from the command and read {name} from the environment in the app, where cutover puts it"),
                    );
                }
                for (env_name, env) in &self.environments {
                    let known = self.instance_vars(env);
                    if known.contains(&name) {
                        continue;
                    }
                    let elsewhere = self
                        .environments
                        .values()
                        .any(|e| self.instance_vars(e).contains(&name));
                    if name == "CUTOVER_DATA_DIR" {
                        return err(
                            format!("CUTOVER_DATA_DIR is not set in environment `{env_name}`: it runs containers and [run] has no volumes"),
                            "in a container it is the path of the first of [run] volumes: add one, e.g. volumes = [\"data:/data\"]".into(),
                        );
                    }
                    if elsewhere {
                        return err(
                            format!("{name} is not set in environment `{env_name}`"),
                            format!("add {name} to [env], or to [environments.{env_name}.env]"),
                        );
                    }
                    return err(
                        format!("unknown variable {name} in {arg:?}"),
                        format!(
                            "the instance gets {}; add {name} to [env] to give it one, or write $$ for a literal $",
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// The names of the variables cutover gives every instance of `env`, secrets aside: the
    /// port, the ones it sets itself, then `[env]` and the environment's env.
    fn instance_vars<'a>(&'a self, env: &'a Environment) -> Vec<&'a str> {
        let data_dir = !env.runtime.is_container() || !self.run.volumes.is_empty();
        let mut names = vec![self.run.port_env.as_str()];
        names.extend(
            RESERVED_ENV
                .iter()
                .copied()
                .filter(|n| data_dir || *n != "CUTOVER_DATA_DIR"),
        );
        for key in self.env.keys().chain(env.env.keys()) {
            if !names.contains(&key.as_str()) {
                names.push(key);
            }
        }
        names
    }
}

impl Config {
    /// Check names are unique, `needs` name existing checks, and there is no cycle.
    fn check_pipeline(
        &self,
        text: &str,
        origin: &str,
        entries: &[locate::Entry],
    ) -> Result<(), ConfigError> {
        let checks = &self.pipeline.checks;
        let at = locate::key_span(entries, &["pipeline"]).map_or(0, |s| s.start);
        let err = |i: usize, key: &str, message: String, hint: String| {
            Err(ConfigError::at(text, origin, at, message)
                .with_field(format!("[[pipeline.check]] #{} {key}", i + 1))
                .with_hint(hint))
        };
        for (i, check) in checks.iter().enumerate() {
            if checks[..i].iter().any(|c| c.name == check.name) {
                return err(
                    i,
                    "name",
                    format!("two checks are named `{}`", check.name),
                    "give each check its own name".into(),
                );
            }
            for need in &check.needs {
                if !checks.iter().any(|c| &c.name == need) {
                    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
                    return err(
                        i,
                        "needs",
                        format!(
                            "check `{}` needs `{need}`, which is not a check",
                            check.name
                        ),
                        format!("the checks are: {}", names.join(", ")),
                    );
                }
            }
        }
        if let Some(cycle) = find_cycle(checks) {
            let i = checks.iter().position(|c| c.name == cycle[0]).unwrap_or(0);
            return err(
                i,
                "needs",
                format!(
                    "the checks need each other in a circle: {}",
                    cycle.join(" → ")
                ),
                "remove one of these `needs` so the checks can run in some order".into(),
            );
        }
        Ok(())
    }
}

/// A cycle in the checks' `needs`, as names (first repeated at the end), if there is one.
fn find_cycle(checks: &[Check]) -> Option<Vec<String>> {
    fn visit<'a>(
        name: &'a str,
        checks: &'a [Check],
        path: &mut Vec<&'a str>,
        done: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| *n == name) {
            let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
            cycle.push(name.to_string());
            return Some(cycle);
        }
        if done.contains(&name) {
            return None;
        }
        path.push(name);
        let check = checks.iter().find(|c| c.name == name)?;
        for need in &check.needs {
            if let Some(cycle) = visit(need, checks, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.push(name);
        None
    }
    let mut done = Vec::new();
    for check in checks {
        if let Some(cycle) = visit(&check.name, checks, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

fn runtime_name(kind: RuntimeKind) -> &'static str {
    match kind {
        RuntimeKind::Process => "the process runtime",
        RuntimeKind::Docker => "docker",
        RuntimeKind::Podman => "podman",
        RuntimeKind::Swarm => "swarm",
    }
}

/// Two listen addresses conflict on the same port if their IPs are equal or one is a wildcard.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
