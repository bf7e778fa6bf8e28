//! `cutover maintenance` and `cutover pause`/`resume` through the real binary: what the edge
//! answers, what `status --json` shows, and the refusals.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// `curl -i` with `args`: the whole answer, head and body.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn maintenance_and_pause_are_answered_at_the_edge_recorded_and_shown() {
    let lab = Lab::new();
    let url = format!("http://{}/tasks", lab.listen);

    // Nothing deployed: no edge to tell; refused, nothing recorded.
    lab.run(&["maintenance", "staging", "on", "--message", "soon"])
        .expect(1)
        .says(&["deploy to staging first"]);
    lab.deploy().expect(0);
    assert!(lab.staging().get("maintenance").is_none());

    // Maintenance needs a message; then 503 with it, for browsers and for scripts.
    lab.run(&["maintenance", "staging", "on"])
        .expect(1)
        .says(&["needs a message", "hint:"]);
    lab.run(&[
        "maintenance",
        "staging",
        "on",
        "--message",
        "Back at <14:00>",
    ])
    .expect(0)
    .says(&[
        "staging is in maintenance",
        "cutover maintenance staging off",
    ]);
    let page = curl(&[&url]);
    assert!(page.starts_with("HTTP/1.1 503"), "{page}");
    assert!(page.to_lowercase().contains("retry-after: 60"), "{page}");
    assert!(page.contains("Back at &lt;14:00&gt;"), "{page}");
    let json = curl(&["-H", "Accept: application/json", &url]);
    assert!(json.contains(r#""message":"Back at <14:00>""#), "{json}");
    let env = lab.staging();
    assert_eq!(env["maintenance"]["message"], "Back at <14:00>", "{env:#}");
    assert!(env["maintenance"]["by"].is_string());
    let human = lab.run(&["status"]).expect(0);
    assert!(human.stdout.contains("in maintenance (503)"), "{human:?}");

    lab.run(&["maintenance", "staging", "off"]).expect(0);
    assert!(curl(&[&url]).starts_with("HTTP/1.1 200"));
    assert!(lab.staging().get("maintenance").is_none());
    lab.run(&["maintenance", "staging", "off"])
        .expect(1)
        .says(&["staging is not in maintenance"]);

    // A pause holds requests (not refused) until resumed.
    lab.run(&["pause", "staging", "--max", "10x"]).expect(2);
    lab.run(&["pause", "staging", "--max", "0s"])
        .expect(1)
        .says(&["out of range", "hint:"]);
    lab.run(&["pause", "staging", "--max", "30s"])
        .expect(0)
        .says(&["staging is paused", "cutover resume staging"]);
    assert!(lab.staging()["paused"]["until"].is_string());
    let held = {
        let url = url.clone();
        std::thread::spawn(move || (Instant::now(), curl(&[&url])))
    };
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !held.is_finished(),
        "a request was answered during the pause"
    );
    lab.run(&["resume", "staging"]).expect(0);
    let (started, answer) = held.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(lab.staging().get("paused").is_none());
    lab.run(&["resume", "staging"])
        .expect(1)
        .says(&["staging is not paused"]);

    // A pause that runs out lets its requests go by itself.
    lab.run(&["pause", "staging", "--max", "1s"]).expect(0);
    let started = Instant::now();
    assert!(curl(&[&url]).starts_with("HTTP/1.1 200"));
    assert!(started.elapsed() >= Duration::from_millis(500));
    lab.run(&["down"]).expect(0);
}
