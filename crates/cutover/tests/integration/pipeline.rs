//! The pipeline and its gates (issue 4): checks → build → staging → the production gate, the
//! human click (`approve`, from the CLI and the local API), `approvers`, `requires`, freezes,
//! `promote`, `abort`, push webhooks, `watch`, notifications, and the bad input around them.
//!
//! Every lab here has two environments (staging on `lab.listen`, production on a port of its
//! own) and, where a test needs them, a webhook listener and notification receivers on ports
//! of their own too, so the tests run in parallel.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// How long a whole pipeline run may take on a busy 2-core machine.
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// A lab with a production environment next to staging.
struct Pipe {
    lab: Lab,
    production: SocketAddr,
}

impl Pipe {
    /// A lab whose committed config is the default one plus `staging_extra` (more keys of
    /// `[environments.staging]`), a production environment with `production_extra` keys, and
    /// `rest` (more tables: `[pipeline]`, `[webhook]`, `[[notify]]`).
    fn new(staging_extra: &str, production_extra: &str, rest: &str) -> Pipe {
        Pipe::with(|_| {}, staging_extra, production_extra, rest, &[])
    }

    fn with(
        tweak: impl FnOnce(&mut Settings),
        staging_extra: &str,
        production_extra: &str,
        rest: &str,
        env: &[(&str, &str)],
    ) -> Pipe {
        let mut lab = Lab::with(tweak);
        for (k, v) in env {
            lab.env.push((k.to_string(), v.to_string()));
        }
        let production: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let pipe = Pipe { lab, production };
        let text = pipe.config(staging_extra, production_extra, rest);
        pipe.lab.commit_config(&text, "pipeline config");
        pipe
    }

    fn config(&self, staging_extra: &str, production_extra: &str, rest: &str) -> String {
        format!(
            "{}{staging_extra}\n\n[environments.production]\nlisten = \"{}\"\n{production_extra}\n\n{rest}\n",
            self.lab.config(),
            self.production
        )
    }

    fn env(&self, name: &str) -> Value {
        let status = self.lab.status();
        status["environments"]
            .as_array()
            .expect("environments[]")
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in status: {status:#}"))
    }

    /// The version production's proxy serves now (`/health` 200 only).
    fn production_serving(&self) -> Option<String> {
        match http_get(self.production, "/health") {
            Ok((200, body)) => json_field(&body, "version"),
            _ => None,
        }
    }

    #[track_caller]
    fn wait_production(&self, version: &str) {
        let mut last = None;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            last = self.production_serving();
            if last.as_deref() == Some(version) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("production did not serve {version}; last seen {last:?}");
    }
}

impl std::ops::Deref for Pipe {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

/// The id of the pipeline run a `pipeline run` / `watch` printed ("pipeline run N …").
#[track_caller]
fn run_id(run: &Run) -> i64 {
    let text = format!("{}\n{}", run.stderr, run.stdout);
    let at = text
        .find("pipeline run ")
        .unwrap_or_else(|| panic!("no run id in the output: {run:?}"));
    text[at + "pipeline run ".len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no run id in the output: {run:?}"))
}

/// Runs `f` until it returns `Some`, every 200 ms, for at most `limit`.
#[track_caller]
fn poll<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn release_id(r: &Value) -> String {
    r["id"].as_i64().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------------
// The pipeline, the gate and the human click
// ---------------------------------------------------------------------------------------------

const CHECKS: &str = r#"[pipeline]
branch = "main"
[[pipeline.check]]
name = "lint"
run = "echo linting; test -f cutover.toml"
[[pipeline.check]]
name = "test"
run = "echo testing"
needs = ["lint"]
timeout = "60s"
"#;

#[test]
fn the_pipeline_ships_to_staging_and_waits_at_the_production_gate_for_a_person() {
    let pipe = Pipe::new(
        "",
        "approval = \"manual\"\nrequires = [\"staging\"]",
        CHECKS,
    );
    let v1 = pipe.head();

    let run = pipe.run(&["pipeline", "run"]).expect(0);
    assert!(run.took < RUN_LIMIT, "the run took too long: {run:?}");
    let text = run.stderr.to_lowercase();
    assert!(
        text.contains("cutover approve production"),
        "the run says what waits and how to approve it: {run:?}"
    );
    pipe.assert_serving(&v1);
    assert_eq!(
        pipe.production_serving(),
        None,
        "nothing serves production before the approval"
    );

    // status and history show the release waiting at the gate.
    let production = pipe.env("production");
    let waiting = production["awaiting_approval"].as_array().unwrap();
    assert_eq!(waiting.len(), 1, "{production:#}");
    assert_eq!(waiting[0]["version"], v1.as_str(), "{production:#}");
    assert!(production["live"].is_null(), "{production:#}");
    let history = pipe.history_of("production");
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0]["state"], "awaiting-approval", "{history:#?}");
    let waiting_id = release_id(&history[0]);
    let staging_release = release_id(&pipe.history()[0]);
    assert_eq!(pipe.staging()["live"]["version"], v1.as_str());

    // The run, stage by stage: both checks passed, their output kept.
    let id = run_id(&run);
    let shown = pipe
        .run(&["pipeline", "show", &id.to_string(), "--json"])
        .expect(0)
        .json();
    let checks = shown["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{shown:#}");
    for c in checks {
        assert_eq!(c["status"], "passed", "{shown:#}");
    }
    let lint = checks.iter().find(|c| c["name"] == "lint").unwrap();
    let lint_log = fs::read_to_string(lint["log_file"].as_str().unwrap()).unwrap();
    assert!(lint_log.contains("linting"), "{lint_log:?}");
    assert!(!shown["events"].as_array().unwrap().is_empty(), "{shown:#}");

    // Approving a release of another environment names that environment; nothing changes.
    pipe.run_env(
        &["approve", "production", "--release", &staging_release],
        &[("CUTOVER_USER", "bob")],
    )
    .expect(1)
    .says(&["staging"]);
    // The commit's author ("Lab <lab@example.com>") may not approve it.
    pipe.run_env(&["approve", "production"], &[("CUTOVER_USER", "lab")])
        .expect(1)
        .says(&["lab", "wrote"]);
    assert_eq!(
        pipe.history_of("production")[0]["state"],
        "awaiting-approval"
    );

    // bob approves: production goes live, bob is recorded.
    pipe.run_env(&["approve", "production"], &[("CUTOVER_USER", "bob")])
        .expect(0);
    pipe.wait_production(&v1);
    let production = pipe.env("production");
    assert_eq!(production["live"]["version"], v1.as_str(), "{production:#}");
    assert!(
        production["awaiting_approval"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{production:#}"
    );
    let show = pipe.run(&["show", &waiting_id, "--json"]).expect(0).json();
    assert_eq!(show["release"]["approved_by"], "bob", "{show:#}");
    assert!(show["release"]["approved_at"].is_string(), "{show:#}");
    assert_eq!(show["release"]["state"], "live", "{show:#}");

    // Nothing waits now: approving is refused.
    pipe.run_env(&["approve", "production"], &[("CUTOVER_USER", "bob")])
        .expect(1)
        .says(&["nothing waits"]);

    // A second commit through the pipeline, approved through the server's local API.
    let v2 = pipe.commit("second");
    pipe.run(&["pipeline", "run"]).expect(0);
    let history = pipe.history_of("production");
    assert_eq!(history[0]["state"], "awaiting-approval", "{history:#?}");
    assert_eq!(history[0]["version"], v2.as_str(), "{history:#?}");
    let (status, answer) = api_post(
        &pipe.state_dir(),
        "/v1/approve",
        r#"{"env":"production","by":"carol"}"#,
    );
    assert_eq!(status, 200, "{answer}");
    pipe.wait_production(&v2);
    let show = pipe
        .run(&["show", &release_id(&history[0]), "--json"])
        .expect(0)
        .json();
    assert_eq!(show["release"]["approved_by"], "carol", "{show:#}");
}

#[test]
fn only_the_listed_approvers_may_approve_and_never_the_commits_author() {
    let pipe = Pipe::new("", "approval = \"manual\"\napprovers = [\"alice\"]", "");
    // alice writes the change.
    fs::write(pipe.repo.join("notes.txt"), "alice was here\n").unwrap();
    pipe.git(&["add", "-A"]);
    pipe.git(&[
        "-c",
        "user.name=alice",
        "-c",
        "user.email=alice@example.com",
        "commit",
        "-q",
        "-m",
        "alice's change",
    ]);
    let v = pipe.head();
    pipe.run(&["pipeline", "run"]).expect(0);
    let history = pipe.history_of("production");
    assert_eq!(history[0]["state"], "awaiting-approval", "{history:#?}");
    assert_eq!(history[0]["version"], v.as_str());

    // bob is not an approver.
    pipe.run_env(&["approve", "production"], &[("CUTOVER_USER", "bob")])
        .expect(1)
        .says(&["bob", "may not approve", "alice"]);
    // alice is, but she wrote the commit.
    pipe.run_env(&["approve", "production"], &[("CUTOVER_USER", "alice")])
        .expect(1)
        .says(&["alice", "wrote"]);
    // Nothing changed: still waiting, nothing serves production.
    let history = pipe.history_of("production");
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0]["state"], "awaiting-approval", "{history:#?}");
    assert!(history[0]["approved_by"].is_null(), "{history:#?}");
    assert_eq!(pipe.production_serving(), None);

    // It can be turned down, with a reason that is kept.
    pipe.run_env(
        &[
            "reject",
            "production",
            "--reason",
            "needs a second pair of eyes",
        ],
        &[("CUTOVER_USER", "alice")],
    )
    .expect(0);
    let history = pipe.history_of("production");
    assert_eq!(history[0]["state"], "failed", "{history:#?}");
    assert!(
        history[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("second pair of eyes"),
        "{history:#?}"
    );
}

#[test]
fn continuous_deployment_goes_to_production_alone_and_a_failing_check_stops_everything() {
    let pipe = Pipe::new("", "approval = \"auto\"\nrequires = [\"staging\"]", CHECKS);
    let v1 = pipe.head();

    // approval = "auto": the run goes through staging's window on to production by itself.
    let run = pipe.run(&["pipeline", "run"]).expect(0);
    pipe.assert_serving(&v1);
    pipe.wait_production(&v1);
    let production = pipe.env("production");
    assert_eq!(production["live"]["version"], v1.as_str(), "{production:#}");
    assert_eq!(
        production["live"]["digest"],
        pipe.staging()["live"]["digest"],
        "built once: the same digest in both"
    );
    assert!(
        !run.stderr.contains("cutover approve"),
        "nothing waits for a person: {run:?}"
    );

    // A change whose `test` check fails: nothing is built or deployed.
    let failing = CHECKS.replace(
        "run = \"echo testing\"",
        "run = \"echo 'assertion failed: expected 2, got 3'; exit 1\"",
    )
        + "[[pipeline.check]]\nname = \"scan\"\nrun = \"echo scanning\"\nneeds = [\"test\"]\n";
    let text = pipe.config(
        "",
        "approval = \"auto\"\nrequires = [\"staging\"]",
        &failing,
    );
    let v2 = pipe.commit_config(&text, "a change that breaks a test");
    let staging_before = pipe.ledger_summary();
    let production_before = pipe.history_of("production").len();

    let run = pipe
        .run(&["pipeline", "run"])
        .expect(1)
        .says(&["test", "failed"]);
    assert_eq!(pipe.ledger_summary(), staging_before, "staging unchanged");
    assert_eq!(
        pipe.history_of("production").len(),
        production_before,
        "production unchanged"
    );
    pipe.assert_serving(&v1);
    assert_eq!(pipe.production_serving().as_deref(), Some(v1.as_str()));

    let id = run_id(&run);
    let shown = pipe
        .run(&["pipeline", "show", &id.to_string(), "--json"])
        .expect(0)
        .json();
    assert_eq!(shown["run"]["sha"], v2.as_str(), "{shown:#}");
    let checks = shown["checks"].as_array().unwrap();
    let test = checks
        .iter()
        .find(|c| c["name"] == "test")
        .unwrap_or_else(|| panic!("the failed check is listed: {shown:#}"));
    assert_eq!(test["status"], "failed", "{shown:#}");
    let log = fs::read_to_string(test["log_file"].as_str().unwrap()).unwrap();
    assert!(
        log.contains("assertion failed: expected 2, got 3"),
        "the check's output is kept: {log:?}"
    );
    assert!(
        checks
            .iter()
            .filter(|c| c["name"] == "scan")
            .all(|c| c["status"] != "passed"),
        "a check that needs the failed one does not pass: {shown:#}"
    );
    // And a plain deploy of that commit is refused too: its checks failed.
    pipe.deploy().expect(1);
    assert_eq!(pipe.ledger_summary(), staging_before, "staging unchanged");
}

// ---------------------------------------------------------------------------------------------
// Freeze, promote, requires, abort
// ---------------------------------------------------------------------------------------------

#[test]
fn a_freeze_refuses_deploys_but_not_rollbacks_until_unfrozen() {
    let pipe = Pipe::new("", "", "");
    let v1 = pipe.head();
    pipe.deploy().expect(0);
    let v2 = pipe.commit("second");
    pipe.deploy().expect(0);
    pipe.assert_serving(&v2);

    pipe.run_env(
        &["freeze", "staging", "--reason", "incident 42"],
        &[("CUTOVER_USER", "carol")],
    )
    .expect(0);
    let staging = pipe.staging();
    assert!(
        !staging["frozen"].is_null(),
        "status shows the freeze: {staging:#}"
    );

    let v3 = pipe.commit("third");
    let before = pipe.ledger_summary();
    pipe.deploy()
        .expect(1)
        .says(&["frozen", "carol", "incident 42", "unfreeze"]);
    pipe.run(&["pipeline", "run"]).expect(1).says(&["frozen"]);
    assert_eq!(
        pipe.ledger_summary(),
        before,
        "a refused deploy changes nothing"
    );
    pipe.assert_serving(&v2);

    // The way back is never frozen.
    pipe.run(&["rollback", "staging"]).expect(0);
    pipe.assert_serving(&v1);

    pipe.run(&["unfreeze", "staging"]).expect(0);
    assert!(pipe.staging()["frozen"].is_null());
    pipe.deploy().expect(0);
    pipe.assert_serving(&v3);
}

#[test]
fn promote_ships_the_digest_live_in_staging_and_requires_refuses_what_never_passed_staging() {
    let pipe = Pipe::new("", "requires = [\"staging\"]", "");
    // Nothing is live in staging yet: nothing to promote.
    pipe.run(&["promote", "staging", "production"])
        .expect(1)
        .says(&["nothing is live in staging"]);
    assert!(pipe.history_of("production").is_empty());

    let v1 = pipe.head();
    pipe.deploy().expect(0);
    // Production requires staging's monitor window (1 s here) to have passed.
    poll(Duration::from_secs(30), "staging's window to pass", || {
        pipe.history()[0]["known_good"]
            .as_bool()
            .unwrap()
            .then_some(())
    });
    pipe.run(&["promote", "staging", "production"]).expect(0);
    pipe.wait_production(&v1);
    let (staging, production) = (pipe.staging(), pipe.env("production"));
    assert_eq!(production["live"]["version"], v1.as_str());
    assert_eq!(
        production["live"]["digest"], staging["live"]["digest"],
        "promote ships exactly the staging artifact:\n{staging:#}\n{production:#}"
    );

    // A version that never went through staging is refused, naming what it lacks.
    let v2 = pipe.commit("second");
    let before = pipe.history_of("production").len();
    pipe.run(&["deploy", "production"])
        .expect(1)
        .says(&["staging"]);
    assert_eq!(pipe.history_of("production").len(), before);
    assert_eq!(pipe.production_serving().as_deref(), Some(v1.as_str()));
    let _ = v2;
}

#[test]
fn promote_is_recorded_as_a_promotion_and_does_not_race() {
    // Production's instances take a few seconds to come up (the run command sleeps when
    // DELAY is set), so a deploy to staging lands while the promotion still runs.
    let pipe = Pipe::with(
        |s| {
            s.run = "command = [\"/bin/sh\", \"-c\", \"sleep $${DELAY:-0}; exec ./tasks-app\"]\nstop_timeout = \"2s\"".into();
            s.health = s.health.replace("deadline = \"5s\"", "deadline = \"60s\"");
        },
        "",
        "env = { DELAY = \"6\" }",
        "",
        &[],
    );
    let v1 = pipe.head();
    pipe.deploy().expect(0);
    pipe.assert_serving(&v1);
    let staged = pipe.staging()["live"]["release"].as_i64().unwrap();
    let v2 = pipe.commit("second");
    pipe.run(&["build"]).expect(0);

    let mut promote = pipe.spawn(&["promote", "staging", "production"]);
    let promoted = poll(Duration::from_secs(30), "the promotion to start", || {
        pipe.history_of("production")
            .first()
            .and_then(|r| r["id"].as_i64())
    });
    // v2 goes live in staging while production is still bringing up what promote took.
    pipe.deploy().expect(0);
    pipe.assert_serving(&v2);
    assert!(
        promote.0.try_wait().unwrap().is_none(),
        "the staging deploy should land while the promotion runs"
    );
    wait_run(promote).expect(0);

    // Production runs what was live in staging when the promotion took it, not what is now.
    pipe.wait_production(&v1);
    let production = pipe.env("production");
    assert_eq!(production["live"]["release"], promoted, "{production:#}");
    assert_eq!(production["live"]["version"], v1.as_str(), "{production:#}");
    assert_eq!(pipe.staging()["live"]["version"], v2.as_str());

    // The ledger says it is a promotion, and of which release of which environment.
    let show = pipe
        .run(&["show", &promoted.to_string(), "--json"])
        .expect(0)
        .json();
    let release = &show["release"];
    assert_eq!(release["kind"], "promote", "{show:#}");
    assert_eq!(release["promoted_from"]["release"], staged, "{show:#}");
    assert_eq!(
        release["promoted_from"]["environment"], "staging",
        "{show:#}"
    );
    assert_eq!(release["version"], v1.as_str(), "{show:#}");
    let text = pipe.run(&["show", &promoted.to_string()]).expect(0);
    let says = format!("promotes  release {staged} of staging");
    assert!(text.stdout.contains(&says), "{text:?}");
    let history = pipe.run(&["history", "production"]).expect(0);
    let says = format!("promoted from release {staged} of staging");
    assert!(
        history.stdout.contains("promote ") && history.stdout.contains(&says),
        "{history:?}"
    );
    // A deploy is not a promotion: its document has no promoted_from.
    let deploy = pipe
        .run(&["show", &staged.to_string(), "--json"])
        .expect(0)
        .json();
    assert!(
        deploy["release"].get("promoted_from").is_none(),
        "{deploy:#}"
    );
}

#[test]
fn abort_during_verifying_ends_the_deploy_and_the_known_good_keeps_serving() {
    // A long health deadline and a patient health check: a version that answers 500 would
    // verify for a minute and a half.
    let pipe = Pipe::with(
        |s| {
            s.health = s
                .health
                .replace("deadline = \"5s\"", "deadline = \"90s\"")
                .replace("unhealthy_threshold = 3", "unhealthy_threshold = 100000");
        },
        "",
        "",
        "",
        &[],
    );
    let v1 = pipe.head();
    pipe.deploy().expect(0);
    pipe.assert_serving(&v1);
    pipe.commit("second");

    let watch = pipe.watch();
    let deploy = pipe.spawn(&["deploy", "staging", "--env", "BREAK=1"]);
    let started = Instant::now();
    poll(
        Duration::from_secs(60),
        "the broken release to verify",
        || {
            let h = pipe.history();
            (h.len() == 2 && matches!(h[0]["state"].as_str(), Some("starting" | "verifying")))
                .then_some(())
        },
    );
    // Let it be stuck in verifying for a moment.
    thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    let abort = pipe.run_env(&["abort", "staging"], &[("CUTOVER_USER", "dave")]);
    let run = wait_run(deploy);
    let ended = asked.elapsed();
    assert_eq!(abort.code, 0, "{abort:?}\n{run:?}");
    let run = run.expect(3);
    assert!(
        ended < Duration::from_secs(20),
        "the deploy ended {ended:?} after the abort (started {:?} ago): {run:?}",
        started.elapsed()
    );
    watch.wait_for(10);
    let seen = watch.stop();
    let bad: Vec<_> = seen
        .iter()
        .filter(|s| s.as_deref() != Ok(v1.as_str()))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} requests were not served by the known-good: {:?}",
        bad.len(),
        seen.len(),
        &bad[..bad.len().min(5)]
    );
    pipe.assert_serving(&v1);
    let history = pipe.history();
    assert!(
        matches!(history[0]["state"].as_str(), Some("failed" | "rolled-back")),
        "{history:#?}"
    );
    assert_eq!(pipe.staging()["live"]["version"], v1.as_str());
    // Nothing is in flight any more.
    pipe.run(&["abort", "staging"]).expect(1);
}

// ---------------------------------------------------------------------------------------------
// Webhooks and watch
// ---------------------------------------------------------------------------------------------

/// A GitHub push delivery: (status, body of the answer).
fn deliver(addr: SocketAddr, secret: &str, event: &str, id: &str, body: &str) -> (u16, String) {
    let signature = format!(
        "sha256={}",
        hex(&hmac_sha256(secret.as_bytes(), body.as_bytes()))
    );
    post_raw(
        addr,
        "/hooks/push",
        &[
            ("X-GitHub-Event", event),
            ("X-GitHub-Delivery", id),
            ("X-Hub-Signature-256", &signature),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .unwrap_or_else(|e| panic!("POST to {addr}: {e}"))
}

/// A push delivery as `forge` sends it — its headers and its payload's shape: (status, body of
/// the answer).
fn deliver_as(
    forge: &str,
    addr: SocketAddr,
    secret: &str,
    id: &str,
    branch: &str,
    sha: &str,
) -> (u16, String) {
    let (headers, body): (Vec<(&str, String)>, String) = match forge {
        "github" => return deliver(addr, secret, "push", id, &push_body(branch, sha)),
        "gitea" => {
            let body = serde_json::json!({
                "ref": format!("refs/heads/{branch}"),
                "before": "0".repeat(40),
                "after": sha,
                "compare_url": "",
                "repository": {"full_name": "course/lab", "clone_url": "https://gitea.example/course/lab.git"},
                "pusher": {"login": "erin", "username": "erin"},
            })
            .to_string();
            let signature = hex(&hmac_sha256(secret.as_bytes(), body.as_bytes()));
            (
                vec![
                    ("X-Gitea-Event", "push".to_string()),
                    ("X-Gitea-Delivery", id.to_string()),
                    ("X-Gitea-Signature", signature),
                ],
                body,
            )
        }
        "gitlab" => {
            let body = serde_json::json!({
                "object_kind": "push",
                "event_name": "push",
                "ref": format!("refs/heads/{branch}"),
                "before": "0".repeat(40),
                "after": sha,
                "checkout_sha": sha,
                "user_username": "erin",
                "project": {"path_with_namespace": "course/lab"},
            })
            .to_string();
            (
                vec![
                    ("X-Gitlab-Event", "Push Hook".to_string()),
                    ("X-Gitlab-Event-UUID", id.to_string()),
                    ("X-Gitlab-Token", secret.to_string()),
                ],
                body,
            )
        }
        other => panic!("no forge {other}"),
    };
    let mut all: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.push(("Content-Type", "application/json"));
    post_raw(addr, "/hooks/push", &all, body.as_bytes())
        .unwrap_or_else(|e| panic!("POST to {addr}: {e}"))
}

fn push_body(branch: &str, sha: &str) -> String {
    serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0".repeat(40),
        "after": sha,
        "repository": {"full_name": "course/lab"},
        "pusher": {"name": "erin"},
    })
    .to_string()
}

#[test]
fn webhook_deliveries_signed_right_run_the_pipeline_and_nothing_else_does() {
    let hook: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let secret = "s3cret-for-the-lab";
    let rest =
        format!("[webhook]\nsecret = {{ env = \"LAB_WEBHOOK_SECRET\" }}\nlisten = \"{hook}\"\n");
    let pipe = Pipe::with(
        |_| {},
        "",
        "approval = \"manual\"",
        &rest,
        &[("LAB_WEBHOOK_SECRET", secret)],
    );
    let v1 = pipe.head();
    // The first command starts the server, which listens for webhooks.
    pipe.status();
    poll(Duration::from_secs(30), "the webhook listener", || {
        TcpStream::connect_timeout(&hook, Duration::from_secs(1)).ok()
    });
    let no_run = |what: &str| {
        thread::sleep(Duration::from_millis(1500));
        assert!(pipe.history().is_empty(), "{what} ran nothing");
        pipe.run(&["pipeline", "show", "1", "--json"]).expect(1);
    };

    // A wrong signature: 401, nothing runs.
    let body = push_body("main", &v1);
    let (status, answer) = deliver(hook, "not-the-secret", "push", "d-1", &body);
    assert_eq!(status, 401, "{answer}");
    no_run("a wrongly signed delivery");
    // No signature at all: 401 too.
    let (status, answer) = post_raw(
        hook,
        "/hooks/push",
        &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d-2")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 401, "{answer}");
    // Signed right but not JSON: 400.
    let (status, answer) = deliver(hook, secret, "push", "d-3", "{\"ref\": ");
    assert_eq!(status, 400, "{answer}");
    // An event type that is not a push: 400.
    let (status, answer) = deliver(hook, secret, "issues", "d-4", &body);
    assert_eq!(status, 400, "{answer}");
    // A push to another branch: accepted and ignored.
    let (status, answer) = deliver(hook, secret, "push", "d-5", &push_body("feature", &v1));
    assert!(status == 202 || status == 200, "{status} {answer}");
    assert!(answer.contains("ignored"), "{answer}");
    no_run("bad and foreign deliveries");

    // Signed right: 202, and the pipeline runs to staging (production waits for a person).
    // Production has no `requires` here: the run must still reach staging rather than stop at
    // production's gate first (regression: environments were taken by name, "production"
    // before "staging", and the run parked there without ever deploying staging).
    let (status, answer) = deliver(hook, secret, "push", "d-6", &body);
    assert_eq!(status, 202, "{answer}");
    poll(RUN_LIMIT, "staging to be live by the webhook", || {
        let h = pipe.history();
        (h.first()
            .map(|r| r["state"] == "live" && r["version"] == v1.as_str())
            == Some(true))
        .then_some(())
    });
    pipe.wait_serving(&v1, Duration::from_secs(10));
    let staging = pipe.history();
    assert_eq!(staging.len(), 1, "{staging:#?}");
    assert_eq!(staging[0]["trigger"], "webhook", "{staging:#?}");
    let production = poll(RUN_LIMIT, "production to park", || {
        let h = pipe.history_of("production");
        h.first()
            .is_some_and(|r| r["state"] == "awaiting-approval")
            .then_some(h)
    });
    assert_eq!(production.len(), 1, "{production:#?}");
    let shown = pipe
        .run(&["pipeline", "show", "1", "--json"])
        .expect(0)
        .json();
    assert_eq!(shown["run"]["sha"], v1.as_str(), "{shown:#}");
    assert_eq!(shown["run"]["trigger"], "webhook", "{shown:#}");

    // The same delivery again (a forge's redelivery, or an attacker's replay), even for a new
    // commit: ignored, no second run.
    let v2 = pipe.commit("second");
    let (status, answer) = deliver(hook, secret, "push", "d-6", &push_body("main", &v2));
    assert!(status == 200 || status == 202, "{status} {answer}");
    assert!(answer.contains("ignored"), "{answer}");
    thread::sleep(Duration::from_millis(2000));
    assert_eq!(pipe.history().len(), 1, "a replay runs nothing");
    pipe.run(&["pipeline", "show", "2", "--json"]).expect(1);
    pipe.assert_serving(&v1);
}

/// Issue 10 (webhooks from a real forge): the server's repository is a clone of the forge's,
/// so a push names a commit it does not have yet — delivered as GitHub, Gitea and GitLab each
/// send it (their headers, signatures and payload shapes). The server fetches it from
/// `[pipeline] remote` before the run (moving no branch of the user's), and a push it cannot run is
/// recorded with its reason where a user looks: `pipeline list` and `pipeline show`.
#[test]
fn a_webhook_for_a_commit_the_clone_lacks_is_fetched_and_every_run_is_listed() {
    let hook: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let secret = "s3cret-for-the-forge";
    let rest = format!(
        "[pipeline]\nremote = \"forge\"\n\n[webhook]\nsecret = {{ env = \"LAB_WEBHOOK_SECRET\" }}\nlisten = \"{hook}\"\n"
    );
    let pipe = Pipe::with(
        |_| {},
        "",
        "approval = \"manual\"",
        &rest,
        &[("LAB_WEBHOOK_SECRET", secret)],
    );
    let parent = pipe.repo.parent().unwrap().to_path_buf();
    let forge = parent.join("forge.git");
    git_in(
        &parent,
        &[
            "clone",
            "-q",
            "--bare",
            pipe.repo.to_str().unwrap(),
            "forge.git",
        ],
    );
    pipe.git(&["remote", "add", "forge", forge.to_str().unwrap()]);
    pipe.git(&["fetch", "-q", "forge"]);
    // Someone merges in their own clone and pushes to the forge, which tells the server: as
    // GitHub, Gitea and GitLab each say it.
    git_in(&parent, &["clone", "-q", forge.to_str().unwrap(), "dev"]);
    let dev = parent.join("dev");
    pipe.status();
    poll(Duration::from_secs(30), "the webhook listener", || {
        TcpStream::connect_timeout(&hook, Duration::from_secs(1)).ok()
    });
    let mut tip = String::new();
    for forge_kind in ["github", "gitea", "gitlab"] {
        fs::write(
            dev.join("notes.txt"),
            format!("merged on the forge ({forge_kind})\n"),
        )
        .unwrap();
        git_in(&dev, &["add", "-A"]);
        git_in(
            &dev,
            &["commit", "-q", "-m", &format!("merged ({forge_kind})")],
        );
        git_in(&dev, &["push", "-q", "origin", "HEAD:main"]);
        tip = git_in(&dev, &["rev-parse", "HEAD"]);
        let lacks = Command::new("git")
            .args(["cat-file", "-e", &format!("{tip}^{{commit}}")])
            .current_dir(&pipe.repo)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(
            !lacks.success(),
            "the server's clone must not have {tip} yet"
        );
        let id = format!("f-{forge_kind}");
        let (status, answer) = deliver_as(forge_kind, hook, secret, &id, "main", &tip);
        assert_eq!(status, 202, "{forge_kind}: {answer}");
        poll(
            RUN_LIMIT,
            "staging to be live with the forge's commit",
            || {
                let h = pipe.history();
                (h.first()
                    .map(|r| r["state"] == "live" && r["version"] == tip.as_str())
                    == Some(true))
                .then_some(())
            },
        );
        pipe.wait_serving(&tip, Duration::from_secs(10));
    }
    assert_ne!(pipe.head(), tip, "the user's branch did not move");

    // A push of a commit the forge does not have either: 202 (the forge is told at once),
    // then the run is refused, and says why, in `pipeline list` and `pipeline show`.
    let ghost = "0123456789abcdef0123456789abcdef01234567";
    let (status, answer) = deliver(hook, secret, "push", "f-2", &push_body("main", ghost));
    assert_eq!(status, 202, "{answer}");
    let runs = poll(RUN_LIMIT, "the refused run to be listed", || {
        let list = pipe.run(&["pipeline", "list", "--json"]).expect(0).json();
        let runs = list["runs"].as_array().cloned().unwrap_or_default();
        runs.iter()
            .any(|r| r["sha"] == ghost && r["state"] == "refused")
            .then_some(runs)
    });
    let refused = runs.iter().find(|r| r["sha"] == ghost).unwrap();
    assert_eq!(refused["trigger"], "webhook", "{refused:#}");
    let reason = refused["message"].as_str().unwrap_or_default();
    assert!(
        reason.contains("is not in this repository") && reason.contains("forge"),
        "the reason names the commit and the remote: {refused:#}"
    );
    let first = runs.iter().find(|r| r["sha"] == tip.as_str()).unwrap();
    assert_eq!(first["trigger"], "webhook", "{first:#}");
    assert!(
        first["state"] == "running" || first["state"] == "succeeded",
        "{first:#}"
    );
    let id = refused["id"].as_i64().unwrap().to_string();
    let shown = pipe
        .run(&["pipeline", "show", &id, "--json"])
        .expect(0)
        .json();
    assert_eq!(shown["run"]["state"], "refused", "{shown:#}");
    let listed = pipe.run(&["pipeline", "list"]).expect(0);
    for needle in ["webhook", "refused", "is not in this repository"] {
        assert!(listed.stdout.contains(needle), "{needle}: {listed:?}");
    }
    assert_eq!(
        pipe.history().len(),
        3,
        "one release per forge's push; the refused run deployed nothing"
    );
}

#[test]
fn watch_runs_the_pipeline_for_a_new_commit_upstream() {
    let pipe = Pipe::new("", "approval = \"manual\"", "");
    // "upstream" is another clone, where someone else merges.
    let upstream = pipe.repo.parent().unwrap().join("upstream");
    git_in(
        pipe.repo.parent().unwrap(),
        &["clone", "-q", pipe.repo.to_str().unwrap(), "upstream"],
    );
    fs::write(upstream.join("notes.txt"), "merged upstream\n").unwrap();
    git_in(&upstream, &["add", "-A"]);
    git_in(&upstream, &["commit", "-q", "-m", "merged upstream"]);
    let tip = git_in(&upstream, &["rev-parse", "HEAD"]);
    assert_ne!(tip, pipe.head());

    let run = pipe
        .run(&["watch", "--remote", upstream.to_str().unwrap(), "--once"])
        .expect(0);
    pipe.assert_serving(&tip);
    let staging = pipe.history();
    assert_eq!(staging.len(), 1, "{staging:#?}");
    assert_eq!(staging[0]["version"], tip.as_str(), "{run:?}");
    assert_eq!(staging[0]["trigger"], "watch", "{staging:#?}");
    assert_eq!(
        pipe.history_of("production")[0]["state"],
        "awaiting-approval"
    );
    // The user's own branch did not move.
    assert_ne!(pipe.head(), tip);
}

// ---------------------------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------------------------

/// An HTTP receiver on 127.0.0.1 that answers 200 to everything and keeps the bodies.
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    bodies: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    pub(crate) fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bodies.clone(), stop.clone());
        thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let b = b.clone();
                        thread::spawn(move || {
                            if let Some(body) = read_request(stream) {
                                b.lock().unwrap().push(body);
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Receiver { addr, bodies, stop }
    }

    pub(crate) fn events(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| serde_json::from_str(b).ok())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads one request (headers and a Content-Length body) and answers 200.
fn read_request(mut stream: TcpStream) -> Option<String> {
    stream.set_nonblocking(false).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let body_at = loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..body_at]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while raw.len() < body_at + length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    Some(String::from_utf8_lossy(&raw[body_at..]).to_string())
}

/// A listener that accepts connections and never answers: the worst kind of dead receiver.
struct Blackhole {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Blackhole {
    fn start() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::SeqCst) {
                if let Ok((stream, _)) = listener.accept() {
                    held.push(stream);
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        Blackhole { addr, stop }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Issue 10, part 6: a pipeline run that ends without shipping is told to the receivers, as
/// a `pipeline-run` notification with its reason (a webhook's run has nobody watching it).
#[test]
fn a_failed_pipeline_run_is_notified() {
    let receiver = Receiver::start();
    let failing = CHECKS.replace(
        "run = \"echo testing\"",
        "run = \"echo 'assertion failed: expected 2, got 3'; exit 1\"",
    );
    let rest = format!(
        "{failing}\n[[notify]]\nurl = \"http://{}/hook\"\n",
        receiver.addr
    );
    let pipe = Pipe::new("", "", &rest);
    let sha = pipe.head();
    pipe.run(&["pipeline", "run"]).expect(1);
    let event = poll(
        Duration::from_secs(30),
        "a pipeline-run notification",
        || {
            receiver
                .events()
                .into_iter()
                .find(|e| e["kind"] == "pipeline-run")
        },
    );
    assert_eq!(event["sha"], sha.as_str(), "{event:#}");
    assert_eq!(event["state"], "refused", "{event:#}");
    assert_eq!(event["trigger"], "cli", "{event:#}");
    assert_eq!(event["app"], "lab", "{event:#}");
    assert!(
        event["message"].as_str().unwrap().contains("test"),
        "the reason names the check: {event:#}"
    );
    assert!(pipe.history().is_empty(), "nothing shipped");
}

#[test]
fn notifications_reach_a_receiver_and_a_dead_one_slows_nothing() {
    let receiver = Receiver::start();
    let blackhole = Blackhole::start();
    // A port nobody listens on: refused at once.
    let refused = free_port();
    let rest = format!(
        "[[notify]]\nurl = \"http://{}/hook\"\n[[notify]]\nurl = \"http://{}/hook\"\n[[notify]]\nurl = \"http://127.0.0.1:{refused}/hook\"\n",
        receiver.addr, blackhole.addr
    );
    let pipe = Pipe::new("", "approval = \"manual\"", &rest);
    let v1 = pipe.head();

    let run = pipe.run(&["pipeline", "run"]).expect(0);
    let waiting = release_id(&pipe.history_of("production")[0]);
    let events = poll(
        Duration::from_secs(30),
        "live and awaiting-approval events",
        || {
            let e = receiver.events();
            let has = |env: &str, state: &str| {
                e.iter()
                    .any(|x| x["environment"] == env && x["state"] == state)
            };
            (has("staging", "live") && has("production", "awaiting-approval")).then_some(e)
        },
    );
    for e in &events {
        for key in [
            "app",
            "environment",
            "release",
            "version",
            "digest",
            "state",
            "at",
        ] {
            assert!(e.get(key).is_some(), "an event lacks {key}: {e:#}");
        }
    }
    let live = events
        .iter()
        .find(|x| x["environment"] == "staging" && x["state"] == "live")
        .unwrap();
    assert_eq!(live["version"], v1.as_str(), "{live:#}");
    assert_eq!(live["app"], "lab", "{live:#}");

    // The dead receivers (one never answers, one refuses) hold up no deploy: a plain deploy
    // makes several state changes, each of which would wait seconds on them if it blocked.
    let v2 = pipe.commit("second");
    let deploy = pipe.deploy().expect(0);
    pipe.assert_serving(&v2);
    assert!(
        deploy.took < Duration::from_secs(12),
        "the dead receivers slowed the deploy down: {deploy:?}\n(pipeline run: {run:?})"
    );

    // A broken version: the receiver hears about its end.
    pipe.run(&["deploy", "staging", "--env", "BREAK=1"])
        .expect(3);
    poll(
        Duration::from_secs(30),
        "a failed or rolled-back event",
        || {
            receiver
                .events()
                .iter()
                .any(|x| {
                    x["environment"] == "staging"
                        && matches!(x["state"].as_str(), Some("failed" | "rolled-back"))
                })
                .then_some(())
        },
    );
    // Approving production announces its live release.
    pipe.run_env(&["approve", "production"], &[("CUTOVER_USER", "bob")])
        .expect(0);
    poll(Duration::from_secs(30), "production's live event", || {
        receiver
            .events()
            .iter()
            .any(|x| {
                x["environment"] == "production"
                    && x["state"] == "live"
                    && x["release"].as_i64().map(|i| i.to_string()) == Some(waiting.clone())
            })
            .then_some(())
    });
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_pipeline_config_is_refused_naming_the_field_and_changes_nothing() {
    let pipe = Pipe::new("", "", "");
    pipe.status(); // the server runs with a valid config
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "a needs cycle",
            "",
            "[[pipeline.check]]\nname = \"a\"\nrun = \"true\"\nneeds = [\"b\"]\n[[pipeline.check]]\nname = \"b\"\nrun = \"true\"\nneeds = [\"a\"]\n",
            &["needs", "a", "b"],
        ),
        (
            "an unknown need",
            "",
            "[[pipeline.check]]\nname = \"a\"\nrun = \"true\"\nneeds = [\"nope\"]\n",
            &["needs", "nope"],
        ),
        (
            "an empty run",
            "",
            "[[pipeline.check]]\nname = \"a\"\nrun = \"\"\n",
            &["run"],
        ),
        (
            "approval = sometimes",
            "approval = \"sometimes\"",
            "",
            &["approval", "sometimes"],
        ),
        (
            "requires an unknown environment",
            "requires = [\"qa\"]",
            "",
            &["requires", "qa"],
        ),
        (
            "requires itself",
            "requires = [\"production\"]",
            "",
            &["requires", "itself"],
        ),
    ];
    for (what, production, rest, needles) in cases {
        let text = pipe.config("", production, rest);
        pipe.commit_config(&text, what);
        let run = pipe.run(&["pipeline", "run"]);
        assert_eq!(run.code, 1, "{what}: {run:?}");
        let run = run.says(needles);
        assert!(
            run.stderr.contains("cutover.toml"),
            "{what}: the error names the file: {run:?}"
        );
        assert!(pipe.history().is_empty(), "{what}: nothing deployed");
        assert!(pipe.history_of("production").is_empty(), "{what}");
    }
    // None of them started a run.
    pipe.run(&["pipeline", "show", "1", "--json"]).expect(1);
}

// ---------------------------------------------------------------------------------------------
// Helpers: git, HTTP over TCP and the local socket, HMAC-SHA-256
// ---------------------------------------------------------------------------------------------

fn git_in(dir: &Path, args: &[&str]) -> String {
    git_as("Upstream", "upstream@example.com", dir, args)
}

/// One POST over a fresh TCP connection: (status, body).
fn post_raw(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    http_exchange(&mut stream, &addr.to_string(), path, headers, body)
}

fn http_exchange(
    stream: &mut (impl Read + Write),
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let (status, _head, body) = split_response(&raw)?;
    Ok((status, body))
}

/// POSTs JSON to the server's local API (its unix socket, found as cutover finds it).
fn api_post(state_dir: &Path, path: &str, body: &str) -> (u16, String) {
    let socket = server_socket(state_dir);
    let mut stream = std::os::unix::net::UnixStream::connect(&socket)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(100)))
        .unwrap();
    http_exchange(
        &mut stream,
        "cutover",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap()
}

/// `<$XDG_RUNTIME_DIR or /tmp>/cutover-<uid>-<16 hex of sha256(canonical state dir)>/server.sock`.
fn server_socket(state_dir: &Path) -> PathBuf {
    let canonical = state_dir.canonicalize().unwrap();
    let id = hex(&sha256(canonical.as_os_str().as_encoded_bytes()))[..16].to_string();
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let uid = Command::new("id").arg("-u").output().unwrap();
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
    base.join(format!("cutover-{uid}-{id}")).join("server.sock")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (FIPS 180-4), enough for signing test deliveries without a dev-dependency.
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (i, word) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// HMAC-SHA-256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&sha256(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = block
        .iter()
        .map(|b| b ^ 0x36)
        .chain(message.iter().copied())
        .collect();
    let outer: Vec<u8> = block
        .iter()
        .map(|b| b ^ 0x5c)
        .chain(sha256(&inner))
        .collect();
    sha256(&outer)
}

#[test]
fn the_test_hmac_matches_rfc_4231() {
    // RFC 4231 test case 2.
    assert_eq!(
        hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        hex(&sha256(b"")),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn a_person_approves_over_http_with_their_token_and_nobody_without_one() {
    let hook: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let rest =
        format!("[webhook]\nsecret = {{ env = \"LAB_WEBHOOK_SECRET\" }}\nlisten = \"{hook}\"\n");
    let pipe = Pipe::with(
        |_| {},
        "",
        "approval = \"manual\"",
        &rest,
        &[("LAB_WEBHOOK_SECRET", "lab-secret")],
    );
    let v1 = pipe.head();
    pipe.run(&["pipeline", "run"]).expect(0);
    poll(Duration::from_secs(30), "the HTTP listener", || {
        TcpStream::connect_timeout(&hook, Duration::from_secs(1)).ok()
    });
    let body = br#"{"env":"production"}"#;
    let json = ("Content-Type", "application/json");

    // No token, or a made-up one: 401 and nothing ships.
    let (status, answer) = post_raw(hook, "/v1/approve", &[json], body).unwrap();
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("cutover token create"), "{answer}");
    let forged = ("Authorization", "Bearer cut_not-a-real-token");
    let (status, answer) = post_raw(hook, "/v1/approve", &[json, forged], body).unwrap();
    assert_eq!(status, 401, "{answer}");
    assert_eq!(pipe.production_serving(), None);

    // dave's token ships it, and the ledger says dave approved.
    let token = pipe
        .run(&["token", "create", "dave"])
        .expect(0)
        .stdout
        .trim()
        .to_string();
    assert!(token.starts_with("cut_"), "{token:?}");
    let bearer = format!("Bearer {token}");
    let (status, answer) = post_raw(
        hook,
        "/v1/approve",
        &[json, ("Authorization", &bearer)],
        body,
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"exit_code\":0"), "{answer}");
    pipe.wait_production(&v1);
    let id = release_id(&pipe.history_of("production")[0]);
    let shown = pipe.run(&["show", &id, "--json"]).expect(0).json();
    assert_eq!(shown["release"]["approved_by"], "dave", "{shown:#}");

    // A revoked token approves nothing more.
    pipe.run(&["token", "revoke", "dave"]).expect(0);
    let (status, _) = post_raw(
        hook,
        "/v1/approve",
        &[json, ("Authorization", &bearer)],
        body,
    )
    .unwrap();
    assert_eq!(status, 401);
}
