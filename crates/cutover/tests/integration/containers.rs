//! The container path end to end, on a real Docker engine and a real registry: build, publish,
//! deploy by digest, break, roll back by itself and by hand; re-adoption after a killed server;
//! secrets never in the image; a tag moved under us; prune keeping the way back; bad input.
//!
//! Without an engine or `docker-registry` each test prints `SKIPPED: …` and passes, unless
//! `CUTOVER_REQUIRE_DOCKER=1`.

use std::time::Duration;

use crate::container_support::*;
use crate::docker_or_skip;
use crate::support::*;

/// The serving container of `version` in `env`, from `status --json`: (instance id, the whole
/// instance document).
fn serving_instance(lab: &DockerLab, env: &str, version: &str) -> (String, serde_json::Value) {
    let e = lab.env_status(env);
    let i = e["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("no instances[]: {e:#}"))
        .iter()
        .find(|i| i["version"] == version && i["role"] == "serving")
        .cloned()
        .unwrap_or_else(|| panic!("no serving instance of {version} in {env}: {e:#}"));
    (i["id"].as_str().expect("instance id").to_string(), i)
}

#[test]
fn containers_build_publish_deploy_break_and_roll_back() {
    let lab = docker_or_skip!(docker_lab_with(|s| s.monitor = "1s".into()));
    let v1 = lab.head();

    let built = lab.run(&["build"]).expect(0);
    assert!(
        built.stdout.contains(&lab.tag(&v1)),
        "build prints the image ref {}: {built:?}",
        lab.tag(&v1)
    );
    assert!(lab.has_image(&lab.tag(&v1)));

    let published = lab.run(&["publish"]).expect(0);
    let line = published
        .stdout
        .lines()
        .find(|l| l.starts_with(&lab.tag(&v1)))
        .unwrap_or_else(|| panic!("publish prints repo:sha digest: {published:?}"));
    let digest = line.split_whitespace().nth(1).unwrap_or("").to_string();
    assert!(digest.starts_with("sha256:"), "{published:?}");
    assert_eq!(
        lab.registry_digest(&v1).as_deref(),
        Some(digest.as_str()),
        "the registry serves the published manifest at the same digest"
    );

    lab.run(&["deploy", "staging"]).expect(0);
    lab.assert_serving(&v1);
    let names = lab.containers();
    assert_eq!(names.len(), 1, "one container: {names:?}");
    assert!(names[0].starts_with("cutover-"), "{names:?}");
    let c = lab.inspect(&[&names[0]]);
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["cutover.app"], lab.app.as_str(), "{labels:#}");
    assert_eq!(labels["cutover.env"], "staging", "{labels:#}");
    assert_eq!(labels["cutover.version"], v1.as_str(), "{labels:#}");
    assert!(labels["cutover.release"].as_str().is_some(), "{labels:#}");
    assert!(
        c["Config"]["Image"]
            .as_str()
            .unwrap_or("")
            .contains(&digest),
        "the container runs the image by digest: {}",
        c["Config"]["Image"]
    );

    // A broken version: refused by the health check, v1 never stops serving.
    let v2 = lab.commit("second");
    let watch = lab.watch();
    watch.wait_for(5);
    lab.run(&["deploy", "staging", "--env", "BREAK=1"])
        .expect(3);
    watch.wait_for(5);
    let seen = watch.stop();
    let failed: Vec<_> = seen.iter().filter(|s| s.is_err()).collect();
    assert!(
        failed.is_empty(),
        "failed requests during a failed deploy: {failed:?}"
    );
    assert!(
        seen.iter().all(|s| s.as_deref() == Ok(v1.as_str())),
        "{seen:?}"
    );
    lab.assert_serving(&v1);
    let broken = &lab.history()[0];
    assert_eq!(broken["version"], v2.as_str());
    assert!(
        matches!(broken["state"].as_str(), Some("failed" | "rolled-back")),
        "{broken:#}"
    );

    // A good v2, then its container crashes inside the monitor window: back to v1 by itself.
    let mut lab = lab;
    lab.recommit(|s| s.monitor = "20s".into(), "longer monitor");
    let v3 = lab.head();
    lab.run(&["deploy", "staging"]).expect(0);
    lab.assert_serving(&v3);
    let before = lab.history().len();
    let (id, _) = serving_instance(&lab, "staging", &v3);
    let watch = lab.watch();
    docker_ok(&["kill", "--signal", "KILL", &format!("cutover-{id}")]);
    lab.wait_serving(&v1, Duration::from_secs(20));
    watch.wait_for(5);
    let seen = watch.stop();
    let first_v1 = seen
        .iter()
        .position(|s| s.as_deref() == Ok(v1.as_str()))
        .expect("v1 again");
    assert!(
        seen[first_v1..]
            .iter()
            .all(|s| s.as_deref() == Ok(v1.as_str())),
        "{:?}",
        &seen[first_v1..]
    );
    let history = eventually(
        Duration::from_secs(20),
        "the crashed release rolled-back",
        || {
            let h = lab.history();
            (h[0]["state"] == "rolled-back").then_some(h)
        },
    );
    assert_eq!(
        history.len(),
        before,
        "an automatic rollback adds no release: {history:#?}"
    );
    assert_eq!(history[0]["version"], v3.as_str());
    let _ = v2;

    // Deploy v3 again (passes its window), then roll back by hand to v1.
    lab.recommit(|s| s.monitor = "1s".into(), "short monitor");
    let v4 = lab.head();
    lab.run(&["deploy", "staging"]).expect(0);
    lab.assert_serving(&v4);
    std::thread::sleep(Duration::from_millis(1500));
    let n = lab.history().len();
    lab.run(&["rollback", "staging"]).expect(0);
    lab.assert_serving(&v1);
    let h = lab.history();
    assert_eq!(h.len(), n + 1, "a manual rollback adds a release: {h:#?}");
    assert_eq!(h[0]["version"], v1.as_str());
    let env = lab.env_status("staging");
    assert_eq!(env["live"]["version"], v1.as_str(), "{env:#}");
    let (id, _) = serving_instance(&lab, "staging", &v1);
    let running = docker_ok(&[
        "inspect",
        "-f",
        "{{.State.Running}}",
        &format!("cutover-{id}"),
    ]);
    assert_eq!(running, "true");
}

#[test]
fn containers_deploy_pulls_the_image_by_digest() {
    let lab = docker_or_skip!(docker_lab());
    let v1 = lab.head();
    let published = lab.run(&["publish"]).expect(0);
    let digest = lab.registry_digest(&v1).expect("published");
    assert!(published.stdout.contains(&digest), "{published:?}");

    // Nothing of it left on the engine: the deploy must pull it, and by digest.
    lab.remove_local_images();
    assert!(lab.local_refs().is_empty(), "{:?}", lab.local_refs());
    assert!(!lab.has_image(&lab.tag(&v1)));

    lab.run(&["deploy", "production", "--version", &v1])
        .expect(0);
    assert_eq!(lab.serving_production().as_deref(), Some(v1.as_str()));
    let by_digest = format!("{}@{digest}", lab.image);
    assert!(lab.has_image(&by_digest), "pulled {by_digest}");
    assert!(
        !lab.has_image(&lab.tag(&v1)),
        "a deploy pulls the digest, never the tag: {:?}",
        lab.local_refs()
    );
    let (id, _) = serving_instance(&lab, "production", &v1);
    let c = lab.inspect(&[&format!("cutover-{id}")]);
    assert_eq!(
        c["Config"]["Image"],
        by_digest.as_str(),
        "{:#}",
        c["Config"]
    );
    assert_eq!(c["Config"]["Labels"]["cutover.env"], "production");

    // The same version to staging: already here by digest, no pull needed, same image.
    lab.run(&["deploy", "staging", "--version", &v1]).expect(0);
    lab.assert_serving(&v1);
}

#[test]
fn containers_are_readopted_after_the_server_is_killed() {
    let lab = docker_or_skip!(docker_lab());
    let v1 = lab.head();
    lab.run(&["deploy", "staging"]).expect(0);
    lab.assert_serving(&v1);
    let (id, _) = serving_instance(&lab, "staging", &v1);
    let container = lab.inspect(&[&format!("cutover-{id}")]);
    let started = container["State"]["StartedAt"].clone();

    let pid: u32 = std::fs::read_to_string(lab.state_dir().join("server.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let watch = lab.watch();
    watch.wait_for(5);
    signal(pid, "KILL");
    eventually(Duration::from_secs(5), "the server to die", || {
        (!alive(pid)).then_some(())
    });
    watch.wait_for(30);
    let seen = watch.stop();
    let failed: Vec<_> = seen.iter().filter(|s| s.is_err()).collect();
    assert!(
        failed.is_empty(),
        "failed requests with the server dead: {failed:?}"
    );
    assert!(seen.iter().all(|s| s.as_deref() == Ok(v1.as_str())));

    // The next command starts a server, which finds the container again by its labels.
    let env = lab.env_status("staging");
    let (again, inst) = serving_instance(&lab, "staging", &v1);
    assert_eq!(again, id, "the same instance, re-adopted: {env:#}");
    assert_eq!(inst["role"], "serving");
    assert_eq!(env["live"]["version"], v1.as_str(), "{env:#}");
    let container = lab.inspect(&[&format!("cutover-{id}")]);
    assert_eq!(
        container["State"]["StartedAt"], started,
        "the container was never restarted"
    );
    assert_eq!(lab.containers().len(), 1, "{:?}", lab.containers());

    // And the re-adopted environment deploys on as usual.
    let v2 = lab.commit("second");
    lab.run(&["deploy", "staging"]).expect(0);
    lab.assert_serving(&v2);
}

#[test]
fn containers_get_secrets_at_run_time_never_in_the_image() {
    const VALUE: &str = "s3cr3t-c0ntainer-t0ken-4711";
    let lab = docker_or_skip!(docker_lab_with(|s| {
        s.extra = "[secrets]\nAPI_TOKEN = { env = \"T\" }\n".into();
    }));
    let v1 = lab.head();
    lab.run_env(&["deploy", "staging"], &[("T", VALUE)])
        .expect(0);
    lab.assert_serving(&v1);

    let (id, _) = serving_instance(&lab, "staging", &v1);
    let container = lab.inspect(&[&format!("cutover-{id}")]);
    let env: Vec<String> = serde_json::from_value(container["Config"]["Env"].clone()).unwrap();
    assert!(
        env.iter().any(|e| e == &format!("API_TOKEN={VALUE}")),
        "the container gets the secret at create time: {env:?}"
    );
    let image = container["Image"].as_str().unwrap().to_string();
    let img = lab.inspect(&["--type", "image", &image]);
    let text = img.to_string();
    assert!(!text.contains(VALUE), "the image holds the secret: {text}");
    assert!(
        !text.contains("API_TOKEN"),
        "the image names the secret: {text}"
    );
    let history = docker_ok(&["history", "--no-trunc", &image]);
    assert!(!history.contains(VALUE), "{history}");

    assert_secret_kept_nowhere(&lab, VALUE);
}

#[test]
fn containers_refuse_a_tag_moved_under_us() {
    let lab = docker_or_skip!(docker_lab());
    let v1 = lab.head();
    lab.run(&["publish"]).expect(0);
    let recorded = lab.registry_digest(&v1).expect("published");

    // Someone pushes other bytes to <repo>:<v1>.
    build_other_image(&lab, &lab.tag(&v1));
    docker_ok(&["push", &lab.tag(&v1)]);
    let moved = lab.registry_digest(&v1).expect("re-pushed");
    assert_ne!(moved, recorded);

    let run = lab
        .run(&["deploy", "production", "--version", &v1])
        .expect(1)
        .says(&[&recorded, &moved]);
    assert!(run.stderr.contains(&v1), "{run:?}");
    assert!(!run.stderr.contains("starting instance"), "{run:?}");
    // Nothing serves production; the attempt is at most recorded as `failed`.
    let production = lab.history_of("production");
    assert!(
        production.iter().all(|r| r["state"] == "failed"),
        "{production:#?}"
    );
    assert!(lab.history().is_empty());
    assert!(lab.containers().is_empty(), "{:?}", lab.containers());
    assert_eq!(lab.serving_production(), None);
}

#[test]
fn containers_prune_keeps_every_environments_way_back() {
    let lab = docker_or_skip!(docker_lab_with(|s| s.keep = 1));
    let mut versions = Vec::new();
    for (i, env) in ["production", "production", "staging", "staging", "staging"]
        .iter()
        .enumerate()
    {
        let v = if i == 0 {
            lab.head()
        } else {
            lab.commit(&format!("v{}", i + 1))
        };
        lab.run(&["deploy", env]).expect(0);
        versions.push(v);
    }
    let [v1, v2, v3, v4, v5] = <[String; 5]>::try_from(versions).unwrap();
    // Let the last monitor windows close, so that standbys are stopped.
    std::thread::sleep(Duration::from_millis(1500));
    for v in [&v1, &v2, &v3, &v4, &v5] {
        assert!(lab.has_image(&lab.tag(v)), "{v} built");
    }

    let run = lab.run(&["prune"]).expect(0);
    for v in [&v1, &v2, &v4, &v5] {
        assert!(
            lab.has_image(&lab.tag(v)),
            "prune kept {v} (a live release or its way back): {run:?}"
        );
    }
    assert!(
        !lab.has_image(&lab.tag(&v3)),
        "prune removed staging's old {v3}: {run:?}\nrefs: {:?}",
        lab.local_refs()
    );
    assert!(
        !lab.local_refs().iter().any(|r| r.contains(&v3)),
        "{:?}",
        lab.local_refs()
    );
    assert!(
        run.stdout.contains(&v3[..7]),
        "prune says what it removed: {run:?}"
    );

    // Production's way back still works, and staging's.
    lab.run(&["rollback", "production"]).expect(0);
    assert_eq!(lab.serving_production().as_deref(), Some(v1.as_str()));
    lab.run(&["rollback", "staging"]).expect(0);
    lab.assert_serving(&v4);
}

// ------------------------------------------------------------------ bad input

/// What "nothing changed" compares: both environments' releases and this lab's containers.
fn snapshot(lab: &DockerLab) -> (Vec<(i64, String, String)>, usize, Vec<String>) {
    let mut containers = lab.containers();
    containers.sort();
    (
        lab.ledger_summary(),
        lab.history_of("production").len(),
        containers,
    )
}

#[test]
fn containers_bad_config_is_refused_and_changes_nothing() {
    let mut lab = docker_or_skip!(docker_lab());
    let v1 = lab.head();
    lab.run(&["deploy", "staging"]).expect(0);
    let before = snapshot(&lab);
    let good = lab.settings.clone();

    // A misspelt runtime names the valid ones.
    lab.recommit(|s| s.runtime = "dockr".into(), "typo");
    let run = lab
        .run(&["deploy", "staging"])
        .expect(1)
        .says(&["dockr", "docker", "podman"]);
    assert!(run.stderr.contains("runtime"), "{run:?}");
    lab.git(&["reset", "-q", "--hard", &v1]);

    // An engine socket that is not there is named.
    lab.recommit(
        |s| {
            *s = good.clone();
            s.extra = "[docker]\nhost = \"unix:///nonexistent.sock\"\n".into();
        },
        "no such engine",
    );
    lab.run(&["deploy", "staging"])
        .expect(1)
        .says(&["/nonexistent.sock"]);
    lab.git(&["reset", "-q", "--hard", &v1]);
    lab.settings = good.clone();

    // A registry nobody listens on is named, on publish and on deploy.
    let closed = format!("127.0.0.1:{}", free_port());
    lab.recommit(|s| s.registry_url = Some(closed.clone()), "closed registry");
    lab.run(&["publish"]).expect(1).says(&[&closed]);
    lab.run(&["deploy", "staging"]).expect(1).says(&[&closed]);
    lab.git(&["reset", "-q", "--hard", &v1]);
    lab.settings = good.clone();

    assert_eq!(snapshot(&lab), before, "nothing changed");
    lab.assert_serving(&v1);
}

#[test]
fn containers_a_failing_dockerfile_shows_its_step() {
    let lab = docker_or_skip!(docker_lab());
    let v1 = lab.head();
    lab.run(&["deploy", "staging"]).expect(0);
    let before = snapshot(&lab);
    std::fs::write(
        lab.repo.join("Dockerfile"),
        "FROM scratch\nCOPY does-not-exist /x\n",
    )
    .unwrap();
    std::fs::write(lab.repo.join(".dockerignore"), "").unwrap();
    lab.git(&["commit", "-q", "-am", "broken dockerfile"]);
    let run = lab
        .run(&["deploy", "staging"])
        .expect(1)
        .says(&["does-not-exist"]);
    let _ = run;
    lab.run(&["build"]).expect(1).says(&["does-not-exist"]);
    assert_eq!(snapshot(&lab), before, "nothing changed");
    lab.assert_serving(&v1);
}

#[test]
fn containers_a_version_never_published_is_refused() {
    let lab = docker_or_skip!(docker_lab());
    let v1 = lab.head();
    // Never built at all.
    lab.run(&["deploy", "staging", "--version", "0123456789abcdef"])
        .expect(1)
        .says(&["0123456789abcdef", "build"]);
    // Built, never published, and the image is gone from the engine: nothing to publish.
    lab.run(&["build"]).expect(0);
    lab.remove_local_images();
    lab.run(&["deploy", "staging", "--version", &v1])
        .expect(1)
        .says(&["publish"]);
    assert!(lab.history().is_empty(), "nothing changed");
    assert!(lab.containers().is_empty(), "{:?}", lab.containers());
}

#[test]
fn containers_a_container_that_exits_at_once_is_rolled_back_with_its_logs() {
    let lab = docker_or_skip!(docker_lab());
    let v1 = lab.head();
    lab.run(&["deploy", "staging"]).expect(0);
    // An entrypoint that is not in the image: the init process cannot exec it and exits.
    std::fs::write(
        lab.repo.join("Dockerfile"),
        DOCKERFILE.replace(
            "ENTRYPOINT [\"/tasks-app\"]",
            "ENTRYPOINT [\"/no-such-app\"]",
        ),
    )
    .unwrap();
    lab.git(&["commit", "-q", "-am", "wrong entrypoint"]);
    let v2 = lab.head();
    let run = lab
        .run(&["deploy", "staging"])
        .expect(3)
        .says(&["no-such-app"]);
    let _ = run;
    lab.assert_serving(&v1);
    let h = lab.history();
    assert_eq!(h[0]["version"], v2.as_str());
    assert!(
        matches!(h[0]["state"].as_str(), Some("failed" | "rolled-back")),
        "{h:#?}"
    );
    let env = lab.env_status("staging");
    assert_eq!(env["live"]["version"], v1.as_str(), "{env:#}");
}

#[test]
fn containers_a_listen_address_in_use_is_refused() {
    let lab = docker_or_skip!(docker_lab());
    let _squatter = std::net::TcpListener::bind(lab.production).unwrap();
    let run = lab
        .run(&["deploy", "production"])
        .expect(1)
        .says(&[&lab.production.to_string()]);
    assert!(!run.stderr.contains("starting instance"), "{run:?}");
    let production = lab.history_of("production");
    assert!(
        production.iter().all(|r| r["state"] == "failed"),
        "{production:#?}"
    );
    assert_eq!(lab.serving_production(), None);
    assert!(lab.containers().is_empty(), "{:?}", lab.containers());
}
