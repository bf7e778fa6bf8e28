//! `[environments.X.edge]` through a real deploy: the limits reach the edge with the release
//! that serves, each answered clearly; a bad value is refused before anything changes.

use std::process::Command;

use crate::support::*;

/// `curl` with `args`; returns the status code it printed.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn edge_limits_apply_with_the_release_and_bad_ones_change_nothing() {
    let lab = Lab::new();
    let limited = format!(
        "{}\n[environments.staging.edge]\nmax_body = \"1KB\"\nupstream_timeout = \"5s\"\n",
        lab.config()
    );
    let v1 = lab.commit_config(&limited, "a 1 KB body limit");
    lab.deploy().expect(0);
    lab.assert_serving(&v1);
    let url = format!("http://{}/tasks", lab.listen);
    let big = "x".repeat(2000);
    assert_eq!(curl(&["-X", "POST", "--data", &big, &url]), "413");
    assert_eq!(
        curl(&[
            "-X",
            "POST",
            "-H",
            "Transfer-Encoding: chunked",
            "--data",
            &big,
            &url
        ]),
        "413"
    );
    assert_eq!(
        curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"title":"small"}"#,
            &url
        ]),
        "201"
    );

    // A bad value: refused before anything starts, naming the field and the fix.
    let broken = limited.replace("\"1KB\"", "\"1XB\"");
    lab.commit_config(&broken, "a typo");
    lab.deploy().expect(1).says(&[
        "[environments.staging.edge] max_body",
        "unknown unit",
        "hint:",
        "\"100MB\"",
    ]);
    lab.assert_serving(&v1);
    assert_eq!(curl(&["-X", "POST", "--data", &big, &url]), "413");

    // The defaults (100MB) with the next release.
    let v3 = lab.commit_config(&lab.config(), "the default limits");
    lab.deploy().expect(0);
    lab.assert_serving(&v3);
    assert_eq!(curl(&["-X", "POST", "--data", &big, &url]), "400");
    lab.run(&["down"]).expect(0);
}
