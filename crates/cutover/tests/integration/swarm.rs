//! The `swarm` runtime end to end on a single-node Swarm (the machine's own Docker engine, made
//! a Swarm manager when it is not one): each instance a one-replica service publishing its port
//! in host mode; deploy, health check and cut-over; a failing deploy removed whole while the
//! known-good serves; a rollback inside the monitor window that is a switch; secrets as Swarm
//! secrets; a killed task replaced by Swarm and recorded; re-adoption by a restarted server;
//! bad input.
//!
//! Without an engine, `docker-registry` or a Swarm manager each test prints `SKIPPED: …` and
//! passes, unless `CUTOVER_REQUIRE_DOCKER=1`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use crate::container_support::*;
use crate::docker_or_skip;
use crate::support::*;

/// The lab's services: name → `docker service inspect` document.
fn services(lab: &DockerLab) -> Vec<serde_json::Value> {
    let ids = docker_ok(&[
        "service",
        "ls",
        "-q",
        "--filter",
        &format!("label=cutover.app={}", lab.app),
    ]);
    // A service listed may be gone by the time it is inspected (a prune or a retire running
    // meanwhile): it is not one of the lab's services any more.
    ids.lines()
        .filter(|l| !l.is_empty())
        .filter_map(|id| match docker(&["service", "inspect", id]) {
            (0, out, _) => {
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                Some(v[0].clone())
            }
            (_, _, err) if err.contains("no such service") => None,
            (code, out, err) => panic!("docker service inspect {id} failed ({code}): {err}\n{out}"),
        })
        .collect()
}

/// The serving instance of `version` in `env` from `status --json`.
fn serving(lab: &DockerLab, env: &str, version: &str) -> serde_json::Value {
    let e = lab.env_status(env);
    e["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("no instances[]: {e:#}"))
        .iter()
        .find(|i| i["version"] == version && i["role"] == "serving")
        .cloned()
        .unwrap_or_else(|| panic!("no serving instance of {version} in {env}: {e:#}"))
}

fn id_of(instance: &serde_json::Value) -> String {
    instance["id"].as_str().expect("instance id").to_string()
}

/// The id of the service of instance `id`.
fn service_id(id: &str) -> String {
    docker_ok(&[
        "service",
        "inspect",
        "-f",
        "{{.ID}}",
        &format!("cutover-{id}"),
    ])
}

#[test]
fn swarm_deploys_serves_secrets_fails_whole_and_rolls_back_by_switch() {
    const VALUE: &str = "sw4rm-s3cr3t-gr33ting-0815";
    let lab = docker_or_skip!(swarm_lab_with(|s| {
        s.monitor = "1s".into();
        s.extra = "[secrets]\nGREETING = { env = \"T\" }\n".into();
    }));
    let v1 = lab.head();
    let deployed = lab
        .run_env(&["deploy", "staging"], &[("T", VALUE)])
        .expect(0);
    lab.assert_serving(&v1);
    assert!(
        deployed.stderr.contains("live"),
        "the deploy says what went live: {deployed:?}"
    );

    // One service of one replica, labelled, running the image by digest, published in host
    // mode on a port Swarm picked, which is where the edge routes.
    let all = services(&lab);
    assert_eq!(all.len(), 1, "{all:#?}");
    let svc = &all[0];
    let labels = &svc["Spec"]["Labels"];
    assert_eq!(labels["cutover.app"], lab.app.as_str(), "{labels:#}");
    assert_eq!(labels["cutover.env"], "staging", "{labels:#}");
    assert_eq!(labels["cutover.version"], v1.as_str(), "{labels:#}");
    assert!(labels["cutover.release"].is_string(), "{labels:#}");
    assert!(labels["cutover.scope"].is_string(), "{labels:#}");
    assert_eq!(svc["Spec"]["Mode"]["Replicated"]["Replicas"], 1);
    let digest = lab.registry_digest(&v1).expect("published");
    let image = svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        .as_str()
        .unwrap_or("");
    assert_eq!(image, format!("{}@{digest}", lab.image), "by digest");
    let ports = &svc["Spec"]["EndpointSpec"]["Ports"][0];
    assert_eq!(ports["PublishMode"], "host", "{ports:#}");
    assert_eq!(ports["TargetPort"], 8000, "{ports:#}");
    let instance = serving(&lab, "staging", &v1);
    let id = id_of(&instance);
    assert_eq!(svc["Spec"]["Name"], format!("cutover-{id}").as_str());
    assert_eq!(labels["cutover.instance"], id.as_str(), "{labels:#}");
    assert!(
        instance["node"].is_string(),
        "status names the node: {instance:#}"
    );
    let address = instance["address"].as_str().unwrap().to_string();
    let port = address.rsplit(':').next().unwrap();
    let tasks = docker_ok(&[
        "service",
        "ps",
        "--no-trunc",
        "--format",
        "{{.Ports}}",
        &format!("cutover-{id}"),
    ]);
    assert!(
        tasks.contains(&format!(":{port}->8000/tcp")),
        "the instance's address is its task's published port: {address} vs {tasks}"
    );

    // The secret: a Swarm secret read from /run/secrets (the app got it: GET / greets with it),
    // never in the service's spec, labels, environment, or anything cutover keeps or prints.
    let (code, body) = http_get(lab.listen, "/").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains(VALUE), "the app read its secret file: {body}");
    let spec = &svc["Spec"]["TaskTemplate"]["ContainerSpec"];
    let env: Vec<String> = serde_json::from_value(spec["Env"].clone()).unwrap();
    assert!(
        env.contains(&"GREETING_FILE=/run/secrets/GREETING".to_string()),
        "{env:?}"
    );
    assert!(!env.iter().any(|e| e.starts_with("GREETING=")), "{env:?}");
    assert_eq!(spec["Secrets"][0]["File"]["Name"], "GREETING", "{spec:#}");
    let inspected = docker_ok(&["service", "inspect", &format!("cutover-{id}")]);
    assert!(!inspected.contains(VALUE), "{inspected}");
    let secret_name = spec["Secrets"][0]["SecretName"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = docker_ok(&["secret", "inspect", &secret_name]);
    assert!(!secret.contains(VALUE), "{secret}");
    assert!(
        secret.contains("\"cutover.secret\": \"GREETING\""),
        "{secret}"
    );
    assert_secret_kept_nowhere(&lab, VALUE);

    // A failing deploy: its service and secret are removed whole, v1 serves throughout, exit 3.
    let v2 = lab.commit("second");
    let watch = lab.watch();
    watch.wait_for(5);
    let failed = lab
        .run_env(&["deploy", "staging", "--env", "BREAK=1"], &[("T", VALUE)])
        .expect(3);
    watch.wait_for(5);
    let seen = watch.stop();
    assert!(
        seen.iter().all(|s| s.as_deref() == Ok(v1.as_str())),
        "every request answered by v1 during a failed deploy: {seen:?}"
    );
    assert!(failed.stderr.contains("kept serving"), "{failed:?}");
    let left = services(&lab);
    assert_eq!(left.len(), 1, "only v1's service is left: {left:#?}");
    assert_eq!(left[0]["Spec"]["Labels"]["cutover.version"], v1.as_str());
    let secrets = docker_ok(&[
        "secret",
        "ls",
        "-q",
        "--filter",
        &format!("label=cutover.app={}", lab.app),
    ]);
    assert_eq!(
        secrets.lines().count(),
        1,
        "the failed instance's secret went with it: {secrets}"
    );
    assert_eq!(lab.history()[0]["version"], v2.as_str());
    let _ = v2;

    // A good v3 with a long monitor window: v1 stays warm; a rollback inside the window is a
    // switch back to v1's very service, which never restarted.
    let mut lab = lab;
    lab.recommit(|s| s.monitor = "60s".into(), "long monitor");
    let v3 = lab.head();
    let v1_service = service_id(&id);
    lab.run_env(&["deploy", "staging"], &[("T", VALUE)])
        .expect(0);
    lab.assert_serving(&v3);
    assert_eq!(services(&lab).len(), 2, "v1 kept warm beside v3");
    let watch = lab.watch();
    watch.wait_for(5);
    let started = Instant::now();
    lab.run_env(&["rollback", "staging"], &[("T", VALUE)])
        .expect(0);
    let took = started.elapsed();
    watch.wait_for(5);
    let seen = watch.stop();
    assert!(
        seen.iter().all(|s| s.is_ok()),
        "no failed request across the rollback: {seen:?}"
    );
    lab.assert_serving(&v1);
    let back = serving(&lab, "staging", &v1);
    assert_eq!(id_of(&back), id, "the warm v1 instance serves again");
    assert_eq!(
        service_id(&id),
        v1_service,
        "the same service, not a new one"
    );
    assert_eq!(back["restarts"], 0, "{back:#}");
    eprintln!("rollback inside the monitor window took {took:?} (the whole command)");
}

#[test]
fn swarm_replaces_a_killed_task_counts_every_restart_and_a_restarted_server_readopts() {
    let lab = docker_or_skip!(swarm_lab_with(|s| s.monitor = "1s".into()));
    let v1 = lab.head();
    lab.run(&["deploy", "staging"]).expect(0);
    lab.assert_serving(&v1);
    // Past the monitor window.
    std::thread::sleep(Duration::from_millis(1500));
    let instance = serving(&lab, "staging", &v1);
    let id = id_of(&instance);
    let release = lab.history()[0]["id"].to_string();

    // Kill the task's container: Swarm starts a new task (a new port); the watcher records the
    // restart and the edge follows the task to its new address.
    let container = docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name=cutover-{id}"),
    ]);
    assert_eq!(container.lines().count(), 1, "{container}");
    docker_ok(&["kill", "--signal", "KILL", &container]);
    let after = eventually(
        Duration::from_secs(30),
        "the replaced task counted as a restart",
        || {
            let e = lab.env_status("staging");
            let i = e["instances"]
                .as_array()?
                .iter()
                .find(|i| i["id"] == id.as_str())?;
            (i["restarts"].as_u64() >= Some(1) && i["state"] == "running").then(|| i.clone())
        },
    );
    assert_eq!(id_of(&after), id, "the same instance: {after:#}");
    eventually(
        Duration::from_secs(30),
        "the restart in the timeline",
        || {
            let show = lab.run(&["show", &release, "--json"]).expect(0).stdout;
            show.contains("restarted").then_some(())
        },
    );
    lab.wait_serving(&v1, Duration::from_secs(30));

    // Past Swarm's task history limit (5 tasks a service): every replaced task is still
    // counted, and status says how the last one ended.
    for n in 2..=7u64 {
        let container = eventually(Duration::from_secs(30), "the new task's container", || {
            let c = docker_ok(&[
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.swarm.service.name=cutover-{id}"),
            ]);
            (c.lines().count() == 1).then_some(c)
        });
        docker_ok(&["kill", "--signal", "KILL", &container]);
        eventually(
            Duration::from_secs(30),
            &format!("restart {n} counted"),
            || {
                let e = lab.env_status("staging");
                let i = e["instances"]
                    .as_array()?
                    .iter()
                    .find(|i| i["id"] == id.as_str())?
                    .clone();
                // Serving: the edge follows the new task before the next kill (a kill while
                // the watcher moves the edge would make it start a fresh instance instead).
                (i["restarts"].as_u64() == Some(n)
                    && i["state"] == "running"
                    && i["role"] == "serving")
                    .then_some(())
            },
        );
    }
    let kept = docker_ok(&["service", "ps", "-q", &format!("cutover-{id}")]);
    assert!(
        kept.lines().count() < 8,
        "Swarm forgot some of the 8 tasks, the count did not: {kept}"
    );
    let instance = serving(&lab, "staging", &v1);
    assert_eq!(instance["restarts"], 7, "{instance:#}");
    let reason = instance["last_restart"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("exit status 137") && reason.contains("Swarm replaced its task"),
        "{instance:#}"
    );
    let human = lab.run(&["status"]).expect(0).stdout;
    assert!(
        human.contains("restarts 7")
            && human.contains("last restart at")
            && human.contains("on node "),
        "{human}"
    );
    lab.wait_serving(&v1, Duration::from_secs(30));

    // Kill the server: traffic goes on; the next command starts a server that adopts the
    // service (no new one), and it keeps serving.
    let pid: u32 = std::fs::read_to_string(lab.state_dir().join("server.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(lab.owns(pid));
    let before = service_id(&id);
    signal(pid, "KILL");
    eventually(Duration::from_secs(10), "the server to die", || {
        (!alive(pid)).then_some(())
    });
    lab.assert_serving(&v1);
    let run = lab.run(&["status", "--json"]).expect(0);
    assert!(run.stderr.contains("started the server"), "{run:?}");
    let adopted = serving(&lab, "staging", &v1);
    assert_eq!(id_of(&adopted), id, "re-adopted: {adopted:#}");
    assert_eq!(service_id(&id), before);
    assert_eq!(services(&lab).len(), 1);
    lab.assert_serving(&v1);
}

#[test]
fn swarm_refuses_constraints_it_cannot_meet_and_bad_ones() {
    let lab = docker_or_skip!(swarm_lab_with(|s| s.monitor = "1s".into()));
    let v1 = lab.head();
    lab.run(&["deploy", "staging"]).expect(0);

    // A valid constraint no node meets: the new instance cannot be placed, v1 serves, exit 3.
    let mut lab = lab;
    lab.recommit(
        |s| {
            s.extra =
                "[environments.staging.swarm]\nconstraints = [\"node.labels.cutover-test-none == yes\"]\n"
                    .into()
        },
        "unmeetable constraint",
    );
    let run = lab.run(&["deploy", "staging"]).expect(3);
    assert!(run.stderr.contains("no suitable node"), "{run:?}");
    assert!(run.stderr.contains("hint: "), "{run:?}");
    lab.assert_serving(&v1);
    assert_eq!(
        services(&lab).len(),
        1,
        "nothing of the refused release left"
    );

    // A malformed one: refused before anything starts, located, exit 1.
    lab.recommit(
        |s| {
            s.extra =
                "[environments.staging.swarm]\nconstraints = [\"node.rol == worker\"]\n".into()
        },
        "bad constraint",
    );
    let run = lab.run(&["deploy", "staging"]).expect(1);
    assert!(
        run.stderr.contains("cutover.toml:") && run.stderr.contains("node.rol"),
        "{run:?}"
    );
    assert!(run.stderr.contains("hint: "), "{run:?}");
    // An unknown key of the table.
    lab.recommit(
        |s| {
            s.extra = "[environments.staging.swarm]\nplacement = [\"node.role == worker\"]\n".into()
        },
        "unknown key",
    );
    let run = lab.run(&["deploy", "staging"]).expect(1);
    assert!(run.stderr.contains("placement"), "{run:?}");
    lab.assert_serving(&v1);
    assert_eq!(services(&lab).len(), 1);
}

/// A Docker engine API on a unix socket that answers like an engine outside any Swarm.
fn fake_engine_outside_a_swarm(dir: &std::path::Path) -> String {
    let path = dir.join("engine.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || loop {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let body = if line.contains("/version") {
                    r#"{"Version":"20.10.24","ApiVersion":"1.41","MinAPIVersion":"1.12","Os":"linux","Arch":"amd64"}"#
                } else if line.contains("/info") {
                    r#"{"ID":"fake","Swarm":{"LocalNodeState":"inactive","ControlAvailable":false}}"#
                } else {
                    r#"{"message":"not here"}"#
                };
                let status = if line.contains("/version") || line.contains("/info") {
                    "200 OK"
                } else {
                    "404 Not Found"
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nApi-Version: 1.41\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            });
        }
    });
    format!("unix://{}", path.display())
}

#[test]
fn swarm_on_an_engine_that_is_no_swarm_manager_is_refused_naming_the_fix() {
    let mut lab = docker_or_skip!(docker_lab_with(|s| s.runtime = "swarm".into()));
    let sock_dir = tempfile::Builder::new()
        .prefix("cutover-it-engine-")
        .tempdir()
        .unwrap();
    let host = fake_engine_outside_a_swarm(sock_dir.path());
    // Built and published on the real engine; then the server talks to the fake one.
    let v1 = lab.head();
    lab.run(&["publish"]).expect(0);
    lab.run(&["down"]).expect(0);
    lab.recommit(
        |s| s.extra = format!("[docker]\nhost = \"{host}\"\n"),
        "an engine outside a swarm",
    );
    let run = lab.run(&["deploy", "staging", "--version", &v1]).expect(1);
    assert!(
        run.stderr.contains("not a Swarm manager") && run.stderr.contains("docker swarm init"),
        "{run:?}"
    );
    assert!(lab.history().is_empty() || lab.history()[0]["state"] != "live");
    assert_eq!(services(&lab).len(), 0);
}

#[test]
fn swarm_prune_removes_leftover_services_secrets_and_old_images_and_keeps_the_way_back() {
    let lab = docker_or_skip!(swarm_lab_with(|s| {
        s.keep = 1;
        s.extra = "[secrets]\nGREETING = { env = \"T\" }\n".into();
    }));
    let secret = [("T", "prune-s3cr3t")];
    let v1 = lab.head();
    lab.run_env(&["deploy", "staging"], &secret).expect(0);
    let v2 = lab.commit("v2");
    lab.run_env(&["deploy", "staging"], &secret).expect(0);
    let v3 = lab.commit("v3");
    lab.run_env(&["deploy", "staging"], &secret).expect(0);
    // Past the monitor window: release 2's standby is retired, only release 3 runs.
    eventually(Duration::from_secs(30), "one service left", || {
        (services(&lab).len() == 1).then_some(())
    });
    let r1 = lab.history()[2]["id"].to_string();

    // What a server that died while retiring release 1 would leave: its service (labelled as
    // cutover labels it) and its secret.
    let live = &services(&lab)[0];
    let scope = live["Spec"]["Labels"]["cutover.scope"]
        .as_str()
        .unwrap()
        .to_string();
    let leftover = "staging-r1-9-dead";
    let label = |k: &str, v: &str| format!("{k}={v}");
    let secret_name = format!("cutover-{leftover}-s0");
    let (code, _, err) = {
        let out = std::process::Command::new("docker")
            .args([
                "secret",
                "create",
                "--label",
                &label("cutover.app", &lab.app),
                "--label",
                &label("cutover.instance", leftover),
                &secret_name,
                "-",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(b"old")?;
                c.wait_with_output()
            })
            .unwrap();
        (
            out.status.code(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert_eq!(code, Some(0), "{err}");
    let digest = lab.registry_digest(&v1).expect("v1 published");
    docker_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        &format!("cutover-{leftover}"),
        "--label",
        &label("cutover.app", &lab.app),
        "--label",
        &label("cutover.env", "staging"),
        "--label",
        &label("cutover.release", &r1),
        "--label",
        &label("cutover.version", &v1),
        "--label",
        &label("cutover.instance", leftover),
        "--label",
        &label("cutover.scope", &scope),
        "--label",
        &label("cutover.stop_timeout_ms", "2000"),
        "--secret",
        &format!("source={secret_name},target=GREETING"),
        "--publish",
        "mode=host,target=8000",
        &format!("{}@{digest}", lab.image),
    ]);
    eventually(Duration::from_secs(30), "the leftover to run", || {
        let c = docker_ok(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name=cutover-{leftover}"),
        ]);
        (!c.is_empty()).then_some(())
    });
    for v in [&v1, &v2, &v3] {
        assert!(lab.has_image(&lab.tag(v)), "{v} built on the manager");
    }

    // A dry run says so and changes nothing.
    let dry = lab.run(&["prune", "--dry-run"]).expect(0);
    assert!(
        dry.stdout
            .contains(&format!("would remove  instance {leftover}")),
        "{dry:?}"
    );
    assert_eq!(services(&lab).len(), 2);

    let run = lab.run(&["prune"]).expect(0);
    assert!(
        run.stdout.contains(&format!(
            "removed  instance {leftover} (release {r1} in staging)"
        )),
        "{run:?}"
    );
    let left = services(&lab);
    assert_eq!(left.len(), 1, "the leftover service went: {left:#?}");
    assert_eq!(left[0]["Spec"]["Labels"]["cutover.version"], v3.as_str());
    let secrets = docker_ok(&[
        "secret",
        "ls",
        "--filter",
        &format!("label=cutover.app={}", lab.app),
        "--format",
        "{{.Name}}",
    ]);
    assert!(
        !secrets.contains(&secret_name) && secrets.lines().count() == 1,
        "only release 3's secret is left: {secrets}"
    );
    // Images on the manager: release 1's went, the live one and the way back stay.
    assert!(
        !lab.has_image(&lab.tag(&v1)),
        "{run:?}\n{:?}",
        lab.local_refs()
    );
    assert!(lab.has_image(&lab.tag(&v2)), "{run:?}");
    assert!(lab.has_image(&lab.tag(&v3)), "{run:?}");
    assert!(run.stdout.contains(&v1[..7]), "{run:?}");

    // The way back still works.
    lab.run_env(&["rollback", "staging"], &secret).expect(0);
    lab.assert_serving(&v2);
}
