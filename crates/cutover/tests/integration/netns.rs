//! Issue 10 across machines: two target "machines" as Linux network namespaces, each reached
//! over its own veth pair and running its own `cutover server --listen` on its own state dir;
//! the CLI, in the root namespace, drives staging on one and production on the other from one
//! `cutover.toml`. `requires` and `promote` are relayed across them; a link taken down
//! mid-deploy (`ip link set … down`) leaves the release to run to its end on its server, and the
//! CLI follows it when the link comes back, or exits 5 saying how to follow it.
//!
//! Needs root and `ip netns`; skips with the reason elsewhere, and fails in CI
//! (`CUTOVER_REQUIRE_NETNS=1`).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::remote::{serving, token, wait_for_version, Remote};
use crate::support::{free_port, wait_run, Lab};

/// A network namespace with a veth pair to the root namespace: another machine, as far as
/// addresses go. Removed (with its link) when dropped.
pub(crate) struct Machine {
    pub(crate) ns: String,
    host_if: String,
    /// The machine's address, reachable from the root namespace.
    pub(crate) ip: String,
}

static MACHINES: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Machine {
    fn new() -> Result<Machine, String> {
        let n = MACHINES.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // A /30 of its own: 10.<200+n>.<pid>.0, the root namespace's end .1, the machine .2.
        let net = format!("10.{}.{}", 200 + n % 50, pid % 250);
        let machine = Machine {
            ns: format!("cutover-t{pid}-{n}"),
            host_if: format!("cv{}x{n}", pid % 100_000),
            ip: format!("{net}.2"),
        };
        let host_ip = format!("{net}.1");
        let peer = format!("{}p", machine.host_if);
        ip(&["netns", "add", &machine.ns])?;
        ip(&[
            "link",
            "add",
            &machine.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &machine.ns])?;
        ip(&[
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &machine.host_if,
        ])?;
        ip(&["link", "set", &machine.host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &machine.ns, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{}/30", machine.ip), "dev", &peer])?;
        inside(&["link", "set", &peer, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(machine)
    }

    /// Takes the machine's link down (nothing reaches it, and nothing says so) or up again.
    pub(crate) fn link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]).unwrap();
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.ns]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

/// Two machines, or `None` (with the reason printed) where network namespaces cannot be made;
/// in CI (`CUTOVER_REQUIRE_NETNS=1`) that is a failure.
pub(crate) fn two_machines() -> Option<(Machine, Machine)> {
    match Machine::new().and_then(|a| Ok((a, Machine::new()?))) {
        Ok(pair) => Some(pair),
        Err(e) if std::env::var_os("CUTOVER_REQUIRE_NETNS").is_some() => {
            panic!("CUTOVER_REQUIRE_NETNS is set, but network namespaces cannot be made: {e}")
        }
        Err(e) => {
            eprintln!(
                "skipping: network namespaces cannot be made here (needs root and `ip netns`): {e}"
            );
            None
        }
    }
}

/// A server's certificate fingerprint, as `cutover server info` shows it there.
fn pin(remote: &Remote) -> String {
    remote.cli(&["server", "info", "--json"]).expect(0).json()["fingerprint"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The newest release of `env` on `remote`'s server, asked over its unix socket (which the
/// dropped link does not cut).
fn newest(remote: &Remote, env: &str) -> Option<Value> {
    let history = remote.cli(&["history", env, "--json"]).json();
    history["releases"].as_array()?.first().cloned()
}

/// Waits until `remote` has a release of `env` newer than `after` that is starting or
/// verifying, and a little longer, so that the line naming it reaches the CLI (a link that
/// drops before it did leaves the CLI nothing to follow: exit 5, `cutover history`); its id.
fn wait_in_flight(remote: &Remote, env: &str, after: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(r) = newest(remote, env) {
            let id = r["id"].as_i64().unwrap();
            let state = r["state"].as_str().unwrap_or("");
            if id > after && matches!(state, "starting" | "verifying" | "pending") {
                std::thread::sleep(Duration::from_millis(300));
                return id;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no release of {env} got under way");
}

#[test]
fn staging_and_production_on_two_machines_with_their_own_secrets_promote_across_and_outlast_a_dropped_link(
) {
    let Some((a, b)) = two_machines() else {
        return;
    };
    // Each machine has its own value of the secret marked `on = "server"`; the CLI has none.
    let staging_server = Remote::start_in(&a.ns, &a.ip, &[("CUTOVER_T_GREETING", "hello from a")]);
    let production_server =
        Remote::start_in(&b.ns, &b.ip, &[("CUTOVER_T_GREETING", "hello from b")]);
    let (url_a, url_b) = (
        format!("https://{}", staging_server.addr),
        format!("https://{}", production_server.addr),
    );
    let (pin_a, pin_b) = (pin(&staging_server), pin(&production_server));
    let (bot_a, bot_b) = (
        token(&staging_server, "ana", "deploy"),
        token(&production_server, "ana", "deploy"),
    );
    let staging = format!("{}:{}", a.ip, free_port());
    let production = format!("{}:{}", b.ip, free_port());

    // Every instance takes 2 s to start, so that a link can be taken down mid-deploy.
    let mut lab = Lab::with(|s| {
        s.run = "command = [\"sh\", \"-c\", \"sleep 2; exec ./tasks-app\"]\nstop_timeout = \"2s\""
            .into();
        s.health = s.health.replace("deadline = \"5s\"", "deadline = \"20s\"");
        s.extra = "[secrets]\nGREETING = { env = \"CUTOVER_T_GREETING\", on = \"server\" }".into();
    });
    let logins = tempfile::tempdir().unwrap();
    lab.env.push((
        "XDG_CONFIG_HOME".into(),
        logins.path().to_str().unwrap().into(),
    ));
    let text = lab.config().replace(
        &format!("listen = \"{}\"", lab.listen),
        &format!("listen = \"{staging}\"\nserver = \"{url_a}\""),
    ) + &format!(
        "\n[environments.production]\nlisten = \"{production}\"\nserver = \"{url_b}\"\nrequires = [\"staging\"]\n"
    );
    let v1 = lab.commit_config(&text, "staging on a, production on b");
    lab.run(&["login", &url_a, "--fingerprint", &pin_a, "--token", &bot_a])
        .expect(0);
    lab.run(&["login", &url_b, "--fingerprint", &pin_b, "--token", &bot_b])
        .expect(0);

    lab.run(&["deploy", "staging"])
        .expect(0)
        .says(&[&format!("on {url_a}"), "1 of 1 blobs"]);
    wait_for_version(&staging, &v1);
    // Its monitor window (1 s) closes: v1 is known-good in staging.
    crate::support::eventually(Duration::from_secs(20), "staging's window to close", || {
        newest(&staging_server, "staging")
            .filter(|r| r["known_good"] == true)
            .map(|_| ())
    });

    // Promote across the machines: the same digest, nothing rebuilt, the blob relayed.
    let run = lab.run(&["promote", "staging", "production"]).expect(0);
    assert!(run.stderr.contains("1 of 1 blobs"), "{run:?}");
    wait_for_version(&production, &v1);
    // Each machine's secret, resolved there.
    for (addr, greeting) in [(&staging, "hello from a"), (&production, "hello from b")] {
        let (code, body) = crate::support::http_get(addr.parse().unwrap(), "/").unwrap();
        assert_eq!(code, 200);
        assert!(body.contains(greeting), "{addr}: {body}");
    }
    let promoted = newest(&production_server, "production").unwrap();
    let source = newest(&staging_server, "staging").unwrap();
    assert_eq!(promoted["kind"], "promote", "{promoted:#}");
    assert_eq!(promoted["digest"], source["digest"], "{promoted:#}");
    assert_eq!(promoted["requested_by"], "ana", "{promoted:#}");
    let shown = production_server
        .cli(&["show", &promoted["id"].to_string(), "--json"])
        .expect(0)
        .json();
    assert_eq!(
        shown["release"]["promoted_from"]["environment"],
        format!("staging on {url_a}"),
        "{shown:#}"
    );
    assert!(
        shown["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "requires" && e["message"].as_str().unwrap().contains(&url_a)),
        "the relayed `requires` is on record: {shown:#}"
    );

    // The links drop mid-deploy, for longer than the CLI waits for a heartbeat (15 s):
    // staging's CLI reconnects and follows its release to the end (exit 0); production's, told
    // to try for 2 s only, exits 5 and says how to follow; following it then gives its outcome.
    let v2 = lab.commit("second");
    let before_a = newest(&staging_server, "staging").unwrap()["id"]
        .as_i64()
        .unwrap();
    let before_b = promoted["id"].as_i64().unwrap();
    // (Production first: its deploy asks staging's machine whether v1 passed there.)
    let deploy_b = lab.spawn_env(
        &["deploy", "production", "--version", &v1],
        &[("CUTOVER_RECONNECT", "2s")],
    );
    let id_b = wait_in_flight(&production_server, "production", before_b);
    b.link(false);
    let deploy_a = lab.spawn(&["deploy", "staging"]);
    let id_a = wait_in_flight(&staging_server, "staging", before_a);
    a.link(false);
    let dropped = Instant::now();
    // Both releases run to their end on their servers, links down or not.
    crate::support::eventually(Duration::from_secs(30), "both releases to go live", || {
        let a_live = newest(&staging_server, "staging").filter(|r| r["state"] == "live");
        let b_live = newest(&production_server, "production").filter(|r| r["state"] == "live");
        a_live.and(b_live)
    });
    let run_b = wait_run(deploy_b);
    let run_b = run_b.expect(5);
    assert!(
        run_b.stderr.contains("broke off") && run_b.stderr.contains("unknown"),
        "{run_b:?}"
    );
    let follow = format!("cutover show {id_b} --env production --follow");
    assert!(run_b.stderr.contains(&follow), "{run_b:?}");
    std::thread::sleep(Duration::from_secs(18).saturating_sub(dropped.elapsed()));
    a.link(true);
    b.link(true);
    let run_a = wait_run(deploy_a).expect(0);
    assert!(
        run_a.stderr.contains("broke off")
            && run_a.stderr.contains("reached")
            && run_a.stderr.contains(&format!("release {id_a} went live")),
        "{run_a:?}"
    );
    wait_for_version(&staging, &v2);
    lab.run(&["show", &id_b.to_string(), "--env", "production", "--follow"])
        .expect(0)
        .says(&[&format!("release {id_b} went live")]);
    assert_eq!(serving(&production).as_deref(), Some(v1.as_str()));

    // `requires` is asked of the other machine: a commit staging never ran is refused.
    lab.commit("third, never in staging");
    lab.run(&["deploy", "production"])
        .expect(1)
        .says(&["has not passed staging's monitor window"]);
    assert_eq!(
        newest(&production_server, "production").unwrap()["id"],
        id_b
    );

    // A token whose role is read may look there, not deploy; nothing changes.
    let viewer = token(&production_server, "viewer", "read");
    let read_only = [
        ("CUTOVER_TOKEN", viewer.as_str()),
        ("CUTOVER_SERVER_FINGERPRINT", pin_b.as_str()),
    ];
    lab.run_env(&["history", "production"], &read_only)
        .expect(0);
    lab.run_env(&["deploy", "production", "--version", &v1], &read_only)
        .expect(1)
        .says(&["role read", "needs deploy"]);
    assert_eq!(
        newest(&production_server, "production").unwrap()["id"],
        id_b
    );

    // A wrong pin for a machine is refused naming both fingerprints; nothing changes there.
    let wrong = format!("sha256:{}", "1".repeat(64));
    lab.run_env(
        &["deploy", "production"],
        &[
            ("CUTOVER_SERVER_FINGERPRINT", wrong.as_str()),
            ("CUTOVER_TOKEN", bot_b.as_str()),
        ],
    )
    .expect(1)
    .says(&[&pin_b, &wrong]);
    assert_eq!(
        newest(&production_server, "production").unwrap()["id"],
        id_b,
        "nothing was deployed"
    );
}
