//! The happy path and its neighbours: deploy, redeploy, a broken deploy that changes nothing
//! for users, rollback (twice, walking back), history, show, logs.

use std::time::Duration;

use crate::support::*;

#[test]
fn the_walk_deploy_break_rollback_history_show_logs() {
    let lab = Lab::new();
    let v1 = lab.head();

    // First deploy: HEAD goes live behind the proxy.
    let run = lab.deploy().expect(0);
    assert!(
        run.stderr.contains("started the server"),
        "the first command says it started a server: {run:?}"
    );
    lab.assert_serving(&v1);

    // A second commit replaces it.
    let v2 = lab.commit("second");
    lab.deploy().expect(0);
    lab.assert_serving(&v2);

    // status --json says what is live, since when, by whom, and what was before.
    let env = lab.staging();
    assert_eq!(env["listen"], lab.listen.to_string());
    let live = &env["live"];
    assert_eq!(live["version"], v2.as_str(), "{env:#}");
    assert!(live["release"].as_i64().unwrap() >= 2, "{env:#}");
    assert!(
        live["digest"].as_str().unwrap().starts_with("sha256:"),
        "{env:#}"
    );
    assert!(live["since"].is_string(), "{env:#}");
    assert!(!live["deployed_by"].as_str().unwrap().is_empty(), "{env:#}");
    assert!(live.get("monitoring_until").is_some(), "{env:#}");
    assert_eq!(env["previous"]["version"], v1.as_str(), "{env:#}");
    let instances = env["instances"].as_array().unwrap();
    assert!(
        instances
            .iter()
            .any(|i| i["version"] == v2.as_str() && i["role"] == "serving" && i["pid"].is_u64()),
        "a serving instance of the live version: {env:#}"
    );

    // A broken version: exit 3, and users never see a failure nor another version.
    let before = lab.ledger_summary();
    let watch = lab.watch();
    watch.wait_for(5);
    let run = lab
        .run(&["deploy", "staging", "--env", "BREAK=1"])
        .expect(3);
    watch.wait_for(20);
    let seen = watch.stop();
    let bad: Vec<_> = seen
        .iter()
        .filter(|s| s.as_deref() != Ok(v2.as_str()))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} requests during the broken deploy were not served by {v2}: {:?}\n{run:?}",
        bad.len(),
        seen.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(
        run.stderr.contains("500"),
        "the error shows the failed probe: {run:?}"
    );
    lab.assert_serving(&v2);
    let after = lab.history();
    assert_eq!(
        after.len(),
        before.len() + 1,
        "one release added: {after:#?}"
    );
    let broken = &after[0];
    assert!(
        matches!(broken["state"].as_str(), Some("failed" | "rolled-back")),
        "the broken release ended failed/rolled-back: {broken:#}"
    );
    assert!(
        broken["reason"].as_str().unwrap_or("").contains("health"),
        "its reason names the health check: {broken:#}"
    );
    assert_eq!(lab.staging()["live"]["version"], v2.as_str());

    // A third good version, then rollback walks back one version at a time.
    let v3 = lab.commit("third");
    lab.deploy().expect(0);
    lab.assert_serving(&v3);

    let run = lab.run(&["rollback", "staging"]).expect(0);
    lab.assert_serving(&v2);
    let env = lab.staging();
    assert_eq!(env["live"]["version"], v2.as_str(), "{run:?}\n{env:#}");

    let run = lab.run(&["rollback", "staging"]).expect(0);
    lab.assert_serving(&v1);
    assert_eq!(lab.staging()["live"]["version"], v1.as_str(), "{run:?}");

    // history: newest first, with the fields users script against.
    let history = lab.history();
    let ids: Vec<i64> = history.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest first");
    assert_eq!(
        history.len(),
        6,
        "3 deploys + 1 broken + 2 rollbacks: {history:#?}"
    );
    for r in &history {
        for key in ["id", "version", "digest", "state", "reason"] {
            assert!(r.get(key).is_some(), "release lacks {key}: {r:#}");
        }
    }
    assert_eq!(history[0]["state"], "live");
    assert_eq!(history[0]["version"], v1.as_str());
    // The release the rollbacks left are marked so that they are not picked again.
    let v3_release = history
        .iter()
        .find(|r| r["version"] == v3.as_str())
        .unwrap();
    assert_eq!(v3_release["state"], "rolled-back", "{history:#?}");

    // show: one release's timeline.
    let id = history[0]["id"].as_i64().unwrap().to_string();
    let show = lab.run(&["show", &id, "--json"]).expect(0).json();
    assert_eq!(show["release"]["id"].as_i64().unwrap().to_string(), id);
    let events = show["events"].as_array().unwrap();
    assert!(events.len() >= 3, "a timeline: {show:#}");
    assert!(events
        .iter()
        .all(|e| e["kind"].is_string() && e["message"].is_string()));
    // A release that does not exist: refused, not a crash.
    lab.run(&["show", "9999", "--json"]).expect(1);

    // logs: the app's own lines.
    let logs = lab.run(&["logs", "staging"]).expect(0);
    assert!(
        logs.stdout
            .contains(&format!("tasks-app {v1} listening on")),
        "logs show the live app's output: {logs:?}"
    );
}

#[test]
fn a_deploy_after_the_monitor_window_keeps_the_previous_version_as_target() {
    // Known-good by a window that ran out (not closed early by a newer deploy).
    let lab = Lab::with(|s| s.monitor = "300ms".into());
    let v1 = lab.head();
    lab.deploy().expect(0);
    eventually(
        Duration::from_secs(10),
        "the window of release 1 to close",
        || {
            lab.history()[0]["known_good"]
                .as_bool()
                .unwrap()
                .then_some(())
        },
    );
    let v2 = lab.commit("second");
    lab.deploy().expect(0);
    lab.assert_serving(&v2);
    assert_eq!(lab.staging()["previous"]["version"], v1.as_str());
    lab.run(&["rollback", "staging"]).expect(0);
    lab.assert_serving(&v1);
}
