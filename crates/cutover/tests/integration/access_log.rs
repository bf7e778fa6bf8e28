//! `cutover logs ENV --access [-f]`: the edge's access log through the real binary.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

#[test]
fn logs_access_shows_one_json_line_per_request_and_follows() {
    let lab = Lab::new();
    let v1 = lab.head();
    lab.deploy().expect(0);
    lab.assert_serving(&v1);
    let release = lab.staging()["live"]["release"].as_i64().unwrap();
    // The edge writes its access log every 100 ms: count what is there once it has settled
    // (the requests of the deploy's own checks may still be on their way to the file).
    let count = || {
        lab.run(&["logs", "staging", "--access", "-n", "1000"])
            .expect(0)
            .stdout
            .lines()
            .count()
    };
    let mut seen = count();
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let now = count();
        if now == seen {
            break;
        }
        seen = now;
    }
    assert_eq!(lab.get("/tasks").unwrap().0, 200);
    assert_eq!(lab.get("/nowhere").unwrap().0, 404);

    // The edge writes its access log every 100 ms (serving threads only fill a buffer).
    let mut tries = 0;
    let (run, lines) = loop {
        let run = lab
            .run(&["logs", "staging", "--access", "-n", "1000"])
            .expect(0);
        let lines: Vec<Value> = run
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        tries += 1;
        if lines.len() >= seen + 2 || tries == 40 {
            break (run, lines);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(lines.len(), seen + 2, "{run:?}");
    let (tasks, nowhere) = (&lines[seen], &lines[seen + 1]);
    assert_eq!(tasks["path"], "/tasks");
    assert_eq!(tasks["status"], 200);
    assert_eq!(tasks["release"], release);
    assert!(
        tasks["instance"].as_str().unwrap().starts_with("staging-"),
        "{tasks}"
    );
    assert_eq!(nowhere["status"], 404);
    assert_eq!(nowhere["request_id"].as_str().unwrap().len(), 32);

    // -f prints requests as they come.
    let (mut child, _, _) = lab.spawn(&["logs", "staging", "--access", "-f", "-n", "0"]);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(lab.get("/followed").unwrap().0, 404);
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("logs -f printed the request");
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["path"], "/followed");
    child.kill().unwrap();
    let _ = child.wait();
    lab.run(&["down"]).expect(0);
}
