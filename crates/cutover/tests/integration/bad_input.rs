//! Bad input: each case gets the right exit code and an error that names the thing and the fix,
//! and changes nothing (the ledger's releases and the serving version stay as they were).
//! A deploy uses the cutover.toml *as committed*, so every bad config is committed first.

use crate::support::*;
use std::net::TcpListener;

/// A lab with one good release live; returns it with the live version.
fn baseline() -> (Lab, String) {
    baseline_with(|_| {})
}

fn baseline_with(tweak: impl FnOnce(&mut Settings)) -> (Lab, String) {
    let lab = Lab::with(tweak);
    let v1 = lab.head();
    lab.deploy().expect(0);
    lab.assert_serving(&v1);
    (lab, v1)
}

/// Commits `config`, deploys it, and checks exit 1, the needles, and that nothing changed
/// (also for `cutover status`, which reads the working tree's file).
#[track_caller]
fn refused_config(config: &str, needles: &[&str]) -> Run {
    let (lab, v1) = baseline();
    let before = lab.ledger_summary();
    lab.commit_config(config, "bad config");
    let run = lab.deploy().expect(1).says(needles);
    assert!(run.stderr.contains("error"), "{run:?}");
    assert_eq!(lab.ledger_summary(), before, "the ledger changed: {run:?}");
    lab.assert_serving(&v1);
    // Commands that read the working tree's config still answer about what runs.
    let env = lab.staging();
    assert_eq!(env["live"]["version"], v1.as_str(), "{env:#}");
    run
}

/// Deploys a committed config whose instance fails: exit 3, the needles, one release added
/// that did not become live, and the old version serves throughout.
#[track_caller]
fn failed_start(tweak_config: impl FnOnce(&Lab) -> String, needles: &[&str]) -> Run {
    let (lab, v1) = baseline();
    let before = lab.ledger_summary();
    let config = tweak_config(&lab);
    lab.commit_config(&config, "breaking change");
    let watch = lab.watch();
    watch.wait_for(3);
    let run = lab.deploy().expect(3).says(needles);
    watch.wait_for(5);
    let seen = watch.stop();
    assert!(
        seen.iter().all(|s| s.as_deref() == Ok(v1.as_str())),
        "the old version served every request: {:?}",
        seen.iter()
            .filter(|s| s.as_deref() != Ok(v1.as_str()))
            .take(5)
            .collect::<Vec<_>>()
    );
    lab.assert_serving(&v1);
    let after = lab.ledger_summary();
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert_eq!(&after[1..], &before[..], "older releases unchanged");
    assert!(
        matches!(after[0].1.as_str(), "failed" | "rolled-back"),
        "the new release ended failed/rolled-back: {after:?}"
    );
    assert_eq!(lab.staging()["live"]["version"], v1.as_str());
    run
}

/// The error is said once, not repeated as its own cause.
#[track_caller]
fn assert_single_error(run: &Run) {
    assert_eq!(run.stderr.matches("error:").count(), 1, "{run:?}");
    assert!(!run.stderr.contains("caused by"), "{run:?}");
}

fn good_config_with(lab: &Lab, from: &str, to: &str) -> String {
    let config = lab.config();
    assert!(config.contains(from), "{from:?} not in\n{config}");
    config.replacen(from, to, 1)
}

// ------------------------------------------------------------------------------------------
// Config errors: exit 1, file/line and the field named
// ------------------------------------------------------------------------------------------

#[test]
fn malformed_toml() {
    let config = "[app\nname = \"lab\"\n";
    let run = refused_config(config, &["cutover.toml:1:"]);
    assert_single_error(&run);
}

#[test]
fn unknown_key() {
    let lab = Lab::new();
    let config = good_config_with(&lab, "[run]\n", "[run]\ncomand = [\"./tasks-app\"]\n");
    drop(lab);
    let run = refused_config(&config, &["comand", "cutover.toml:8:", "command"]);
    assert_single_error(&run);
}

#[test]
fn wrong_type() {
    let lab = Lab::new();
    let config = good_config_with(&lab, "healthy_threshold = 2", "healthy_threshold = \"two\"");
    drop(lab);
    refused_config(&config, &["healthy_threshold"]);
}

#[test]
fn duration_without_unit() {
    let lab = Lab::new();
    let config = good_config_with(&lab, "interval = \"50ms\"", "interval = \"10\"");
    drop(lab);
    let run = refused_config(&config, &["interval", "\"10\""]);
    assert!(run.stderr.contains("hint"), "a hint shows the fix: {run:?}");
}

#[test]
fn negative_duration() {
    let lab = Lab::new();
    let config = good_config_with(&lab, "deadline = \"5s\"", "deadline = \"-1s\"");
    drop(lab);
    refused_config(&config, &["deadline", "-1s"]);
}

#[test]
fn app_name_with_spaces() {
    let lab = Lab::new();
    let config = good_config_with(&lab, "name = \"lab\"", "name = \"my app\"");
    drop(lab);
    refused_config(&config, &["my app", "name", "hint"]);
}

#[test]
fn two_environments_on_one_listen_address() {
    let lab = Lab::new();
    let config = format!(
        "{}\n[environments.production]\nlisten = \"{}\"\n",
        lab.config(),
        lab.listen
    );
    drop(lab);
    refused_config(&config, &["staging", "production", "listen"]);
}

// ------------------------------------------------------------------------------------------
// Refused before any instance starts: exit 1
// ------------------------------------------------------------------------------------------

#[test]
fn listen_address_already_in_use() {
    let (lab, v1) = baseline();
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    let config = format!(
        "{}\n[environments.production]\nlisten = \"{taken}\"\n",
        lab.config()
    );
    lab.commit_config(&config, "add production");
    let before = lab.ledger_summary();
    let run = lab.run(&["deploy", "production"]).expect(1).says(&[
        "in use",
        &taken.to_string(),
        "hint",
        "listen",
    ]);
    assert!(
        !run.stderr.contains("starting instance"),
        "no instance started: {run:?}"
    );
    // Nothing serves production; the attempt is at most recorded as `failed` (refused or
    // broken before any instance of it took traffic).
    let production = lab.history_of("production");
    assert!(
        production.iter().all(|r| r["state"] == "failed"),
        "{production:#?}"
    );
    let status = lab.status();
    let env = status["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "production")
        .cloned()
        .unwrap_or_default();
    assert!(env["live"].is_null(), "{status:#}");
    assert_eq!(lab.ledger_summary(), before, "staging is untouched");
    lab.assert_serving(&v1);
    drop(squatter);
}

#[test]
fn build_command_that_fails_shows_its_output() {
    let (lab, v1) = baseline();
    let before = lab.ledger_summary();
    let config = good_config_with(
        &lab,
        "files = [\"tasks-app\"]",
        "command = \"echo compiling-step; echo broken-build-xyz >&2; exit 7\"\nfiles = [\"tasks-app\"]",
    );
    lab.commit_config(&config, "broken build");
    let run = lab.deploy().expect(1).says(&["broken-build-xyz"]);
    assert_eq!(lab.ledger_summary(), before, "{run:?}");
    lab.assert_serving(&v1);
}

#[test]
fn files_that_match_nothing() {
    let (lab, v1) = baseline();
    let before = lab.ledger_summary();
    let config = good_config_with(&lab, "files = [\"tasks-app\"]", "files = [\"dist/*.bin\"]");
    lab.commit_config(&config, "wrong files");
    let run = lab.deploy().expect(1).says(&["dist/*.bin"]);
    assert_eq!(lab.ledger_summary(), before, "{run:?}");
    lab.assert_serving(&v1);
}

#[test]
fn unknown_version_is_refused() {
    let (lab, v1) = baseline();
    let before = lab.ledger_summary();
    let run = lab
        .run(&["deploy", "staging", "--version", "deadbeef"])
        .expect(1)
        .says(&["deadbeef"]);
    assert_eq!(lab.ledger_summary(), before, "{run:?}");
    lab.assert_serving(&v1);
}

#[test]
fn promote_and_prune_refusals_come_from_the_server_name_the_fix_and_change_nothing() {
    let (lab, v1) = baseline();
    let before = lab.ledger_summary();
    lab.run(&["promote", "staging", "staging"])
        .expect(1)
        .says(&["cannot promote staging to itself", "hint:"]);
    lab.run(&["promote", "staging", "nowhere"])
        .expect(1)
        .says(&[
            "no environment named `nowhere`",
            "known environments: staging",
        ]);
    lab.run(&["prune", "--keep", "0"])
        .expect(1)
        .says(&["--keep 0 would leave no way back", "hint: keep at least 1"]);
    assert_eq!(lab.ledger_summary(), before);
    lab.assert_serving(&v1);
    // Nothing was pruned: the live artifact deploys again without a build.
    lab.run(&["deploy", "staging", "--version", &v1[..12]])
        .expect(0);
}

#[test]
fn deploy_version_of_a_built_artifact_works_without_building() {
    let (lab, v1) = baseline();
    let v2 = lab.commit("second");
    lab.deploy().expect(0);
    lab.assert_serving(&v2);
    let run = lab
        .run(&["deploy", "staging", "--version", &v1[..10]])
        .expect(0);
    assert!(!run.stderr.contains("building"), "{run:?}");
    lab.assert_serving(&v1);
}

#[test]
fn rollback_without_a_known_good_release() {
    let (lab, v1) = baseline();
    let before = lab.ledger_summary();
    let run = lab.run(&["rollback", "staging"]).expect(1);
    assert!(run.stderr.contains("error"), "{run:?}");
    assert_eq!(lab.ledger_summary(), before, "{run:?}");
    lab.assert_serving(&v1);
}

#[test]
fn unknown_environment() {
    let (lab, v1) = baseline();
    let before = lab.ledger_summary();
    lab.run(&["deploy", "prod"])
        .expect(1)
        .says(&["prod", "staging"]);
    assert_eq!(lab.ledger_summary(), before);
    lab.assert_serving(&v1);
}

#[test]
fn secret_whose_source_variable_is_missing() {
    let (lab, v1) = baseline();
    let before = lab.ledger_summary();
    let config = good_config_with(
        &lab,
        "[environments.staging]",
        "[secrets]\nAPI_TOKEN = { env = \"LAB_MISSING_TOKEN_VAR\" }\n\n[environments.staging]",
    );
    lab.commit_config(&config, "needs a secret");
    let run = lab
        .run_env(&["deploy", "staging"], &[("UNRELATED", "x")])
        .expect(1)
        .says(&["API_TOKEN", "LAB_MISSING_TOKEN_VAR"]);
    assert_eq!(lab.ledger_summary(), before, "{run:?}");
    lab.assert_serving(&v1);
}

#[test]
fn env_override_naming_a_secret_is_refused_without_printing_the_value() {
    const VALUE: &str = "topsecret-Jd93kq";
    let (lab, v1) = baseline();
    let config = good_config_with(
        &lab,
        "[environments.staging]",
        "[secrets]\nAPI_TOKEN = { env = \"LAB_TOKEN\" }\n\n[environments.staging]",
    );
    lab.commit_config(&config, "needs a secret");
    let before = lab.ledger_summary();
    let run = lab
        .run_env(
            &["deploy", "staging", "--env", &format!("API_TOKEN={VALUE}x")],
            &[("LAB_TOKEN", VALUE)],
        )
        .expect(1)
        .says(&["API_TOKEN"]);
    assert!(
        !run.stderr.contains(VALUE) && !run.stdout.contains(VALUE),
        "{run:?}"
    );
    assert_eq!(lab.ledger_summary(), before, "{run:?}");
    lab.assert_serving(&v1);
}

#[test]
fn dirty_tree_is_refused_with_a_hint() {
    let (lab, v1) = baseline();
    let before = lab.ledger_summary();
    std::fs::write(lab.repo.join("notes.txt"), "uncommitted\n").unwrap();
    let run = lab.deploy().expect(1).says(&["--allow-dirty"]);
    assert_eq!(lab.ledger_summary(), before, "{run:?}");
    lab.assert_serving(&v1);
}

#[test]
fn env_override_without_equals_is_a_usage_error() {
    let (lab, v1) = baseline();
    let before = lab.ledger_summary();
    lab.run(&["deploy", "staging", "--env", "BREAK"])
        .expect(2)
        .says(&["NAME=VALUE"]);
    assert_eq!(lab.ledger_summary(), before);
    lab.assert_serving(&v1);
}

#[test]
fn outside_a_repository_with_cutover_toml() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["deploy", "staging"])
        .current_dir(dir.path())
        .env_remove("CUTOVER_STATE_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cutover.toml") && err.contains("cutover init"),
        "{err}"
    );
}

// ------------------------------------------------------------------------------------------
// A new instance starts and fails: exit 3, the old version serves throughout
// ------------------------------------------------------------------------------------------

#[test]
fn run_command_that_does_not_exist() {
    failed_start(
        |lab| {
            good_config_with(
                lab,
                "command = [\"./tasks-app\"]",
                "command = [\"./no-such-app\"]",
            )
        },
        &["no-such-app"],
    );
}

#[test]
fn app_that_exits_at_once_shows_its_last_lines() {
    failed_start(
        |lab| {
            good_config_with(
                lab,
                "command = [\"./tasks-app\"]",
                "command = [\"sh\", \"-c\", \"echo bye-from-app; exit 1\"]",
            )
        },
        &["bye-from-app", "exit"],
    );
}

#[test]
fn health_path_that_404s() {
    failed_start(
        |lab| good_config_with(lab, "path = \"/health\"", "path = \"/healthz\""),
        &["404", "/healthz"],
    );
}

#[test]
fn https_probes_of_an_app_that_serves_plain_http_fail_and_say_so() {
    failed_start(
        |lab| {
            good_config_with(
                lab,
                "path = \"/health\"",
                "path = \"/health\"\nscheme = \"https\"",
            )
        },
        &["does not speak TLS", "scheme = \"http\""],
    );
}

#[test]
fn tls_and_notification_keys_with_bad_values() {
    let lab = Lab::new();
    let cases = [
        (
            good_config_with(
                &lab,
                "path = \"/health\"",
                "path = \"/health\"\nscheme = \"tls\"",
            ),
            vec!["scheme", "tls", "https"],
        ),
        (
            good_config_with(
                &lab,
                "path = \"/health\"",
                "path = \"/health\"\nca_bundle = \"ca.pem\"",
            ),
            vec!["[health] ca_bundle", "scheme = \"https\""],
        ),
        (
            format!(
                "{}\n[[notify]]\nurl = \"ftp://127.0.0.1/hook\"\n",
                lab.config()
            ),
            vec!["url", "not an http(s) URL", "https://"],
        ),
        (
            format!(
                "{}\n[[notify]]\nurl = \"https://127.0.0.1/hook\"\nformat = \"discord\"\n",
                lab.config()
            ),
            vec!["format", "discord", "slack", "teams"],
        ),
    ];
    drop(lab);
    for (config, needles) in cases {
        let run = refused_config(&config, &needles);
        assert!(run.stderr.contains("hint"), "{run:?}");
    }
}

#[test]
fn app_that_never_gets_healthy_hits_the_deadline() {
    failed_start(
        |lab| {
            // Listens on a port of its own, never on PORT: no probe ever connects.
            let other = free_port();
            good_config_with(
                lab,
                "command = [\"./tasks-app\"]",
                &format!("command = [\"sh\", \"-c\", \"PORT={other} exec ./tasks-app\"]"),
            )
            .replace("deadline = \"5s\"", "deadline = \"1s\"")
        },
        &["within 1s", "connection refused"],
    );
}
