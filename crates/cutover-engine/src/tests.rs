//! The engine against fakes of the world, to check its invariant under any sequence of
//! deploys, failing deploys, rollbacks and monitor windows:
//! *at every moment, at least one healthy version serves the environment once one has ever
//! been live.* The fakes check it at every switch of traffic and every stop of an instance,
//! not only between operations.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::Utc;
use cutover_health::{HttpCheck, ProbeFailure};
use cutover_ledger::{Ledger, ReleaseState};
use cutover_runtime::{
    InstanceInfo, InstanceSpec, InstanceState, PlaceRequest, Placement, Runtime, RuntimeError,
    Workload,
};
use proptest::prelude::*;

use super::*;

/// The world the fakes share: instances (healthy or not) and where traffic goes.
#[derive(Default)]
struct World {
    instances: HashMap<String, (InstanceInfo, bool)>,
    upstreams: HashMap<String, Vec<SocketAddr>>,
    ever_live: bool,
    /// The edge refuses every switch (its admin socket is broken, say).
    refuse_switches: bool,
    violations: Vec<String>,
}

impl World {
    fn healthy(&self, addr: SocketAddr) -> bool {
        self.instances
            .values()
            .any(|(i, healthy)| i.address == addr && *healthy)
    }

    fn check_serving(&mut self, env: &str, when: &str) {
        if !self.ever_live {
            return;
        }
        let ups = self.upstreams.get(env).cloned().unwrap_or_default();
        if ups.is_empty() || !ups.iter().any(|a| self.healthy(*a)) {
            self.violations.push(format!(
                "{when}: no healthy instance serves {env} (upstreams {ups:?})"
            ));
        }
    }
}

type Shared = Arc<Mutex<World>>;

struct FakeRuntime(Shared);
struct FakeEdge(Shared);
struct FakeProber(Shared);

impl Runtime for FakeRuntime {
    async fn identify(&self, req: &PlaceRequest<'_>) -> Result<String, RuntimeError> {
        Ok(req.artifact.digest.clone())
    }

    async fn place(&self, _req: &PlaceRequest<'_>) -> Result<Placement, RuntimeError> {
        Ok(Placement {
            workload: Workload::Bundle {
                dir: PathBuf::from("/nowhere"),
            },
            data_dir: None,
            volumes: Vec::new(),
            constraints: Vec::new(),
        })
    }

    async fn start(&self, spec: InstanceSpec) -> Result<InstanceInfo, RuntimeError> {
        let healthy = spec.vars.get("BREAK").map(String::as_str) != Some("1");
        let port = cutover_runtime::free_port().unwrap();
        let info = InstanceInfo {
            id: spec.id.clone(),
            app: spec.app,
            env: spec.env,
            release: spec.release,
            version: spec.version,
            port,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            supervisor_pid: Some(1),
            pid: Some(1),
            state: InstanceState::Running,
            started_at: Utc::now(),
            restarts: 0,
            exits: Vec::new(),
            log_file: None,
            node: None,
        };
        self.0
            .lock()
            .unwrap()
            .instances
            .insert(spec.id, (info.clone(), healthy));
        Ok(info)
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let mut world = self.0.lock().unwrap();
        if let Some((info, _)) = world.instances.remove(id) {
            let env = info.env.clone();
            world.check_serving(&env, &format!("after stopping {id}"));
        }
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<Option<InstanceInfo>, RuntimeError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .instances
            .get(id)
            .map(|(i, _)| i.clone()))
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, RuntimeError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .instances
            .values()
            .map(|(i, _)| i.clone())
            .collect())
    }

    async fn logs(&self, _id: &str, _lines: usize) -> Result<Vec<String>, RuntimeError> {
        Ok(vec!["fake log line".into()])
    }
}

impl Edge for FakeEdge {
    async fn ensure(&self, _env: &str, _site: &crate::Site) -> Result<(), crate::EdgeRefusal> {
        Ok(())
    }

    async fn switch(
        &self,
        env: &str,
        _release: i64,
        instances: &[InstanceInfo],
        _site: &crate::Site,
    ) -> Result<(), String> {
        let upstreams: Vec<SocketAddr> = instances.iter().map(|i| i.address).collect();
        let upstreams = &upstreams[..];
        let mut world = self.0.lock().unwrap();
        if world.refuse_switches {
            return Err("the admin socket refused".into());
        }
        if let Some(bad) = upstreams.iter().find(|a| !world.healthy(**a)) {
            world.violations.push(format!(
                "switched {env} to {bad}, which is not a healthy instance"
            ));
        }
        world.upstreams.insert(env.to_string(), upstreams.to_vec());
        world.ever_live = true;
        Ok(())
    }

    async fn drain(&self, _env: &str, _upstreams: &[SocketAddr]) -> Result<bool, String> {
        Ok(true)
    }

    async fn hold(
        &self,
        _env: &str,
        _hold: Option<cutover_proxy::protocol::Hold>,
    ) -> Result<(), String> {
        Ok(())
    }

    async fn upstreams(&self, env: &str) -> Option<Vec<SocketAddr>> {
        Some(
            self.0
                .lock()
                .unwrap()
                .upstreams
                .get(env)
                .cloned()
                .unwrap_or_default(),
        )
    }

    async fn stop(&self, _env: &str) {}
}

impl Prober for FakeProber {
    async fn probe(&self, addr: SocketAddr, _check: &HttpCheck) -> Result<(), ProbeFailure> {
        if self.0.lock().unwrap().healthy(addr) {
            Ok(())
        } else {
            Err(ProbeFailure {
                message: "GET /health → 500".into(),
                answered: true,
            })
        }
    }
}

const CONFIG: &str = r#"
[app]
name = "app"
[build]
files = ["app"]
[run]
command = ["./app"]
[health]
interval = "2ms"
deadline = "200ms"
monitor = "MONITOR"
healthy_threshold = 1
unhealthy_threshold = 1
[environments.staging]
listen = "127.0.0.1:1"
[environments.after-staging]
listen = "127.0.0.1:2"
requires = ["staging"]
[environments.far]
listen = "127.0.0.1:3"
server = "https://far.example:9871"
[environments.after-far]
listen = "127.0.0.1:4"
requires = ["far"]
"#;

/// Two built versions in an artifact store, made once from a real git repository.
fn template() -> &'static (PathBuf, Vec<String>) {
    static TEMPLATE: OnceLock<(PathBuf, Vec<String>)> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cutover-engine-tests-{}", std::process::id()));
        let repo = dir.join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .current_dir(&repo)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        git(&["init", "-q"]);
        let store = cutover_artifact::ArtifactStore::open(&dir.join("artifacts")).unwrap();
        let mut versions = Vec::new();
        for (n, monitor) in ["300ms", "0s"].iter().enumerate() {
            std::fs::write(repo.join("app"), format!("version {n}")).unwrap();
            std::fs::write(
                repo.join("cutover.toml"),
                CONFIG.replace("MONITOR", monitor),
            )
            .unwrap();
            git(&["add", "-A"]);
            git(&["commit", "-q", "-m", &format!("v{n}")]);
            let r = cutover_git::Repo::discover(&repo).unwrap();
            let req = cutover_artifact::BuildRequest {
                repo: &r,
                store: &store,
                work_dir: &dir.join("build"),
                rev: "HEAD",
                allow_dirty: false,
                image_builder: None,
            };
            versions.push(cutover_artifact::build(req, &mut |_| {}).unwrap().version);
        }
        (dir, versions)
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

type TestEngine = Engine<FakeRuntime, FakeEdge, FakeProber>;

fn engine() -> (tempfile::TempDir, TestEngine, Shared, Vec<String>) {
    let (template_dir, versions) = template();
    let state = tempfile::tempdir().unwrap();
    copy_dir(
        &template_dir.join("artifacts"),
        &state.path().join("artifacts"),
    );
    let world: Shared = Arc::default();
    let ledger = Ledger::open(&state.path().join("ledger.db")).unwrap();
    let options = EngineOptions {
        state_dir: state.path().to_path_buf(),
        repo_root: state.path().to_path_buf(),
    };
    let engine = Engine::new(
        options,
        ledger,
        FakeRuntime(world.clone()),
        FakeEdge(world.clone()),
        FakeProber(world.clone()),
    )
    .unwrap();
    (state, engine, world, versions.clone())
}

#[derive(Debug, Clone)]
enum Op {
    Deploy { version: usize, broken: bool },
    Rollback,
    WaitMonitor,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, any::<bool>()).prop_map(|(version, broken)| Op::Deploy { version, broken }),
        2 => Just(Op::Rollback),
        1 => Just(Op::WaitMonitor),
    ]
}

async fn apply(engine: &TestEngine, versions: &[String], op: &Op) -> Outcome {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    match op {
        Op::Deploy { version, broken } => {
            let mut overrides = BTreeMap::new();
            if *broken {
                overrides.insert("BREAK".to_string(), "1".to_string());
            }
            let req = DeployRequest {
                overrides,
                requested_by: "prop".into(),
                ..request("staging", &versions[*version])
            };
            engine.deploy(req, &tx).await
        }
        Op::Rollback => {
            let req = RollbackRequest {
                env: "staging".into(),
                to: None,
                secrets: BTreeMap::new(),
                requested_by: "prop".into(),
                queue: false,
                artifact_login: None,
            };
            engine.rollback(req, &tx).await
        }
        Op::WaitMonitor => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Outcome::done(0, "waited")
        }
    }
}

fn run_sequence(ops: &[Op]) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (_state, engine, world, versions) = engine();
        for op in ops {
            let outcome = apply(&engine, &versions, op).await;
            // Exit codes stay in the documented set and a failure never leaves nothing.
            prop_assert!(
                [0, 1, 3].contains(&outcome.exit_code),
                "{op:?} → {outcome:?}"
            );
            let mut w = world.lock().unwrap();
            w.check_serving("staging", &format!("after {op:?}"));
            prop_assert!(w.violations.is_empty(), "{:?}", w.violations);
            let live = engine.with_ledger(|l| l.live("staging")).unwrap();
            if w.ever_live {
                let live = live.expect("a live release in the ledger once one was live");
                let serving: Vec<_> = w.upstreams["staging"].clone();
                let versions_serving: Vec<_> = w
                    .instances
                    .values()
                    .filter(|(i, _)| serving.contains(&i.address))
                    .map(|(i, _)| i.version.clone())
                    .collect();
                prop_assert!(
                    versions_serving.iter().all(|v| *v == live.version),
                    "ledger says {} is live, proxy serves {versions_serving:?}",
                    live.version
                );
            }
            let stuck = engine.with_ledger(|l| l.in_flight()).unwrap();
            prop_assert!(stuck.is_empty(), "releases left in flight: {stuck:?}");
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn a_healthy_version_always_serves_once_one_was_live(ops in proptest::collection::vec(op(), 1..8)) {
        run_sequence(&ops)?;
    }
}

#[test]
fn a_failing_deploy_keeps_the_known_good_and_marks_itself_rolled_back() {
    run_sequence(&[
        Op::Deploy {
            version: 0,
            broken: false,
        },
        Op::Deploy {
            version: 1,
            broken: true,
        },
    ])
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_rollback_adds_no_release() {
    let (_state, engine, world, versions) = engine();
    assert_eq!(
        apply(
            &engine,
            &versions,
            &Op::Deploy {
                version: 1,
                broken: false
            }
        )
        .await
        .exit_code,
        0
    );
    assert_eq!(
        apply(
            &engine,
            &versions,
            &Op::Deploy {
                version: 0,
                broken: false
            }
        )
        .await
        .exit_code,
        0
    );
    // Version 0 has a 300 ms monitor window: make its instance unwell inside it.
    let live = engine.with_ledger(|l| l.live("staging")).unwrap().unwrap();
    {
        let mut w = world.lock().unwrap();
        for (info, healthy) in w.instances.values_mut() {
            if info.release == live.id {
                *healthy = false;
            }
        }
    }
    let outcome = engine.wait_monitor(live.id).await;
    assert_eq!(outcome.exit_code, 3, "{outcome:?}");
    let history = engine.with_ledger(|l| l.history("staging", 10)).unwrap();
    assert_eq!(history.len(), 2, "no release added");
    assert_eq!(history[0].state, ReleaseState::RolledBack);
    assert_eq!(history[1].state, ReleaseState::Live);
    assert!(world.lock().unwrap().violations.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_deploy_to_a_busy_environment_is_refused_naming_the_holder() {
    let (_state, engine, _world, versions) = engine();
    let guard = engine
        .lock_env("staging", false, &tokio::sync::mpsc::unbounded_channel().0)
        .await
        .unwrap();
    let _holding = engine.hold("staging", 42, "being deployed");
    let outcome = apply(
        &engine,
        &versions,
        &Op::Deploy {
            version: 0,
            broken: false,
        },
    )
    .await;
    assert_eq!(outcome.exit_code, 1);
    assert!(
        outcome.message.contains("release 42"),
        "{}",
        outcome.message
    );
    drop(guard);
}

/// Regression (restore without revert): an automatic rollback whose switch the edge refuses
/// puts the ledger back — the release that serves stays live, the target it could not restore
/// is not marked live — instead of leaving the ledger saying something that does not serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_reverts_a_failed_switch() {
    let (_state, engine, world, versions) = engine();
    for version in [1, 0] {
        let op = Op::Deploy {
            version,
            broken: false,
        };
        assert_eq!(apply(&engine, &versions, &op).await.exit_code, 0);
    }
    let live = engine.with_ledger(|l| l.live("staging")).unwrap().unwrap();
    let before = engine.with_ledger(|l| l.history("staging", 10)).unwrap();
    {
        let mut w = world.lock().unwrap();
        w.refuse_switches = true;
        for (info, healthy) in w.instances.values_mut() {
            if info.release == live.id {
                *healthy = false;
            }
        }
    }
    let outcome = engine.wait_monitor(live.id).await;
    assert_eq!(outcome.exit_code, 4, "{outcome:?}");
    let history = engine.with_ledger(|l| l.history("staging", 10)).unwrap();
    let states: Vec<_> = history.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        vec![ReleaseState::Live, ReleaseState::Superseded],
        "the serving release stays live and the target stays superseded: {history:#?}"
    );
    assert_eq!(
        engine
            .with_ledger(|l| l.live("staging"))
            .unwrap()
            .map(|r| r.id),
        Some(live.id)
    );
    assert_eq!(before.len(), history.len(), "no release added");
}

/// A deploy whose switch the edge refuses: the release that served is live again and the new
/// one is rolled back, written so that the ledger never says two releases are live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_switch_of_a_deploy_leaves_one_release_live() {
    let (_state, engine, world, versions) = engine();
    let first = Op::Deploy {
        version: 0,
        broken: false,
    };
    assert_eq!(apply(&engine, &versions, &first).await.exit_code, 0);
    let live = engine.with_ledger(|l| l.live("staging")).unwrap().unwrap();
    world.lock().unwrap().refuse_switches = true;
    let second = Op::Deploy {
        version: 1,
        broken: false,
    };
    let outcome = apply(&engine, &versions, &second).await;
    assert_eq!(outcome.exit_code, 3, "{outcome:?}");
    let history = engine.with_ledger(|l| l.history("staging", 10)).unwrap();
    let states: Vec<_> = history.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        vec![ReleaseState::RolledBack, ReleaseState::Live],
        "{history:#?}"
    );
    assert_eq!(history[1].id, live.id);
    let events = engine.with_ledger(|l| l.events(history[0].id)).unwrap();
    assert!(
        events.iter().any(|e| e.message.contains("not cut over")),
        "{events:#?}"
    );
}

fn request(env: &str, version: &str) -> DeployRequest {
    DeployRequest {
        env: env.into(),
        app: "app".into(),
        version: version.into(),
        overrides: BTreeMap::new(),
        secrets: BTreeMap::new(),
        requested_by: "ana".into(),
        queue: false,
        artifact_login: None,
        trigger: "cli".into(),
        author: None,
        skip_checks: false,
        passed_elsewhere: Vec::new(),
        promoted_from: None,
    }
}

/// `requires` relayed by a caller from another server counts only for an environment that the
/// committed config puts on that server: one of this server's is judged by this ledger alone,
/// whatever a caller claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_requires_counts_only_for_an_environment_on_another_server() {
    let (_state, engine, _world, versions) = engine();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let far = "https://far.example:9871".to_string();
    let claim = |env: &str, server: &str| vec![(env.to_string(), server.to_string())];

    let mut req = request("after-staging", &versions[0]);
    req.passed_elsewhere = claim("staging", &far);
    let outcome = engine.deploy(req, &tx).await;
    assert_eq!(outcome.exit_code, 1, "{outcome:?}");
    assert!(
        outcome.message.contains("has not passed staging"),
        "{outcome:?}"
    );

    let mut req = request("after-far", &versions[0]);
    req.passed_elsewhere = claim("far", "https://elsewhere.example:9871");
    let outcome = engine.deploy(req, &tx).await;
    assert_eq!(
        outcome.exit_code, 1,
        "another server than far's: {outcome:?}"
    );
    assert!(engine
        .with_ledger(|l| l.live("after-far"))
        .unwrap()
        .is_none());

    let mut req = request("after-far", &versions[0]);
    req.passed_elsewhere = claim("far", &far);
    let outcome = engine.deploy(req, &tx).await;
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    let id = outcome.release.unwrap();
    let events = engine.with_ledger(|l| l.events(id)).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "requires" && e.message.contains(&far)),
        "{events:?}"
    );
}

/// A promotion from another server runs exactly the digest live there, or nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_from_another_server_runs_its_digest_or_nothing() {
    let (_state, engine, _world, versions) = engine();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let from = |digest: &str| cutover_ledger::PromotedFrom {
        release: 7,
        env: "staging on https://a.example:9871".into(),
        digest: digest.into(),
    };
    let mut req = request("staging", &versions[0]);
    req.promoted_from = Some(from(&format!("sha256:{}", "0".repeat(64))));
    let outcome = engine.deploy(req, &tx).await;
    assert_eq!(outcome.exit_code, 1, "{outcome:?}");
    assert!(outcome.message.contains("one digest"), "{outcome:?}");
    assert!(engine
        .with_ledger(|l| l.history("staging", 10))
        .unwrap()
        .is_empty());

    let digest = engine
        .inner
        .store
        .get("app", &versions[0])
        .unwrap()
        .unwrap()
        .digest;
    let mut req = request("staging", &versions[0]);
    req.promoted_from = Some(from(&digest));
    let outcome = engine.deploy(req, &tx).await;
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    let release = engine
        .with_ledger(|l| l.get(outcome.release.unwrap()))
        .unwrap();
    assert_eq!(release.kind, cutover_ledger::ReleaseKind::Promote);
    let promoted = release.promoted_from.expect("promoted_from");
    assert_eq!(promoted.release, 7);
    assert_eq!(promoted.env, "staging on https://a.example:9871");
}
