//! The container harness: a real Docker engine, one real registry (Debian's `docker-registry`)
//! per test process, and a [`DockerLab`] — a [`Lab`] whose `cutover.toml` ships the course's
//! tasks-app as an image `FROM scratch` (the static binary, compiled once per test process and
//! committed into the lab, is what the Dockerfile copies), published to that registry and run
//! on the `docker` runtime in two environments (`staging`, `production`).
//!
//! Every test first calls [`docker_lab`] (or [`docker_ready`]): without an engine or the
//! registry binary it prints `SKIPPED: <reason>` and the test returns, unless
//! `CUTOVER_REQUIRE_DOCKER=1`, which turns the skip into a failure.
//!
//! Dropping a lab runs `cutover down`, then removes every container whose `cutover.app` label is
//! the lab's (unique) app name, every image of the lab's (unique) repository and the lab's named
//! volumes: nothing that is not this lab's is ever touched.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// Skips (prints `SKIPPED: …`) or, with `CUTOVER_REQUIRE_DOCKER=1`, fails the calling test.
pub fn skip(reason: &str) {
    if std::env::var("CUTOVER_REQUIRE_DOCKER").as_deref() == Ok("1") {
        panic!("CUTOVER_REQUIRE_DOCKER=1 and {reason}");
    }
    eprintln!("SKIPPED: {reason} (set CUTOVER_REQUIRE_DOCKER=1 to fail instead)");
}

/// `docker ARGS`: (exit code, stdout, stderr).
pub fn docker(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running docker");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// `docker ARGS` that must succeed; its stdout.
#[track_caller]
pub fn docker_ok(args: &[&str]) -> String {
    let (code, out, err) = docker(args);
    assert_eq!(code, 0, "docker {args:?} failed: {err}\n{out}");
    out
}

/// The registry of this test process: `127.0.0.1:<port>`.
pub struct Registry {
    pub addr: String,
}

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// The engine answers and the registry runs, or why not (checked once per process).
fn environment() -> &'static Result<Registry, String> {
    static ENV: OnceLock<Result<Registry, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        match Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(format!(
                    "no Docker engine answers: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
            Err(e) => return Err(format!("the docker CLI cannot run: {e}")),
        }
        if !Path::new(REGISTRY_BIN).is_file() {
            return Err(format!(
                "{REGISTRY_BIN} is missing (apt-get install -y docker-registry)"
            ));
        }
        start_registry()
    })
}

/// The registry, if the engine and the registry binary are here; else a skip was printed.
pub fn docker_ready() -> Option<&'static Registry> {
    match environment() {
        Ok(r) => Some(r),
        Err(e) => {
            skip(e);
            None
        }
    }
}

/// Starts `docker-registry` on a free port under a watchdog shell that stops it (and removes
/// its storage) once this test process is gone: statics are never dropped.
fn start_registry() -> Result<Registry, String> {
    let dir = std::env::temp_dir().join(format!("cutover-it-registry-{}", std::process::id()));
    fs::create_dir_all(dir.join("storage")).map_err(|e| e.to_string())?;
    let addr = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
        dir.join("storage").display()
    );
    spawn_watched_registry(&dir, &config)?;
    let sock: SocketAddr = addr.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok((200, _)) = http_get(sock, "/v2/") {
            return Ok(Registry { addr });
        }
        if Instant::now() > deadline {
            let log = fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
            return Err(format!(
                "docker-registry did not answer GET /v2/ on {addr} within 15s: {log}"
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `docker-registry serve` with `config` (written to `dir/config.yml`, its log to
/// `dir/registry.log`) under a watchdog shell that stops it and removes `dir` once this test
/// process is gone, or once `dir/stop` exists.
pub fn spawn_watched_registry(dir: &Path, config: &str) -> Result<(), String> {
    let config_path = dir.join("config.yml");
    fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let script = r#"
        "$1" serve "$2" 2>"$3/registry.log" &
        reg=$!
        while kill -0 "$4" 2>/dev/null && kill -0 "$reg" 2>/dev/null && [ ! -e "$3/stop" ]; do sleep 0.2; done
        kill "$reg" 2>/dev/null; wait "$reg" 2>/dev/null
        rm -rf "$3"
    "#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("registry-watchdog")
        .arg(REGISTRY_BIN)
        .arg(&config_path)
        .arg(dir)
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {REGISTRY_BIN}: {e}"))?;
    Ok(())
}

/// The course's tasks-app as a static binary (it runs `FROM scratch`), compiled once.
pub fn static_tasks_app() -> &'static Path {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    APP.get_or_init(|| {
        let source =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tasks-app/src/main.rs");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "integration-static-tasks-app-{}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join("tasks-app");
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let result = Command::new(rustc)
            .args([
                "-O",
                "-C",
                "target-feature=+crt-static",
                "--target",
                "x86_64-unknown-linux-gnu",
                "--edition",
                "2021",
                "--crate-name",
                "tasks_app",
                "-o",
            ])
            .arg(&out)
            .arg(&source)
            .output()
            .expect("running rustc");
        assert!(
            result.status.success(),
            "compiling the static tasks-app failed:\n{}",
            String::from_utf8_lossy(&result.stderr)
        );
        out
    })
}

/// The lab's image: the committed static binary, nothing to pull.
pub const DOCKERFILE: &str = "FROM scratch\nCOPY app /tasks-app\nENV HOST=0.0.0.0 PORT=8000\nEXPOSE 8000\nENTRYPOINT [\"/tasks-app\"]\n";

/// Knobs of a docker lab's `cutover.toml`.
#[derive(Clone, Debug)]
pub struct DockerSettings {
    pub monitor: String,
    pub keep: u32,
    /// Lines of `[run]` besides `port` (e.g. volumes).
    pub run: String,
    /// Extra top-level tables (`[secrets]`, `[docker]`), before the environments.
    pub extra: String,
    /// The registry url; default this process's registry.
    pub registry_url: Option<String>,
    /// More lines of `[registry]` (credentials, `ca_bundle`, `insecure`).
    pub registry_extra: String,
    pub runtime: String,
}

impl Default for DockerSettings {
    fn default() -> DockerSettings {
        DockerSettings {
            monitor: "1s".into(),
            keep: 5,
            run: "stop_timeout = \"2s\"".into(),
            extra: String::new(),
            registry_url: None,
            registry_extra: String::new(),
            runtime: "docker".into(),
        }
    }
}

pub struct DockerLab {
    pub lab: Lab,
    /// The unique app name, also the registry repository.
    pub app: String,
    /// `127.0.0.1:<port>/<app>`: the image name on the engine.
    pub image: String,
    pub registry: &'static Registry,
    pub production: SocketAddr,
    pub settings: DockerSettings,
}

impl std::ops::Deref for DockerLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

/// A docker lab with default settings, or `None` (skip printed) without Docker.
pub fn docker_lab() -> Option<DockerLab> {
    docker_lab_with(|_| {})
}

pub fn docker_lab_with(tweak: impl FnOnce(&mut DockerSettings)) -> Option<DockerLab> {
    let registry = docker_ready()?;
    static N: AtomicUsize = AtomicUsize::new(0);
    let app = format!(
        "ctest-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let lab = Lab::new();
    fs::copy(static_tasks_app(), lab.repo.join("app")).unwrap();
    fs::write(lab.repo.join("Dockerfile"), DOCKERFILE).unwrap();
    fs::write(lab.repo.join(".dockerignore"), "*\n!app\n").unwrap();
    let mut settings = DockerSettings::default();
    tweak(&mut settings);
    let production: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dl = DockerLab {
        image: format!("{}/{app}", registry.addr),
        app,
        lab,
        registry,
        production,
        settings,
    };
    dl.commit_config(&dl.config(), "ship it as an image");
    Some(dl)
}

impl DockerLab {
    pub fn config(&self) -> String {
        let s = &self.settings;
        let url = s.registry_url.clone().unwrap_or(self.registry.addr.clone());
        format!(
            r#"[app]
name = "{app}"

[build]
dockerfile = "Dockerfile"

[registry]
url = "{url}"
repository = "{app}"
{registry_extra}

[retention]
keep = {keep}

[run]
port = 8000
{run}

[health]
path = "/health"
body_contains = "ok"
interval = "50ms"
timeout = "2s"
healthy_threshold = 2
deadline = "10s"
unhealthy_threshold = 3
monitor = "{monitor}"

{extra}

[environments.staging]
runtime = "{runtime}"
listen = "{staging}"

[environments.production]
runtime = "{runtime}"
listen = "{production}"
"#,
            app = self.app,
            keep = s.keep,
            run = s.run,
            monitor = s.monitor,
            extra = s.extra,
            registry_extra = s.registry_extra,
            runtime = s.runtime,
            staging = self.lab.listen,
            production = self.production,
        )
    }

    /// Rewrites the config from the settings and commits it; the new sha.
    pub fn recommit(&mut self, tweak: impl FnOnce(&mut DockerSettings), message: &str) -> String {
        tweak(&mut self.settings);
        self.commit_config(&self.config(), message)
    }

    /// `<image>:<version>`.
    pub fn tag(&self, version: &str) -> String {
        format!("{}:{version}", self.image)
    }

    /// The version the production proxy serves now (`/health` 200 only).
    pub fn serving_production(&self) -> Option<String> {
        match http_get(self.production, "/health") {
            Ok((200, body)) => json_field(&body, "version"),
            _ => None,
        }
    }

    /// An environment of `status --json`.
    pub fn env_status(&self, env: &str) -> serde_json::Value {
        let status = self.status();
        status["environments"]
            .as_array()
            .expect("environments[]")
            .iter()
            .find(|e| e["name"] == env)
            .cloned()
            .unwrap_or_else(|| panic!("no {env} in status: {status:#}"))
    }

    /// Names of this lab's containers (running or not) with `docker ps -a`.
    pub fn containers(&self) -> Vec<String> {
        let out = docker_ok(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=cutover.app={}", self.app),
            "--format",
            "{{.Names}}",
        ]);
        out.lines().map(str::to_string).collect()
    }

    /// `docker inspect` of one container or image, as JSON (the first element).
    pub fn inspect(&self, what: &[&str]) -> serde_json::Value {
        let mut args = vec!["inspect"];
        args.extend_from_slice(what);
        let out = docker_ok(&args);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    /// Whether the engine has image `reference`.
    pub fn has_image(&self, reference: &str) -> bool {
        docker(&["image", "inspect", reference]).0 == 0
    }

    /// The digest the registry gives for `<app>:<tag>` (Docker and OCI manifests accepted).
    pub fn registry_digest(&self, tag: &str) -> Option<String> {
        let (status, head, _) = http_request(
            &self.registry.addr,
            "GET",
            &format!("/v2/{}/manifests/{tag}", self.app),
            &[(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json",
            )],
        )
        .ok()?;
        if status != 200 {
            return None;
        }
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("docker-content-digest")
                .then(|| v.trim().to_string())
        })
    }

    /// Removes every local reference (tags and digests) of this lab's images.
    pub fn remove_local_images(&self) {
        for r in self.local_refs() {
            let _ = docker(&["rmi", &r]);
        }
    }

    /// `repo:tag` and `repo@digest` of every local image of the lab's repository.
    pub fn local_refs(&self) -> Vec<String> {
        let out = docker(&[
            "images",
            "--digests",
            "--format",
            "{{.Repository}} {{.Tag}} {{.Digest}}",
        ])
        .1;
        let mut refs = Vec::new();
        for line in out.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            // The app name is unique: its repository in any registry (a test may point the lab
            // at another one), or the bare name of a lab without [registry].
            let ours = parts.first().is_some_and(|r| {
                *r == self.app
                    || r.strip_suffix(self.app.as_str())
                        .is_some_and(|p| p.ends_with('/'))
            });
            if parts.len() != 3 || !ours {
                continue;
            }
            if parts[1] != "<none>" {
                refs.push(format!("{}:{}", parts[0], parts[1]));
            }
            if parts[2] != "<none>" {
                refs.push(format!("{}@{}", parts[0], parts[2]));
            }
        }
        refs.sort();
        refs.dedup();
        refs
    }

    fn cleanup(&self) {
        // `cutover down` without the panicking helpers (this runs during unwinding too).
        if self.state_dir().join("server.pid").exists() {
            let child = Command::new(env!("CARGO_BIN_EXE_cutover"))
                .arg("down")
                .current_dir(&self.repo)
                .env("CUTOVER_EDGE_DIR", self.edge_dir())
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            if let Ok(mut child) = child {
                let start = Instant::now();
                while let Ok(None) = child.try_wait() {
                    if start.elapsed() > Duration::from_secs(30) {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
        // Swarm services and secrets first (removing a task's container only makes Swarm
        // start another); `docker service ls` fails harmlessly on an engine without a Swarm.
        let label = format!("label=cutover.app={}", self.app);
        let services = docker(&["service", "ls", "--filter", &label, "--format", "{{.Name}}"]).1;
        let services: Vec<&str> = services.lines().filter(|l| !l.is_empty()).collect();
        for name in &services {
            let _ = docker(&["service", "rm", name]);
        }
        // Their tasks' containers go after the service: wait, so that their images can go.
        let deadline = Instant::now() + Duration::from_secs(30);
        for name in &services {
            let filter = format!("label=com.docker.swarm.service.name={name}");
            while !docker(&["ps", "-aq", "--filter", &filter]).1.is_empty()
                && Instant::now() < deadline
            {
                thread::sleep(Duration::from_millis(100));
            }
        }
        let secrets = docker(&["secret", "ls", "-q", "--filter", &label]).1;
        for id in secrets.lines().filter(|l| !l.is_empty()) {
            let _ = docker(&["secret", "rm", id]);
        }
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=cutover.app={}", self.app),
        ])
        .1;
        for id in ids.lines().filter(|l| !l.is_empty()) {
            let _ = docker(&["rm", "-f", "-v", id]);
        }
        // By reference only, never by id: identical bytes give other labs the same image id.
        for r in self.local_refs() {
            let (code, _, err) = docker(&["rmi", &r]);
            if code != 0 && !err.contains("No such image") {
                eprintln!("cleanup of {}: docker rmi {r}: {err}", self.app);
            }
        }
        let vols = docker(&["volume", "ls", "-q"]).1;
        for v in vols
            .lines()
            .filter(|v| v.starts_with(&format!("{}-", self.app)))
        {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
    }
}

impl Drop for DockerLab {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Builds an image of other bytes than the lab's (a different file) and tags it `reference`.
pub fn build_other_image(lab: &DockerLab, reference: &str) {
    let ctx = tempfile::Builder::new()
        .prefix("cutover-it-other-")
        .tempdir()
        .unwrap();
    fs::write(ctx.path().join("other.txt"), format!("not {}\n", lab.app)).unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY other.txt /other.txt\n",
    )
    .unwrap();
    let (code, out, err) = docker(&[
        "build",
        "-q",
        "--label",
        &format!("cutover.test={}", lab.app),
        "-t",
        reference,
        &ctx.path().to_string_lossy(),
    ]);
    assert_eq!(code, 0, "docker build failed: {err}\n{out}");
}

/// One HTTP/1.1 request with extra headers: (status, head, body).
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    let sock: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    crate::support::split_response(&raw)
}

/// The registry, if the engine is also a Swarm manager (made one with `docker swarm init
/// --advertise-addr 127.0.0.1` when its Swarm is inactive; a worker or a locked Swarm is a
/// skip); else a skip was printed.
pub fn swarm_ready() -> Option<&'static Registry> {
    static SWARM: OnceLock<Result<(), String>> = OnceLock::new();
    let registry = docker_ready()?;
    let ready = SWARM.get_or_init(|| {
        let state = || {
            docker(&[
                "info",
                "--format",
                "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
            ])
            .1
        };
        if state() == "inactive false" {
            let (code, _, err) = docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
            if code != 0 && !err.contains("already part of a swarm") {
                return Err(format!("docker swarm init failed: {err}"));
            }
        }
        match state().as_str() {
            "active true" => Ok(()),
            other => Err(format!(
                "the Docker engine is not a Swarm manager (Swarm state and control: {other})"
            )),
        }
    });
    match ready {
        Ok(()) => Some(registry),
        Err(e) => {
            skip(e);
            None
        }
    }
}

/// A docker lab on the `swarm` runtime, or `None` (skip printed) without a Swarm manager.
pub fn swarm_lab_with(tweak: impl FnOnce(&mut DockerSettings)) -> Option<DockerLab> {
    swarm_ready()?;
    docker_lab_with(|s| {
        s.runtime = "swarm".into();
        tweak(s);
    })
}

/// No file of the lab's state dir holds `value`, and neither does what `status` and `history`
/// print.
pub fn assert_secret_kept_nowhere(lab: &DockerLab, value: &str) {
    for f in files_under(&lab.state_dir()) {
        let bytes = fs::read(&f).unwrap_or_default();
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "{} holds the secret",
            f.display()
        );
    }
    for cmd in [
        vec!["status", "--json"],
        vec!["history", "staging", "--json"],
    ] {
        let out = lab.run(&cmd).expect(0);
        assert!(
            !out.stdout.contains(value) && !out.stderr.contains(value),
            "{out:?}"
        );
    }
}

/// Returns from the test when the expression is `None` (a skip has been printed).
#[macro_export]
macro_rules! docker_or_skip {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return,
        }
    };
}
