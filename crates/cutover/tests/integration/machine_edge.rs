//! One edge per machine: apps in their own repositories and state dirs share a listen address
//! by host; a claim on another app's host is refused, nothing changed; `down` of one app
//! leaves the other serving; an unknown host gets a 404 that names nothing. The edge is
//! upgraded by `cutover edge upgrade`, and by the next server start of a replaced binary.

use std::time::Duration;

use crate::support::*;

/// A lab of app `app` whose staging listens on `listen` for `hosts` (none: every host), with
/// its commands on the machine edge of `edge`.
fn app(app: &str, edge: Option<&Lab>, listen: std::net::SocketAddr, hosts: &[&str]) -> Lab {
    let mut lab = Lab::with(|s| s.app = app.to_string());
    if let Some(first) = edge {
        let dir = first.edge_dir().to_string_lossy().into_owned();
        lab.env.push(("CUTOVER_EDGE_DIR".into(), dir));
    }
    lab.listen = listen;
    lab.commit_config(&with_hosts(&lab.config(), "staging", hosts), "hosts");
    lab
}

/// `config` with `hosts` added to environment `env` (none: left out).
fn with_hosts(config: &str, env: &str, hosts: &[&str]) -> String {
    if hosts.is_empty() {
        return config.to_string();
    }
    let header = format!("[environments.{env}]\n");
    let list = hosts
        .iter()
        .map(|h| format!("{h:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    config.replace(&header, &format!("{header}hosts = [{list}]\n"))
}

fn version(lab: &Lab, host: &str) -> Option<String> {
    match http_get_as(lab.listen, host, "/health") {
        Ok((200, body)) => json_field(&body, "version"),
        _ => None,
    }
}

#[test]
fn two_apps_share_one_address_by_host_and_claims_are_refused() {
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let alpha = app("alpha", None, listen, &["alpha.example.test"]);
    let beta = app("beta", Some(&alpha), listen, &["beta.example.test"]);
    alpha.deploy().expect(0);
    beta.deploy().expect(0);
    let (a1, b1) = (alpha.head(), beta.head());
    assert_eq!(
        version(&alpha, "alpha.example.test").as_deref(),
        Some(a1.as_str())
    );
    assert_eq!(
        version(&beta, "Beta.Example.Test:80").as_deref(),
        Some(b1.as_str())
    );
    // One edge for both: one pid file, in the shared edge dir.
    assert!(alpha.edge_dir().join("edge.pid").exists());
    assert!(!beta.edge_dir().join("edge.pid").exists());
    assert!(!alpha.state_dir().join("proxy").exists());

    // An unknown host: 404, naming neither app, environment nor path.
    let (code, body) = http_get_as(listen, "nobody.example.test", "/health").unwrap();
    assert_eq!(code, 404);
    for internal in ["alpha", "beta", "staging", ".cutover", "/health"] {
        assert!(!body.contains(internal), "the 404 names {internal}: {body}");
    }

    // A third app claiming alpha's host: exit 1, the claim named, nothing changed.
    let thief = app(
        "thief",
        Some(&alpha),
        listen,
        &["new.example.test", "alpha.example.test"],
    );
    thief.deploy().expect(1).says(&[
        "alpha.example.test",
        "claimed by alpha",
        &alpha.state_dir().canonicalize().unwrap().to_string_lossy(),
    ]);
    assert!(
        thief.history().iter().all(|r| r["state"] != "live"),
        "{:?}",
        thief.history()
    );
    assert_eq!(
        version(&alpha, "alpha.example.test").as_deref(),
        Some(a1.as_str())
    );
    assert_eq!(
        http_get_as(listen, "new.example.test", "/health")
            .unwrap()
            .0,
        404
    );

    // Without hosts on the shared address: refused too.
    let hostless = app("hostless", Some(&alpha), listen, &[]);
    hostless.deploy().expect(1).says(&["hosts"]);
    assert_eq!(
        version(&beta, "beta.example.test").as_deref(),
        Some(b1.as_str())
    );

    // The same app's staging and production on the address, by host.
    let production = format!(
        "{}\n[environments.production]\nlisten = \"{listen}\"\nhosts = [\"www.beta.example.test\", \"shop.beta.example.test\"]\n",
        with_hosts(&beta.config(), "staging", &["beta.example.test"])
    );
    let b2 = beta.commit_config(&production, "production beside staging");
    beta.run(&["deploy", "production"]).expect(0);
    assert_eq!(
        version(&beta, "www.beta.example.test").as_deref(),
        Some(b2.as_str())
    );
    assert_eq!(
        version(&beta, "beta.example.test").as_deref(),
        Some(b1.as_str())
    );
    // `status` names each environment's hosts beside its address.
    let shown = beta.run(&["status"]).expect(0);
    for line in [
        format!("production  {listen}  www.beta.example.test, shop.beta.example.test\n"),
        format!("staging  {listen}  beta.example.test\n"),
    ] {
        assert!(shown.stdout.contains(&line), "{line:?} in {shown:?}");
    }
    let hosts = |env: &str| {
        let status = beta.status();
        status["environments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == env)
            .map(|e| e["hosts"].clone())
            .unwrap_or_else(|| panic!("{env} in {status:#}"))
    };
    assert_eq!(
        hosts("production"),
        serde_json::json!(["www.beta.example.test", "shop.beta.example.test"])
    );
    assert_eq!(hosts("staging"), serde_json::json!(["beta.example.test"]));

    // `down` of alpha removes alpha's route only; beta serves on; the edge still runs.
    alpha.run(&["down"]).expect(0);
    assert_eq!(
        http_get_as(listen, "alpha.example.test", "/health")
            .unwrap()
            .0,
        404
    );
    assert_eq!(
        version(&beta, "beta.example.test").as_deref(),
        Some(b1.as_str())
    );
    let edge = std::fs::read_to_string(alpha.edge_dir().join("edge.pid")).unwrap();
    let edge: u32 = edge.trim().parse().unwrap();
    assert!(alpha.owns(edge), "the edge stopped with routes left");

    // `down` of the last app: the edge exits, nothing is left listening.
    beta.run(&["down"]).expect(0);
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        !alpha.owns(edge)
    });
    assert!(gone, "the edge outlived its last route");
    assert!(std::net::TcpStream::connect(listen).is_err());
}

/// An edge of the older kind (one per environment, under the state dir's `proxy/`) is stopped
/// by the first server that meets it, and its route — upstreams and hold — is taken over by the
/// machine edge before the deploy goes on.
#[test]
fn an_edge_of_the_older_kind_is_stopped_and_its_route_taken_over() {
    let lab = Lab::new();
    let proxy_dir = lab.state_dir().join("proxy");
    std::fs::create_dir_all(&proxy_dir).unwrap();
    // What the old edge routed to: an upstream that answers.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let old_upstream = upstream.local_addr().unwrap();
    std::fs::write(
        proxy_dir.join("staging.routes.json"),
        format!(
            "{{\"generation\":4,\"routes\":[{{\"route\":{{\"env\":\"staging\"}},\"upstreams\":[{{\"addr\":\"{old_upstream}\",\"weight\":100}}]}}]}}"
        ),
    )
    .unwrap();
    // The old edge itself: a process named like `cutover proxy … --env staging`, holding the
    // listen address, that exits on SIGTERM.
    let mut old = std::process::Command::new("python3")
        .args([
            "-c",
            "import socket,sys,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(60)",
            &lab.listen.port().to_string(),
            "proxy",
            "--env",
            "staging",
        ])
        .spawn()
        .unwrap();
    std::fs::write(proxy_dir.join("staging.pid"), format!("{}\n", old.id())).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let v1 = lab.head();
    lab.deploy().expect(0);
    lab.assert_serving(&v1);
    // The old edge was stopped, its files are gone, and the machine edge served its route first.
    let stopped = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        old.try_wait().unwrap().is_some()
    });
    assert!(stopped, "the old edge still runs");
    assert!(!proxy_dir.join("staging.pid").exists());
    assert!(!proxy_dir.join("staging.routes.json").exists());
    let log = std::fs::read_to_string(lab.edge_dir().join("edge.log")).unwrap();
    assert!(log.contains(&format!("to {old_upstream} (100)")), "{log}");
    drop(upstream);
}

/// `cutover edge upgrade` under a watcher: the new edge takes the sockets over, the old one
/// exits, and not one request through it fails; `cutover edge status` names the new one.
#[test]
fn edge_upgrade_hands_the_sockets_over_and_drops_nothing() {
    let lab = Lab::new();
    // No edge yet: nothing to upgrade or show.
    lab.run(&["edge", "upgrade"])
        .expect(1)
        .says(&["no edge runs in", "deploy an environment"]);
    lab.run(&["edge", "status"])
        .expect(1)
        .says(&["no edge runs"]);

    let v1 = lab.head();
    lab.deploy().expect(0);
    let status = lab.run(&["edge", "status", "--json"]).expect(0).json();
    let old = status["pid"].as_u64().unwrap() as u32;
    let shown = lab.run(&["edge", "status"]).expect(0);
    assert!(shown.stdout.contains(&lab.listen.to_string()), "{shown:?}");
    assert!(shown.stdout.contains("staging of lab"), "{shown:?}");

    let watch = lab.watch();
    watch.wait_for(5);
    let run = lab.run(&["edge", "upgrade"]).expect(0).says(&[
        "edge upgraded",
        &format!("pid {old}"),
        "handed its listening sockets",
    ]);
    let new = lab.run(&["edge", "status", "--json"]).expect(0).json()["pid"]
        .as_u64()
        .unwrap() as u32;
    assert_ne!(new, old, "{run:?}");
    assert!(run.stderr.contains(&format!("pid {new}")), "{run:?}");
    let gone = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        !lab.owns(old)
    });
    assert!(gone, "the old edge did not exit");
    watch.wait_for(20);
    let seen = watch.stop();
    assert!(
        seen.iter().all(|s| s.as_deref() == Ok(v1.as_str())),
        "every request was served through the upgrade: {seen:?}"
    );
    lab.assert_serving(&v1);
}

/// `cutover server restart`, as a user runs it after an install: the server goes (its
/// instances and the edge run on) and a new one of the lab's binary starts. What it said.
fn restart_server(lab: &Lab) -> Run {
    let pid_file = lab.state_dir().join("server.pid");
    let server: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(lab.owns(server), "no server runs as pid {server}");
    let run = lab
        .run(&["server", "restart"])
        .expect(0)
        .says(&["restarted the server", &format!("pid {server} (cutover")]);
    assert!(!alive(server), "the old server still runs: {run:?}");
    run
}

/// What `cutover edge status --json` says.
fn edge_status(lab: &Lab) -> serde_json::Value {
    lab.run(&["edge", "status", "--json"]).expect(0).json()
}

/// An install of a new cutover binary (written beside the old one and renamed over it, as
/// installers do) is what the running edge notices (`binary_replaced`, and said by `cutover
/// edge status`); the next server start — of the new binary — upgrades the edge to it by
/// handover: a new edge pid, the old edge gone, not one request of the watcher failed. A server
/// restart without a new binary, and a deploy by a server whose own binary was replaced, leave
/// the edge as it is.
#[test]
fn a_server_started_from_a_replaced_binary_upgrades_the_edge_and_drops_nothing() {
    let mut lab = Lab::new();
    let bin = lab.root().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join("cutover");
    std::fs::copy(env!("CARGO_BIN_EXE_cutover"), &exe).unwrap();
    lab.exe = exe.clone();

    lab.deploy().expect(0);
    let first = edge_status(&lab);
    let old = first["pid"].as_u64().unwrap() as u32;
    assert_eq!(
        first["exe"].as_str(),
        exe.canonicalize().unwrap().to_str(),
        "{first:#}"
    );
    assert!(first.get("binary_replaced").is_none(), "{first:#}");

    // A server restart with the same binary: the same edge.
    restart_server(&lab);
    assert_eq!(edge_status(&lab)["pid"].as_u64(), Some(u64::from(old)));

    let beside = bin.join(".cutover.new");
    std::fs::copy(env!("CARGO_BIN_EXE_cutover"), &beside).unwrap();
    std::fs::rename(&beside, &exe).unwrap();
    let replaced = edge_status(&lab);
    assert_eq!(
        replaced["pid"].as_u64(),
        Some(u64::from(old)),
        "{replaced:#}"
    );
    assert_eq!(replaced["binary_replaced"], true, "{replaced:#}");
    // The running server's binary was replaced too: its deploy leaves the edge alone.
    let v2 = lab.commit("second");
    lab.deploy().expect(0).says(&[
        "the server (pid",
        "runs a binary that was replaced on disk since it started; `cutover server restart` moves it",
    ]);
    lab.assert_serving(&v2);
    let still = edge_status(&lab);
    assert_eq!(still["pid"].as_u64(), Some(u64::from(old)), "{still:#}");
    assert_eq!(still["binary_replaced"], true, "{still:#}");
    let shown = lab.run(&["edge", "status"]).expect(0);
    for needle in [
        "was replaced on disk",
        "the next server start (`cutover server restart`) or `cutover edge upgrade` moves it to the new binary",
    ] {
        assert!(shown.stdout.contains(needle), "{shown:?}");
    }

    let watch = lab.watch();
    watch.wait_for(5);
    let restarted = restart_server(&lab);
    let upgraded = edge_status(&lab);
    let new = upgraded["pid"].as_u64().unwrap() as u32;
    assert_ne!(new, old, "the edge was not upgraded: {upgraded:#}");
    assert!(upgraded.get("binary_replaced").is_none(), "{upgraded:#}");
    let gone = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        !lab.owns(old)
    });
    assert!(gone, "the old edge did not exit");
    // The restart says what the new server did first.
    assert!(
        restarted.stderr.contains(&format!(
            "edge upgraded: pid {old} (cutover {}) handed its listening sockets to pid {new}",
            env!("CARGO_PKG_VERSION")
        )),
        "{restarted:?}"
    );
    let log = std::fs::read_to_string(lab.state_dir().join("logs/server.log")).unwrap();
    assert!(
        log.contains(&format!(
            "edge upgraded: pid {old} (cutover {}) handed its listening sockets to pid {new}",
            env!("CARGO_PKG_VERSION")
        )) && log.contains("was replaced on disk"),
        "{log}"
    );
    watch.wait_for(20);
    let seen = watch.stop();
    assert!(
        seen.iter().all(|s| s.as_deref() == Ok(v2.as_str())),
        "every request was served through the upgrade: {seen:?}"
    );
    lab.assert_serving(&v2);

    // The new server runs the new binary: nothing more to say about it.
    let after = lab.run(&["status"]).expect(0);
    assert!(!after.stderr.contains("replaced on disk"), "{after:?}");

    // The new edge runs the new binary: a further server start leaves it be.
    restart_server(&lab);
    assert_eq!(edge_status(&lab)["pid"].as_u64(), Some(u64::from(new)));
}
