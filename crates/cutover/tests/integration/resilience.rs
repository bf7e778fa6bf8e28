//! What happens when things go wrong after cutover or around the control plane: a crash in the
//! monitor window, rollbacks inside and after the window, a killed server, concurrent deploys,
//! secrets, and the recreate strategy.

use std::fs;
use std::time::{Duration, Instant};

use crate::support::*;

/// The pid of the live version's serving instance, from `status --json`.
fn serving_pid(lab: &Lab, version: &str) -> u32 {
    let env = lab.staging();
    env["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["version"] == version && i["role"] == "serving")
        .and_then(|i| i["pid"].as_u64())
        .unwrap_or_else(|| panic!("no serving instance of {version}: {env:#}")) as u32
}

#[test]
fn a_crash_in_the_monitor_window_rolls_back_by_itself() {
    let lab = Lab::with(|s| s.monitor = "10s".into());
    let v1 = lab.head();
    lab.deploy().expect(0);
    let v2 = lab.commit("second");
    lab.deploy().expect(0);
    lab.assert_serving(&v2);
    let before = lab.history();
    assert_eq!(before.len(), 2);

    // The supervisor restarts the killed process; the monitor counts that as a crash.
    let watch = lab.watch();
    let pid = serving_pid(&lab, &v2);
    signal(pid, "KILL");
    lab.wait_serving(&v1, Duration::from_secs(15));
    watch.wait_for(10);
    let seen = watch.stop();
    // After the switch back every answer is v1; before it, only v2 or (during the crash) an
    // error: never anything else.
    let first_v1 = seen.iter().position(|s| s.as_deref() == Ok(v1.as_str()));
    let first_v1 = first_v1.expect("the watcher saw v1");
    assert!(
        seen[first_v1..]
            .iter()
            .all(|s| s.as_deref() == Ok(v1.as_str())),
        "once rolled back, v1 serves every request: {:?}",
        &seen[first_v1..]
    );

    let history = eventually(
        Duration::from_secs(10),
        "release 2 to be rolled-back",
        || {
            let h = lab.history();
            (h[0]["state"] == "rolled-back").then_some(h)
        },
    );
    assert_eq!(
        history.len(),
        2,
        "an automatic rollback adds no release: {history:#?}"
    );
    assert_eq!(history[0]["version"], v2.as_str());
    assert!(
        !history[0]["reason"].as_str().unwrap_or("").is_empty(),
        "the rolled-back release says why: {:#}",
        history[0]
    );
    assert_eq!(history[1]["state"], "live", "{history:#?}");
    let env = lab.staging();
    assert_eq!(env["live"]["version"], v1.as_str(), "{env:#}");
    lab.assert_serving(&v1);
}

#[test]
fn rollback_inside_the_monitor_window_is_a_switch_to_the_warm_standby() {
    let lab = Lab::with(|s| s.monitor = "30s".into());
    let v1 = lab.head();
    lab.deploy().expect(0);
    let v1_pid = serving_pid(&lab, &v1);
    let v2 = lab.commit("second");
    lab.deploy().expect(0);
    lab.assert_serving(&v2);
    // The previous version stays warm through the window.
    assert!(alive(v1_pid), "v1's instance is kept warm as standby");
    let standby = lab.staging();
    assert!(
        standby["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["version"] == v1.as_str() && i["role"] == "standby"),
        "{standby:#}"
    );

    let watch = lab.watch();
    watch.wait_for(5);
    let run = lab.run(&["rollback", "staging"]).expect(0);
    watch.wait_for(10);
    let seen = watch.stop();
    assert!(
        seen.iter().all(|s| s.is_ok()),
        "no failed request during the switch: {seen:?}"
    );
    lab.assert_serving(&v1);
    // A switch: the very same v1 process serves again, no new instance was started.
    assert_eq!(serving_pid(&lab, &v1), v1_pid, "{run:?}");
    assert!(!run.stderr.contains("starting instance"), "{run:?}");
    assert!(
        run.took < Duration::from_secs(5),
        "a rollback to a warm standby is fast: {run:?}"
    );
}

#[test]
fn rollback_after_the_monitor_window_starts_fresh_instances() {
    let lab = Lab::with(|s| s.monitor = "300ms".into());
    let v1 = lab.head();
    lab.deploy().expect(0);
    let v1_pid = serving_pid(&lab, &v1);
    let v2 = lab.commit("second");
    lab.deploy().expect(0);
    eventually(Duration::from_secs(10), "the window of v2 to close", || {
        lab.history()[0]["known_good"]
            .as_bool()
            .unwrap()
            .then_some(())
    });
    // The standby is stopped once the window closed.
    eventually(Duration::from_secs(10), "v1's standby to stop", || {
        (!alive(v1_pid)).then_some(())
    });
    lab.assert_serving(&v2);

    let run = lab.run(&["rollback", "staging"]).expect(0);
    lab.assert_serving(&v1);
    assert!(run.stderr.contains("starting instance"), "{run:?}");
    let pid = serving_pid(&lab, &v1);
    assert_ne!(pid, v1_pid);
    let history = lab.history();
    assert_eq!(
        history.len(),
        3,
        "`cutover rollback` adds a release: {history:#?}"
    );
    assert_eq!(history[0]["kind"], "rollback", "{history:#?}");
    assert_eq!(history[1]["state"], "rolled-back", "{history:#?}");
}

#[test]
fn traffic_survives_kill_9_of_the_server_and_the_next_command_restarts_it() {
    let lab = Lab::new();
    let v1 = lab.head();
    lab.deploy().expect(0);
    let live_before = lab.staging()["live"]["release"].clone();
    let pid_file = lab.state_dir().join("server.pid");
    let server: u32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(lab.owns(server));

    let watch = lab.watch();
    watch.wait_for(5);
    signal(server, "KILL");
    eventually(Duration::from_secs(10), "the server to die", || {
        (!alive(server)).then_some(())
    });
    watch.wait_for(50);
    let seen = watch.stop();
    let bad: Vec<_> = seen
        .iter()
        .filter(|s| s.as_deref() != Ok(v1.as_str()))
        .collect();
    assert!(bad.is_empty(), "traffic stopped with the server: {bad:?}");

    let run = lab.run(&["status", "--json"]).expect(0);
    assert!(run.stderr.contains("started the server"), "{run:?}");
    let env = run.json()["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "staging")
        .cloned()
        .unwrap();
    assert_eq!(env["live"]["release"], live_before, "{env:#}");
    assert_eq!(env["live"]["version"], v1.as_str(), "{env:#}");
    assert!(
        env["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["version"] == v1.as_str() && i["role"] == "serving"),
        "the restarted server re-adopted the running instance: {env:#}"
    );
    let new_server: u32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_server, server);
    lab.assert_serving(&v1);

    // And it can deploy again.
    let v2 = lab.commit("after the crash");
    lab.deploy().expect(0);
    lab.assert_serving(&v2);
}

/// A lab whose deploys take a couple of seconds of health checks, so two can overlap.
fn slow_lab() -> Lab {
    Lab::with(|s| {
        s.health = s
            .health
            .replace("interval = \"50ms\"", "interval = \"400ms\"")
            .replace("healthy_threshold = 2", "healthy_threshold = 5")
    })
}

/// Waits until some release of staging is on its way (holds the environment).
fn wait_in_flight(lab: &Lab) -> i64 {
    eventually(Duration::from_secs(60), "a release in flight", || {
        lab.history().iter().find_map(|r| {
            matches!(
                r["state"].as_str(),
                Some("pending" | "starting" | "verifying")
            )
            .then(|| r["id"].as_i64().unwrap())
        })
    })
}

/// The pid in the lab's `server.pid`.
fn server_pid(lab: &Lab) -> u32 {
    std::fs::read_to_string(lab.state_dir().join("server.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `cutover server stop` and `restart` touch the server alone (the instances and the edge
/// serve on, the live release stays), and never in the middle of a deploy: refused, exit 1,
/// the deploy goes on to its end.
#[test]
fn the_server_stops_and_restarts_alone_and_never_in_the_middle_of_a_deploy() {
    let lab = slow_lab();
    let v1 = lab.head();
    lab.deploy().expect(0);
    let server = server_pid(&lab);
    let watch = lab.watch();
    watch.wait_for(3);
    lab.run(&["server", "stop"]).expect(0).says(&[
        "stopped the server",
        &format!("pid {server}"),
        "serve on",
    ]);
    assert!(!alive(server));
    lab.assert_serving(&v1);
    lab.run(&["server", "stop"])
        .expect(0)
        .says(&["no cutover server runs", "nothing to stop"]);
    let started = lab
        .run(&["server", "restart"])
        .expect(0)
        .says(&["no server ran", "started one"]);
    let server = server_pid(&lab);
    assert!(
        started.stderr.contains(&format!("pid {server}")),
        "{started:?}"
    );
    let restarted = lab
        .run(&["server", "restart"])
        .expect(0)
        .says(&["restarted the server", &format!("pid {server} (cutover")]);
    assert!(!alive(server), "{restarted:?}");
    watch.wait_for(10);
    let seen = watch.stop();
    assert!(
        seen.iter().all(|s| s.as_deref() == Ok(v1.as_str())),
        "every request was served while the server stopped and restarted: {seen:?}"
    );
    assert_eq!(lab.staging()["live"]["version"], v1.as_str());

    // A deploy under way: neither stop nor restart, and the deploy ends as it would have.
    let v2 = lab.commit("second");
    let deploying = lab.spawn(&["deploy", "staging"]);
    let holder = wait_in_flight(&lab);
    let server = server_pid(&lab);
    for command in ["stop", "restart"] {
        lab.run(&["server", command]).expect(1).says(&[
            "the server is busy",
            "staging",
            "wait for it to finish",
        ]);
    }
    assert!(alive(server), "the server was stopped mid-deploy");
    wait_run(deploying).expect(0);
    lab.assert_serving(&v2);
    let live = lab.staging()["live"].clone();
    assert_eq!(live["release"].as_i64(), Some(holder), "{live:#}");
    lab.run(&["server", "restart"]).expect(0);
    lab.assert_serving(&v2);
}

#[test]
fn a_second_deploy_is_refused_while_one_runs_and_names_it() {
    let lab = slow_lab();
    lab.deploy().expect(0);
    let v2 = lab.commit("second");
    let first = lab.spawn(&["deploy", "staging"]);
    let holder = wait_in_flight(&lab);
    let second = lab.run(&["deploy", "staging"]);
    let first = wait_run(first);
    first.expect(0);
    let second = second
        .expect(1)
        .says(&["busy", &format!("release {holder}")]);
    assert!(
        second.stderr.contains("--queue"),
        "the hint names --queue: {second:?}"
    );
    lab.assert_serving(&v2);
    assert_eq!(
        lab.history().len(),
        2,
        "the refused deploy added no release"
    );
}

#[test]
fn with_queue_concurrent_deploys_both_succeed_in_turn() {
    let lab = slow_lab();
    lab.deploy().expect(0);
    let v2 = lab.commit("second");
    let first = lab.spawn(&["deploy", "staging", "--queue"]);
    wait_in_flight(&lab);
    let second = lab.run(&["deploy", "staging", "--queue", "--env", "TURN=2"]);
    wait_run(first).expect(0);
    let second = second.expect(0);
    assert!(second.stderr.contains("waiting"), "{second:?}");
    lab.assert_serving(&v2);
    let history = lab.history();
    assert_eq!(history.len(), 3, "{history:#?}");
    assert_eq!(history[0]["state"], "live");
    assert_eq!(history[1]["state"], "superseded", "{history:#?}");
}

#[test]
fn two_deploys_started_at_once_one_wins_one_is_refused() {
    let lab = slow_lab();
    lab.deploy().expect(0);
    lab.commit("second");
    let a = lab.spawn(&["deploy", "staging"]);
    let b = lab.spawn(&["deploy", "staging"]);
    let (a, b) = (wait_run(a), wait_run(b));
    let mut codes = [a.code, b.code];
    codes.sort_unstable();
    assert_eq!(codes, [0, 1], "one wins, one is refused:\n{a:?}\n{b:?}");
    let loser = if a.code == 1 { a } else { b };
    loser.says(&["busy", "release"]);
}

#[test]
fn secrets_reach_the_app_and_are_written_nowhere() {
    const VALUE: &str = "hunter2-e2e-Zq8v6mXk";
    let mut lab = Lab::with(|s| {
        s.extra = "[secrets]\nAPI_TOKEN = { env = \"LAB_API_TOKEN\" }\n".into();
    });
    lab.env.push(("LAB_API_TOKEN".into(), VALUE.into()));
    let run = lab.deploy().expect(0);
    let v1 = lab.head();
    lab.assert_serving(&v1);

    let pid = serving_pid(&lab, &v1);
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ
            .split('\0')
            .any(|kv| kv == format!("API_TOKEN={VALUE}")),
        "the instance has API_TOKEN in its environment"
    );

    // No command prints it.
    let mut outputs: Vec<(String, String)> = vec![("deploy".into(), format!("{run:?}"))];
    for args in [
        vec!["status", "--json"],
        vec!["history", "staging", "--json"],
        vec!["show", "1", "--json"],
        vec!["show", "1"],
        vec!["logs", "staging"],
    ] {
        let r = lab.run(&args).expect(0);
        outputs.push((args.join(" "), format!("{r:?}")));
    }
    let show = lab.run(&["show", "1", "--json"]).expect(0).json();
    assert!(
        show["config"]["secrets"].get("API_TOKEN").is_some(),
        "show names the secret (with a hash): {show:#}"
    );
    for (what, text) in &outputs {
        assert!(!text.contains(VALUE), "`cutover {what}` printed the secret");
    }
    let files = files_under(&lab.state_dir());
    assert!(files.iter().any(|f| f.ends_with("ledger.db")));
    for file in files {
        let Ok(bytes) = fs::read(&file) else { continue };
        let found = bytes.windows(VALUE.len()).any(|w| w == VALUE.as_bytes());
        assert!(!found, "the secret value is written in {}", file.display());
    }

    // A second deploy of another version still passes the secret on.
    let v2 = lab.commit("second");
    lab.deploy().expect(0);
    let pid = serving_pid(&lab, &v2);
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(String::from_utf8_lossy(&environ)
        .split('\0')
        .any(|kv| kv == format!("API_TOKEN={VALUE}")));
}

#[test]
fn env_config_reaches_the_app_and_env_overrides_are_recorded() {
    let lab = Lab::with(|s| s.extra = "[env]\nGREETING = \"hello from config\"\n".into());
    let v1 = lab.head();
    lab.deploy().expect(0);
    let (status, body) = lab.get("/").unwrap();
    assert_eq!(
        (status, body.trim()),
        (200, format!("tasks-app {v1}: hello from config").as_str())
    );
    lab.run(&["deploy", "staging", "--env", "GREETING=override"])
        .expect(0);
    let (_, body) = lab.get("/").unwrap();
    assert_eq!(body.trim(), format!("tasks-app {v1}: override"));
    let show = lab.run(&["show", "2", "--json"]).expect(0).json();
    assert_eq!(
        show["config"]["overrides"]["GREETING"], "override",
        "{show:#}"
    );
}

#[test]
fn recreate_stops_the_old_version_first_and_restores_it_when_the_new_one_fails() {
    let lab = Lab::with(|s| s.strategy = "recreate".into());
    let v1 = lab.head();
    lab.deploy().expect(0);
    lab.assert_serving(&v1);
    let v1_pid = serving_pid(&lab, &v1);

    let v2 = lab.commit("second");
    let run = lab.deploy().expect(0);
    lab.assert_serving(&v2);
    assert!(!alive(v1_pid), "recreate stopped the old instance: {run:?}");
    let stop_at = run
        .stderr
        .find("recreate")
        .unwrap_or_else(|| panic!("{run:?}"));
    let start_at = run
        .stderr
        .find("starting instance")
        .unwrap_or_else(|| panic!("{run:?}"));
    assert!(
        stop_at < start_at,
        "the old one stops before the new one starts: {run:?}"
    );
    // No standby under recreate: only v2 runs.
    let env = lab.staging();
    assert!(
        env["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["version"] == v2.as_str()),
        "{env:#}"
    );

    // A failing deploy: exit 3, and v2 serves again afterwards.
    let started = Instant::now();
    let run = lab
        .run(&["deploy", "staging", "--env", "BREAK=1"])
        .expect(3);
    lab.wait_serving(&v2, Duration::from_secs(20));
    let env = lab.staging();
    assert_eq!(env["live"]["version"], v2.as_str(), "{run:?}\n{env:#}");
    let history = lab.history();
    assert!(
        matches!(history[0]["state"].as_str(), Some("failed" | "rolled-back")),
        "{history:#?}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// Regression: the monitor task was handed the release as it was before cut-over (no
/// `monitor_until`), so every window closed after one probe interval: releases became
/// known-good at once, the warm standby was retired, and crashes after cut-over were never
/// rolled back.
#[test]
fn regression_monitor_window_lasts_as_long_as_configured() {
    let lab = Lab::with(|s| s.monitor = "4s".into());
    lab.deploy().expect(0);
    let deployed = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let history = lab.history();
    if deployed.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            history[0]["known_good"], false,
            "known-good before its 4 s window ran out: {history:#?}"
        );
        assert!(lab.staging()["live"]["monitoring_until"].is_string());
    }
    eventually(Duration::from_secs(20), "the window to close", || {
        lab.history()[0]["known_good"]
            .as_bool()
            .unwrap()
            .then_some(())
    });
    assert!(
        deployed.elapsed() >= Duration::from_secs(3),
        "closed after {:?}",
        deployed.elapsed()
    );
}

#[test]
fn a_restarted_server_keeps_watching_an_open_monitor_window() {
    let lab = Lab::with(|s| s.monitor = "20s".into());
    let v1 = lab.head();
    lab.deploy().expect(0);
    let v2 = lab.commit("second");
    lab.deploy().expect(0);
    lab.assert_serving(&v2);

    let pid_file = lab.state_dir().join("server.pid");
    let server: u32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    signal(server, "KILL");
    eventually(Duration::from_secs(10), "the server to die", || {
        (!alive(server)).then_some(())
    });
    lab.run(&["status", "--json"])
        .expect(0)
        .says(&["started the server"]);

    // v2 crashes inside its window: the new server rolls back to v1.
    signal(serving_pid(&lab, &v2), "KILL");
    lab.wait_serving(&v1, Duration::from_secs(20));
    let history = eventually(
        Duration::from_secs(10),
        "release 2 to be rolled-back",
        || {
            let h = lab.history();
            (h[0]["state"] == "rolled-back").then_some(h)
        },
    );
    assert_eq!(history.len(), 2, "{history:#?}");
    assert_eq!(lab.staging()["live"]["version"], v1.as_str());
}

/// The pids of staging's serving instance and of its supervisor, from `status --json`.
fn serving_pids(lab: &Lab) -> (u32, u32) {
    let env = lab.staging();
    let serving = env["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["role"] == "serving")
        .cloned()
        .unwrap_or_else(|| panic!("no serving instance: {env:#}"));
    let pid = serving["pid"].as_u64().unwrap() as u32;
    (pid, serving["supervisor_pid"].as_u64().unwrap() as u32)
}

/// Regression (no healing between deploys): when the live instance and its supervisor are both
/// killed, the server's watcher brings the live release back by itself — no CLI command, no
/// server restart, no new release.
#[test]
fn the_watcher_heals_between_deploys() {
    let lab = Lab::new();
    let v1 = lab.head();
    lab.deploy().expect(0);
    lab.assert_serving(&v1);
    let (pid, supervisor) = serving_pids(&lab);
    signal(supervisor, "KILL");
    signal(pid, "KILL");
    eventually(Duration::from_secs(2), "the instance to die", || {
        (!alive(pid)).then_some(())
    });
    // Only the edge is asked from here on: the server must heal by itself.
    lab.wait_serving(&v1, Duration::from_secs(10));
    let (now, _) = serving_pids(&lab);
    assert_ne!(now, pid, "a fresh instance serves");
    let history = lab.history();
    assert_eq!(history.len(), 1, "healing adds no release: {history:#?}");
    assert_eq!(history[0]["state"], "live", "{history:#?}");
}

/// Regression (an orphaned instance): killing only the supervisor leaves the instance
/// answering; the watcher replaces it with a supervised one and stops the orphan.
#[test]
fn an_instance_whose_supervisor_died_is_replaced_and_stopped() {
    let lab = Lab::new();
    let v1 = lab.head();
    lab.deploy().expect(0);
    let (pid, supervisor) = serving_pids(&lab);
    let watch = lab.watch();
    signal(supervisor, "KILL");
    eventually(Duration::from_secs(15), "the orphan to be stopped", || {
        (!alive(pid)).then_some(())
    });
    lab.wait_serving(&v1, Duration::from_secs(5));
    watch.wait_for(5);
    let seen = watch.stop();
    assert!(
        seen.iter().all(|s| s.as_deref() == Ok(v1.as_str())),
        "v1 served every request while its instance was replaced: {seen:?}"
    );
    assert_eq!(lab.history().len(), 1);
}

/// Issue 10, part 7 (a client that goes away mid-deploy): the server carries the deploy on,
/// and `cutover show N --follow` prints its timeline as it happens and exits as `deploy`
/// would have — 0 when it went live, 3 when its instances failed and the known-good serves.
#[test]
fn show_follow_picks_up_a_deploy_whose_client_went_away() {
    let lab = slow_lab();
    lab.deploy().expect(0);
    let v2 = lab.commit("second");
    let (mut client, _, _) = lab.spawn(&["deploy", "staging"]);
    let id = wait_in_flight(&lab);
    client.kill().unwrap(); // the laptop lid closes
    let _ = client.wait();
    let followed = lab
        .run(&["show", &id.to_string(), "--follow"])
        .expect(0)
        .says(&["went live", "live"]);
    assert!(
        followed.stderr.contains("verifying"),
        "the timeline is printed: {followed:?}"
    );
    lab.assert_serving(&v2);

    // A deploy whose instances fail: followed to exit 3.
    lab.commit("third");
    let (mut client, _, _) = lab.spawn(&["deploy", "staging", "--env", "BREAK=1"]);
    let id = wait_in_flight(&lab);
    client.kill().unwrap();
    let _ = client.wait();
    lab.run(&["show", &id.to_string(), "--follow"])
        .expect(3)
        .says(&["rolled-back"]);
    lab.assert_serving(&v2);
    // A release that ended long ago answers at once.
    lab.run(&["show", "1", "--follow"]).expect(0);
    // --follow and --json do not go together: a usage error.
    lab.run(&["show", "1", "--follow", "--json"]).expect(2);
}
