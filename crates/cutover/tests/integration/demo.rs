//! `cutover demo`, the README's first command: the course lab end to end, narrated, on its own
//! repository, server and edge, all stopped at its end.

use std::process::{Command, Stdio};
use std::time::Instant;

use crate::support::*;

#[test]
fn the_demo_runs_the_course_lab_end_to_end_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .arg("demo")
        .current_dir(dir.path())
        .env_remove("CUTOVER_STATE_DIR")
        .env_remove("CUTOVER_EDGE_DIR")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = wait_run((child, vec!["demo".into()], Instant::now()));
    let run = run.expect(0);
    let all = format!("{}{}", run.stdout, run.stderr);
    for needle in [
        "== Part A",
        "== Part B",
        "== Part C",
        "(exit code 3, as expected)",
        "$ cutover rollback staging",
        "== Done",
        "stopped",
    ] {
        assert!(
            all.contains(needle),
            "the demo did not say {needle:?}: {all}"
        );
    }
    // Its repository named its server; that server is gone.
    let server = all
        .split("started the server in the background (pid ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("the demo named no server: {all}"));
    eventually(
        std::time::Duration::from_secs(10),
        "the demo's server to exit",
        || (!alive(server)).then_some(()),
    );
}
