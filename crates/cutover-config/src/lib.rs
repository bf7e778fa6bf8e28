//! The `cutover.toml` schema: parsing with errors that name file, line, column, field and fix;
//! the committed config snapshot (JSON round-trip); secret resolution; the `cutover init` template.

mod argv;
mod checks;
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
    /// `[acme]`: where `tls = "acme"` environments get their certificates.
    #[serde(default)]
    pub acme: Acme,
}

/// `[acme]`: the ACME (RFC 8555) directory that issues certificates for `tls = "acme"`
/// environments, and the account's contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    /// The directory URL, https only.
    #[serde(
        default = "default_acme_directory",
        deserialize_with = "fields::acme_directory"
    )]
    pub directory: String,
    /// The account's contact address (the CA writes about expiring certificates).
    #[serde(
        default,
        deserialize_with = "fields::email",
        skip_serializing_if = "Option::is_none"
    )]
    pub email: Option<String>,
    /// A PEM file of CAs trusted besides the system's for the directory, relative to the
    /// directory of `cutover.toml`.
    #[serde(
        default,
        deserialize_with = "fields::ca_bundle",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_bundle: Option<PathBuf>,
    /// How long before a certificate expires it is renewed.
    #[serde(default = "default_renew_before", with = "duration::positive")]
    pub renew_before: Duration,
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

fn default_acme_directory() -> String {
    LETS_ENCRYPT.to_string()
}

fn default_renew_before() -> Duration {
    Duration::from_secs(30 * 86_400)
}

impl Default for Acme {
    fn default() -> Acme {
        Acme {
            directory: default_acme_directory(),
            email: None,
            ca_bundle: None,
            renew_before: default_renew_before(),
        }
    }
}

/// `tls` of an environment: where the edge gets the certificate for its `hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// `tls = "acme"`: obtained and renewed through `[acme]`.
    Acme,
    /// `tls = { cert = "…", key = "…" }`: PEM files (the chain, leaf first, and its private
    /// key), relative to the directory of `cutover.toml`; reloaded when they change.
    Files { cert: PathBuf, key: PathBuf },
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
    /// The host names this environment answers on its `listen` address (matched against SNI and
    /// the `Host` header, case-insensitively, port and trailing dot ignored; `*.example.com`
    /// matches one label). Empty: every host.
    /// Environments (of this app or of another app on the machine) may share a `listen`
    /// address only when all of them have hosts and no host is claimed twice.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "fields::hosts"
    )]
    pub hosts: Vec<String>,
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
    /// HTTPS on `listen`: `"acme"` or `{ cert, key }`; absent: plain HTTP.
    #[serde(
        default,
        with = "fields::tls_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls: Option<Tls>,
    /// A plain-HTTP address that answers ACME HTTP-01 challenges and redirects everything else
    /// to `https://` (308).
    #[serde(
        default,
        deserialize_with = "fields::listen_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub http_redirect: Option<SocketAddr>,
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

    /// Resolves the secrets that the caller of a deploy resolves — every one but those marked
    /// `on = "server"`: env vars of this process, files relative to `base_dir`, commands run
    /// with `sh -c` in `base_dir`.
    pub fn resolve_secrets(
        &self,
        base_dir: &Path,
    ) -> Result<BTreeMap<String, String>, SecretError> {
        let here: BTreeMap<String, SecretSource> = self
            .secrets
            .iter()
            .filter(|(_, source)| !source.on_server())
            .map(|(name, source)| (name.clone(), source.clone()))
            .collect();
        secrets::resolve_all(&here, base_dir)
    }

    /// What the server that runs a release resolves: every secret the caller did not `give`,
    /// and every one marked `on = "server"` whatever the caller gave for it.
    pub fn complete_secrets(
        &self,
        base_dir: &Path,
        mut given: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, SecretError> {
        given.retain(|name, _| {
            self.secrets
                .get(name)
                .is_some_and(|source| !source.on_server())
        });
        let missing: BTreeMap<String, SecretSource> = self
            .secrets
            .iter()
            .filter(|(name, _)| !given.contains_key(*name))
            .map(|(name, source)| (name.clone(), source.clone()))
            .collect();
        given.extend(secrets::resolve_all(&missing, base_dir)?);
        Ok(given)
    }

    /// Whether the server has every secret value a release needs in `given`.
    pub fn secrets_complete(&self, given: &BTreeMap<String, String>) -> bool {
        self.secrets
            .iter()
            .all(|(name, source)| !source.on_server() && given.contains_key(name))
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
}
