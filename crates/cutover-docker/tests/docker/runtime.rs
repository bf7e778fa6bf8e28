//! DockerRuntime against the real engine: start, health through the published port, secrets
//! only in the container, fast stop, re-adoption by labels, crash reporting, logs, volumes.

use std::time::{Duration, Instant};

use cutover_docker::{DockerRuntime, Engine};
use cutover_runtime::{InstanceState, Runtime, RuntimeError};

use crate::require;
use crate::support::*;

/// A runtime whose containers carry the test's cleanup label, and a local image of the app.
pub async fn setup(engine: &Engine, test: &str) -> (DockerRuntime, Cleanup, String) {
    let t = token(test);
    let mut clean = Cleanup::new(engine, &t);
    let image = format!("cutover-test-{t}:v1");
    clean.images.push(image.clone());
    build_app(engine, &t, std::slice::from_ref(&image)).await;
    let rt = DockerRuntime::new(engine.clone(), None).with_label(TEST_LABEL, &t);
    (rt, clean, image)
}

pub async fn start_health_secret_stop(engine: Engine) {
    let (rt, clean, image) = setup(&engine, "start-stop").await;
    let id = format!("{}-1", clean.token);
    let s = spec(
        &id,
        "tasks-app",
        &image,
        &[("APP_VERSION", "abc123"), ("API_TOKEN", "s3cret-value-42")],
    );
    let t0 = Instant::now();
    let info = rt.start(s).await.unwrap();
    let start_time = t0.elapsed();
    assert_eq!(info.id, id);
    assert_eq!(info.state, InstanceState::Running);
    let port = info.port;
    assert_ne!(port, 0, "the runtime picked a host port");
    assert_eq!(info.address.to_string(), format!("127.0.0.1:{port}"));
    assert_eq!(info.release, 7);
    assert_eq!(info.version, "abc123");
    assert!(info.pid.is_some());
    assert_eq!(info.restarts, 0);
    assert!(info.exits.is_empty(), "{:?}", info.exits);
    assert!(info.log_file.is_none(), "the engine keeps the output");
    assert!(info.supervisor_pid.is_none(), "the engine supervises");

    let (status, body, ready) = wait_health(&info.address.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("abc123"), "{body}");
    eprintln!(
        "TIMING {} start {start_time:?}, healthy after {ready:?}",
        engine.kind
    );

    // The secret is in the container's env, not in the image's config.
    let img = engine.docker().inspect_image(&image).await.unwrap();
    let image_env = img.config.and_then(|c| c.env).unwrap_or_default();
    assert!(
        !image_env.iter().any(|e| e.contains("s3cret")),
        "{image_env:?}"
    );
    let c = engine
        .docker()
        .inspect_container(&DockerRuntime::container_name(&id), None)
        .await
        .unwrap();
    let container_env = c.config.clone().and_then(|c| c.env).unwrap_or_default();
    assert!(
        container_env.contains(&"API_TOKEN=s3cret-value-42".to_string()),
        "{container_env:?}"
    );
    let labels = c.config.and_then(|c| c.labels).unwrap();
    assert_eq!(labels["cutover.app"], "tasks-app");
    assert_eq!(labels["cutover.env"], "staging");
    assert_eq!(labels["cutover.release"], "7");
    assert_eq!(labels["cutover.version"], "abc123");
    assert_eq!(labels["cutover.instance"], id);
    assert_eq!(labels["cutover.port"], port.to_string());
    assert_eq!(labels["cutover.stop_timeout_ms"], "5000");
    assert_eq!(c.host_config.and_then(|h| h.init), Some(true));

    // Starting the same id again is refused.
    let again = rt
        .start(spec(&id, "tasks-app", &image, &[]))
        .await
        .unwrap_err();
    assert!(matches!(again, RuntimeError::AlreadyRunning(_)), "{again}");

    let logs = rt.logs(&id, 10).await.unwrap();
    assert!(logs.iter().any(|l| l.contains("listening on")), "{logs:?}");
    assert!(!logs.iter().any(|l| l.contains("s3cret")), "{logs:?}");

    // Stop is fast (init forwards SIGTERM to the app) and removes the container.
    let t0 = Instant::now();
    rt.stop(&id).await.unwrap();
    let stop_time = t0.elapsed();
    eprintln!("TIMING {} stop+remove {stop_time:?}", engine.kind);
    assert!(
        stop_time < Duration::from_secs(3),
        "stop took {stop_time:?}"
    );
    assert!(rt.inspect(&id).await.unwrap().is_none());
    rt.stop(&id).await.unwrap(); // unknown id: fine
    assert!(matches!(
        rt.logs(&id, 5).await,
        Err(RuntimeError::NotFound(_))
    ));
    drop(clean);
}

async fn wait_health(addr: &str) -> (u16, String, Duration) {
    // docker-proxy accepts before the app listens: poll until an HTTP answer comes.
    wait_http(addr, "/health", Duration::from_secs(20)).await
}

#[tokio::test]
async fn start_health_secrets_and_a_fast_stop() {
    let engine = require!(engine().await);
    start_health_secret_stop(engine).await;
}

pub async fn readoption_by_labels(engine: Engine) {
    let (rt, clean, image) = setup(&engine, "readopt").await;
    let a = format!("{}-a", clean.token);
    let b = format!("{}-b", clean.token);
    let app_a = format!("app-{}", clean.token);
    let app_b = format!("other-{}", clean.token);
    let pa = rt
        .start(spec(&a, &app_a, &image, &[("APP_VERSION", "va")]))
        .await
        .unwrap()
        .port;
    rt.start(spec(&b, &app_b, &image, &[("APP_VERSION", "vb")]))
        .await
        .unwrap();

    // A fresh runtime (a restarted server) finds them from their labels alone.
    let fresh = DockerRuntime::new(engine.clone(), Some(app_a.clone()));
    let found = fresh.list().await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].id, a);
    assert_eq!(found[0].app, app_a);
    assert_eq!(found[0].version, "va");
    assert_eq!(found[0].port, pa);
    assert_eq!(found[0].state, InstanceState::Running);
    let all = DockerRuntime::new(engine.clone(), None)
        .list()
        .await
        .unwrap();
    assert!(all.iter().any(|i| i.id == a) && all.iter().any(|i| i.id == b));
    let (status, body, _) = wait_health(&found[0].address.to_string()).await;
    assert_eq!(status, 200);
    assert!(body.contains("va"));

    // The fresh runtime can stop what it adopted; list then no longer shows it.
    fresh.stop(&a).await.unwrap();
    assert!(fresh.list().await.unwrap().is_empty());
    rt.stop(&b).await.unwrap();
    drop(clean);
}

#[tokio::test]
async fn a_fresh_runtime_readopts_running_containers_by_label() {
    let engine = require!(engine().await);
    readoption_by_labels(engine).await;
}

pub async fn broken_and_crashing(engine: Engine) {
    let (rt, clean, image) = setup(&engine, "broken").await;
    // BREAK=1: starts, answers 500.
    let broken = format!("{}-b", clean.token);
    let info = rt
        .start(spec(&broken, "tasks-app", &image, &[("BREAK", "1")]))
        .await
        .unwrap();
    let (status, body, _) = wait_health(&info.address.to_string()).await;
    assert_eq!(status, 500, "{body}");

    // Exits at once (a bad PORT): start is Ok, inspect tells; the engine restarts it.
    let crash = format!("{}-c", clean.token);
    let mut bad_port = spec(&crash, "tasks-app", &image, &[("PORT", "notaport")]);
    // The runtime gives the port under port_env: put it elsewhere so PORT stays broken.
    bad_port.port_env = "CUTOVER_TEST_PORT".into();
    let info = rt.start(bad_port).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let seen = loop {
        let now = rt.inspect(&crash).await.unwrap().expect("still there");
        if (now.restarts > info.restarts || now.state != InstanceState::Running)
            && !now.exits.is_empty()
        {
            break now;
        }
        assert!(Instant::now() < deadline, "crash never reported: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        matches!(
            seen.state,
            InstanceState::Restarting | InstanceState::Stopped
        ) || seen.restarts > 0,
        "{seen:?}"
    );
    let status = &seen.exits.last().unwrap().status;
    if seen.state == InstanceState::Running {
        // Caught between two restarts: the engine reset the exit code.
        assert!(status.contains("restarted"), "{seen:?}");
    } else {
        assert_eq!(status, "exit status 2", "{seen:?}");
    }
    let logs = rt.logs(&crash, 5).await.unwrap();
    assert!(
        logs.iter().any(|l| l.contains("notaport")),
        "the last log lines say why: {logs:?}"
    );
    // list() shows it while the engine keeps restarting it; stop still works.
    rt.stop(&crash).await.unwrap();
    rt.stop(&broken).await.unwrap();
    drop(clean);
}

#[tokio::test]
async fn break_gives_500_and_an_exit_at_once_is_reported() {
    let engine = require!(engine().await);
    broken_and_crashing(engine).await;
}

pub async fn logs_volumes_and_bad_input(engine: Engine) {
    let (rt, mut clean, image) = setup(&engine, "logs-vol").await;
    let volume = format!("cutover-test-{}", clean.token);
    clean.volumes.push(volume.clone());
    let id1 = format!("{}-1", clean.token);
    let mut s = spec(&id1, "tasks-app", &image, &[("CUTOVER_DATA_DIR", "/data")]);
    s.placement.volumes = vec![format!("{volume}:/data")];
    let info = rt.start(s.clone()).await.unwrap();
    let addr = info.address.to_string();
    wait_health(&addr).await;
    let a = addr.clone();
    let (status, body) = tokio::task::spawn_blocking(move || {
        http_request(&a, "POST", "/tasks", Some(r#"{"title":"kept"}"#))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(status, 201, "{body}");
    for _ in 0..3 {
        let a = addr.clone();
        tokio::task::spawn_blocking(move || http_get(&a, "/health"))
            .await
            .unwrap()
            .unwrap();
    }
    // Tail: exactly n lines, the last ones.
    // Engines write the log asynchronously: wait for all 6 lines (listening, GET, POST, 3 GETs).
    let deadline = Instant::now() + Duration::from_secs(10);
    let all = loop {
        let all = rt.logs(&id1, 1000).await.unwrap();
        if all.len() >= 6 || Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let two = rt.logs(&id1, 2).await.unwrap();
    assert_eq!(two.len(), 2, "{all:?}");
    assert_eq!(two[..], all[all.len() - 2..], "{all:?}");

    // (A taken host port cannot be asked for any more: the runtime picks a free one itself.)

    // No image / no container port / a host path as volume / an image the engine lacks.
    let mut bad = spec("x-1", "a", &image, &[]);
    bad.placement.workload = cutover_runtime::Workload::Bundle { dir: "/".into() };
    let e = rt.start(bad).await.unwrap_err().to_string();
    assert!(e.contains("has no image"), "{e}");
    let mut bad = spec("x-1", "a", &image, &[]);
    bad.app_port = None;
    let e = rt.start(bad).await.unwrap_err().to_string();
    assert!(e.contains("no container port"), "{e}");
    let mut bad = spec("x-1", "a", &image, &[]);
    bad.placement.volumes = vec!["/etc:/data".into()];
    let e = rt.start(bad).await.unwrap_err().to_string();
    assert!(e.contains("/etc:/data"), "{e}");
    let e = rt
        .start(spec(
            &format!("{}-y", clean.token),
            "a",
            "cutover-test-no-such-image:v0",
            &[],
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cutover-test-no-such-image:v0"), "{e}");

    // Stop keeps the named volume: a next release sees the data.
    rt.stop(&id1).await.unwrap();
    let id2 = format!("{}-2", clean.token);
    let mut s2 = s;
    s2.id = id2.clone();
    let info = rt.start(s2).await.unwrap();
    let addr = info.address.to_string();
    wait_health(&addr).await;
    let (_, tasks, _) = wait_http(&addr, "/tasks", Duration::from_secs(5)).await;
    assert!(tasks.contains("kept"), "{tasks}");
    rt.stop(&id2).await.unwrap();
    drop(clean);
}

#[tokio::test]
async fn logs_tail_volumes_survive_and_bad_input_is_refused() {
    let engine = require!(engine().await);
    logs_volumes_and_bad_input(engine).await;
}
