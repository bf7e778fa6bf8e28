//! Shared test parts: the engine (or a reasoned skip), a real registry per test process, the
//! static tasks-app, test images, and a guard that removes what a test created.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cutover_docker::{build_image, BuildSpec, Engine, EngineKind};
use cutover_runtime::{InstanceSpec, Placement, Workload};

/// The label every container/volume a test creates carries (value: the test's token).
pub const TEST_LABEL: &str = "cutover.test";

/// Skips (or, with `CUTOVER_REQUIRE_DOCKER=1`, fails) the calling test.
pub fn skip(reason: &str) {
    if std::env::var("CUTOVER_REQUIRE_DOCKER").as_deref() == Ok("1") {
        panic!("CUTOVER_REQUIRE_DOCKER=1 and {reason}");
    }
    eprintln!("SKIPPED: {reason} (set CUTOVER_REQUIRE_DOCKER=1 to fail instead)");
}

/// The engine under test: `CUTOVER_TEST_ENGINE=podman` + `CUTOVER_TEST_PODMAN_HOST` selects
/// Podman; else Docker from DOCKER_HOST or the default socket.
pub async fn engine_of(kind: EngineKind, host: Option<&str>) -> Option<Engine> {
    match Engine::connect(host, kind).await {
        Ok(e) => Some(e),
        Err(e) => {
            skip(&format!("no {kind} engine: {e}"));
            None
        }
    }
}

pub async fn engine() -> Option<Engine> {
    engine_of(EngineKind::Docker, None).await
}

/// Returns from the test when the expression is `None` (a skip has been printed).
#[macro_export]
macro_rules! require {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return,
        }
    };
}

/// A unique, lower-case token for names in this test.
pub fn token(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}-{}",
        test.replace('_', "-"),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------- registry

/// Debian's `docker-registry` on a free 127.0.0.1 port, one per test process; killed when the
/// process exits (atexit: statics are never dropped).
pub struct Registry {
    pub addr: String,
}

static REGISTRY_PID: AtomicI32 = AtomicI32::new(0);
static REGISTRY_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

extern "C" fn kill_registry() {
    let pid = REGISTRY_PID.swap(0, Ordering::SeqCst);
    if pid > 0 {
        unsafe {
            libc::kill(pid, libc::SIGTERM);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    if let Ok(mut dir) = REGISTRY_DIR.lock() {
        if let Some(d) = dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

pub fn registry() -> Option<&'static Registry> {
    static REGISTRY: OnceLock<Result<Registry, String>> = OnceLock::new();
    match REGISTRY.get_or_init(start_registry) {
        Ok(r) => Some(r),
        Err(e) => {
            skip(e);
            None
        }
    }
}

pub fn registry_binary() -> Option<PathBuf> {
    let candidates = [
        std::env::var("CUTOVER_TEST_REGISTRY_BIN").ok(),
        Some("/usr/bin/docker-registry".into()),
    ];
    candidates
        .into_iter()
        .flatten()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Starts a registry serving `dir` on a free port; the caller owns the child.
pub fn spawn_registry(dir: &Path) -> Result<(Child, String), String> {
    spawn_registry_with(dir, "")
}

/// [`spawn_registry`] with more keys under `storage:` (two-space indented YAML lines).
pub fn spawn_registry_with(dir: &Path, storage_extra: &str) -> Result<(Child, String), String> {
    let bin = registry_binary().ok_or_else(|| {
        "the `docker-registry` binary is missing (apt-get install -y docker-registry)".to_string()
    })?;
    let port = cutover_runtime::free_port().map_err(|e| e.to_string())?;
    let addr = format!("127.0.0.1:{port}");
    std::fs::create_dir_all(dir.join("storage")).map_err(|e| e.to_string())?;
    let config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{storage_extra}http:\n  addr: {addr}\n",
        dir.join("storage").display()
    );
    let config_path = dir.join("config.yml");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let mut child = Command::new(&bin)
        .arg("serve")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("registry.log")).map_err(|e| e.to_string())?,
        ))
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok((200, _)) = http_get(&addr, "/v2/") {
            return Ok((child, addr));
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
            return Err(format!("docker-registry exited ({status}): {log}"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "docker-registry did not answer GET /v2/ on {addr} within 15s"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_registry() -> Result<Registry, String> {
    let dir = std::env::temp_dir().join(format!("cutover-test-registry-{}", std::process::id()));
    let (child, addr) = spawn_registry(&dir)?;
    REGISTRY_PID.store(child.id() as i32, Ordering::SeqCst);
    *REGISTRY_DIR.lock().unwrap() = Some(dir.clone());
    unsafe {
        libc::atexit(kill_registry);
    }
    std::mem::forget(child);
    Ok(Registry { addr })
}

// ---------------------------------------------------------------- tasks-app and images

/// The course's tasks-app, compiled once per test process as a static binary.
pub fn tasks_app() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tasks-app/src/main.rs");
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cutover-docker-tests");
        std::fs::create_dir_all(&out_dir).unwrap();
        let out = out_dir.join(format!("tasks-app-{}", std::process::id()));
        let status = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .args([
                "--edition",
                "2021",
                "-C",
                "target-feature=+crt-static",
                "--target",
                "x86_64-unknown-linux-gnu",
                "-O",
                "-o",
            ])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("rustc runs");
        assert!(status.success(), "compiling the static tasks-app failed");
        out
    })
}

pub const CONTAINER_PORT: u16 = 8000;

/// Writes a build context: the static tasks-app FROM scratch, with a `variant` label so two
/// variants have different bytes.
pub fn app_context(variant: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(tasks_app(), dir.path().join("tasks-app")).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            // The variant label comes first so that no two tests share a cached layer: the
            // legacy builder of Docker 20.10 fails a build whose cache parent another test's
            // cleanup just removed.
            "FROM scratch\nLABEL variant={variant}\nCOPY tasks-app /tasks-app\n\
             ENV HOST=0.0.0.0 PORT={CONTAINER_PORT}\nEXPOSE {CONTAINER_PORT}\nENTRYPOINT [\"/tasks-app\"]\n"
        ),
    )
    .unwrap();
    dir
}

/// Builds the test app as `tags`; returns (image id, build time).
pub async fn build_app(engine: &Engine, variant: &str, tags: &[String]) -> (String, Duration) {
    let ctx = app_context(variant);
    let t = Instant::now();
    let mut lines = Vec::new();
    let id = build_image(
        engine,
        BuildSpec {
            context_dir: ctx.path(),
            dockerfile: "Dockerfile",
            tags: tags.to_vec(),
        },
        &mut |l| lines.push(l),
    )
    .await
    .unwrap_or_else(|e| panic!("build failed: {e}\n{}", lines.join("\n")));
    (id, t.elapsed())
}

/// A spec of the test image; the runtime picks the host port.
pub fn spec(id: &str, app: &str, image: &str, vars: &[(&str, &str)]) -> InstanceSpec {
    let mut all: BTreeMap<String, String> = BTreeMap::new();
    all.insert("APP_VERSION".into(), "v-test".into());
    for (k, v) in vars {
        all.insert((*k).into(), (*v).into());
    }
    InstanceSpec {
        id: id.into(),
        app: app.into(),
        env: "staging".into(),
        release: 7,
        version: all["APP_VERSION"].clone(),
        kind: cutover_config::RuntimeKind::Docker,
        placement: Placement {
            workload: Workload::Image {
                reference: image.into(),
            },
            data_dir: None,
            volumes: Vec::new(),
            constraints: Vec::new(),
        },
        argv: Vec::new(),
        vars: all,
        secret_names: Vec::new(),
        port_env: "PORT".into(),
        app_port: Some(CONTAINER_PORT),
        stop_timeout: Duration::from_secs(5),
    }
}

// ---------------------------------------------------------------- http

/// A tiny HTTP/1.0 GET: (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, None)
}

pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {out:?}")))?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_string()))
}

/// Polls GET `path` until it answers (any status) or `deadline` passes.
pub async fn wait_http(addr: &str, path: &str, deadline: Duration) -> (u16, String, Duration) {
    let start = Instant::now();
    loop {
        let a = addr.to_string();
        let p = path.to_string();
        let r = tokio::task::spawn_blocking(move || http_get(&a, &p))
            .await
            .unwrap();
        if let Ok((status, body)) = r {
            return (status, body, start.elapsed());
        }
        if start.elapsed() > deadline {
            panic!("GET {path} on {addr}: no answer within {deadline:?}: {r:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- cleanup

/// Removes, on drop, the containers labelled with `token`, the listed images and volumes.
pub struct Cleanup {
    pub token: String,
    host: Option<String>,
    kind: EngineKind,
    pub images: Vec<String>,
    pub volumes: Vec<String>,
}

impl Cleanup {
    pub fn new(engine: &Engine, token: &str) -> Cleanup {
        Cleanup {
            token: token.to_string(),
            host: Some(engine.endpoint.clone()),
            kind: engine.kind,
            images: Vec::new(),
            volumes: Vec::new(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let token = self.token.clone();
        let host = self.host.clone();
        let kind = self.kind;
        let images = std::mem::take(&mut self.images);
        let volumes = std::mem::take(&mut self.volumes);
        // Drop may run inside a tokio runtime: do the async work on a thread of its own.
        let t = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use bollard::query_parameters::{
                    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
                    RemoveImageOptionsBuilder, RemoveVolumeOptionsBuilder,
                };
                let Ok(engine) = Engine::connect(host.as_deref(), kind).await else {
                    return;
                };
                let d = engine.docker();
                let filters = std::collections::HashMap::from([(
                    "label".to_string(),
                    vec![format!("{TEST_LABEL}={token}")],
                )]);
                let opts = ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build();
                if let Ok(list) = d.list_containers(Some(opts)).await {
                    for c in list {
                        if let Some(id) = c.id {
                            let o = RemoveContainerOptionsBuilder::default()
                                .force(true)
                                .v(true)
                                .build();
                            let _ = d.remove_container(&id, Some(o)).await;
                        }
                    }
                }
                for image in images {
                    let o = RemoveImageOptionsBuilder::default().force(true).build();
                    let _ = d.remove_image(&image, Some(o), None).await;
                }
                for v in volumes {
                    let o = RemoveVolumeOptionsBuilder::default().force(true).build();
                    let _ = d.remove_volume(&v, Some(o)).await;
                }
            });
        });
        let _ = t.join();
    }
}
