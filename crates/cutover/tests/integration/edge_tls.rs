//! HTTPS at the edge: certificates from files, as a user meets them through `cutover deploy`.

use crate::support::*;
use cutover_http::testing::TestCa;
use std::fs;
use std::time::Duration;

/// `tls = { cert, key }` with `hosts`, appended to the staging environment.
fn with_tls(lab: &Lab, hosts: &str, cert: &str, key: &str) -> String {
    format!(
        "{}hosts = [{hosts}]\ntls = {{ cert = \"{cert}\", key = \"{key}\" }}\n",
        lab.config()
    )
}

#[test]
fn every_bad_certificate_file_refuses_the_deploy_naming_the_field_and_the_fix() {
    let lab = Lab::new();
    let v1 = lab.head();
    lab.deploy().expect(0);
    lab.assert_serving(&v1);
    let before = lab.ledger_summary();

    let ca = TestCa::new("lab CA");
    let certs = lab.repo.join("certs");
    fs::create_dir_all(&certs).unwrap();
    let good = ca.issue(&["tasks.example.com"]);
    let other = ca.issue(&["tasks.example.com"]);
    let expired = ca.issue_expired(&["tasks.example.com"]);
    let put = |name: &str, text: &[u8]| fs::write(certs.join(name), text).unwrap();
    put("good.crt", good.cert_pem.as_bytes());
    put("good.key", good.key_pem.as_bytes());
    put("other.key", other.key_pem.as_bytes());
    put("old.crt", expired.cert_pem.as_bytes());
    put("old.key", expired.key_pem.as_bytes());
    put("der.crt", good.cert_der());
    put("text.key", b"not a key\n");

    let host = "\"tasks.example.com\"";
    // (hosts, cert, key, what stderr must say)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            host,
            "certs/missing.crt",
            "certs/good.key",
            &[
                "[environments.staging] tls.cert",
                "missing.crt does not exist",
                "hint: put the certificate chain (PEM, leaf first) there",
            ],
        ),
        (
            host,
            "certs/good.crt",
            "certs/missing.key",
            &[
                "[environments.staging] tls.key",
                "missing.key does not exist",
                "hint: put the private key",
            ],
        ),
        (
            host,
            "certs",
            "certs/good.key",
            &[
                "[environments.staging] tls.cert",
                "cannot be read",
                "hint: make the file readable",
            ],
        ),
        (
            host,
            "certs/der.crt",
            "certs/good.key",
            &[
                "tls.cert",
                "holds no PEM certificate",
                "hint: give the certificate chain in PEM",
            ],
        ),
        (
            host,
            "certs/good.crt",
            "certs/text.key",
            &[
                "tls.key",
                "holds no PEM private key",
                "hint: give the certificate's private key in PEM",
            ],
        ),
        (
            host,
            "certs/old.crt",
            "certs/old.key",
            &[
                "tls.cert",
                "expired on 2001-01-01",
                "hint: renew the certificate",
            ],
        ),
        (
            host,
            "certs/good.crt",
            "certs/other.key",
            &[
                "tls.key",
                "does not belong to the certificate",
                "hint: give the private key the certificate was issued for",
            ],
        ),
        (
            "\"tasks.example.com\", \"www.example.com\"",
            "certs/good.crt",
            "certs/good.key",
            &[
                "[environments.staging] hosts",
                "does not cover www.example.com (it covers tasks.example.com)",
                "hint: use a certificate that names www.example.com",
            ],
        ),
    ];
    for (hosts, cert, key, needles) in cases {
        lab.commit_config(&with_tls(&lab, hosts, cert, key), "tls");
        let run = lab.deploy().expect(1).says(needles);
        assert_eq!(run.stderr.matches("error:").count(), 1, "{run:?}");
        assert_eq!(lab.ledger_summary(), before, "the ledger changed: {run:?}");
        lab.assert_serving(&v1);
    }
}

/// `curl ARGS` with the lab's host resolved to the edge; returns (exit code, stdout, stderr).
fn curl(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const HOST: &str = "tasks.example.com";

/// A WebSocket to `/ws` over TLS through the edge (rustls, trusting `ca`), with the version
/// that answered.
fn open_wss(
    port: u16,
    ca: &TestCa,
) -> (
    tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>,
    String,
) {
    let config = cutover_http::testing::client_trusting(&ca.pem(), &[]);
    let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let stream = rustls::StreamOwned::new(conn, tcp);
    let (socket, response) = tungstenite::client(format!("wss://{HOST}:{port}/ws"), stream)
        .expect("the WebSocket handshake passes through the edge over TLS");
    let version = response.headers()["x-app-version"]
        .to_str()
        .unwrap()
        .to_string();
    (socket, version)
}

#[track_caller]
fn echo<S: std::io::Read + std::io::Write>(socket: &mut tungstenite::WebSocket<S>, text: &str) {
    socket.send(tungstenite::Message::text(text)).unwrap();
    let reply = socket.read().expect("an echo");
    assert_eq!(reply.into_text().unwrap().as_str(), text);
}

#[test]
fn https_with_http2_hsts_421_redirect_and_websockets_through_a_cut_over() {
    let lab = Lab::new();
    let ca = TestCa::new("lab CA");
    let ca_file = ca.write(&lab.repo.join("ca.pem"));
    let certs = lab.repo.join("certs");
    fs::create_dir_all(&certs).unwrap();
    let site = ca.issue(&[HOST]);
    fs::write(certs.join("site.crt"), &site.cert_pem).unwrap();
    fs::write(certs.join("site.key"), &site.key_pem).unwrap();
    let redirect = free_port();
    let config = format!(
        "{}hosts = [\"{HOST}\"]\ntls = {{ cert = \"certs/site.crt\", key = \"certs/site.key\" }}\nhttp_redirect = \"127.0.0.1:{redirect}\"\n\n[environments.staging.edge]\nhsts = true\n",
        lab.config()
    );
    let v1 = lab.commit_config(&config, "https");
    lab.deploy().expect(0);
    let port = lab.listen.port();
    let resolve = format!("{HOST}:{port}:127.0.0.1");
    let url = format!("https://{HOST}:{port}/");
    let ca_path = ca_file.to_str().unwrap();
    let https = |extra: &[&str]| {
        let mut args = vec!["--cacert", ca_path, "--resolve", &resolve];
        args.extend_from_slice(extra);
        curl(&args)
    };

    // HTTP/2 by ALPN, verified against the lab's CA, with HSTS.
    let (code, out, err) = https(&[
        "--http2",
        "-D",
        "-",
        "-w",
        "\nversion=%{http_version}",
        &url,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("tasks-app {v1}")), "{out}");
    assert!(out.ends_with("version=2"), "HTTP/2 was used: {out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{out}"
    );
    // HTTP/1.1 over TLS too.
    let (code, out, err) = https(&["--http1.1", "-w", "\nversion=%{http_version}", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("version=1.1"), "{out}");
    // A Host that disagrees with the SNI: 421, never passed on (over HTTP/1.1 and HTTP/2).
    for version in ["--http1.1", "--http2"] {
        let (code, out, err) = https(&[
            version,
            "-H",
            "Host: other.example.com",
            "-w",
            "\nstatus=%{http_code}",
            &url,
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(out.ends_with("status=421"), "{version}: {out}");
        assert!(!out.contains("tasks-app"), "{out}");
    }
    // A name the edge has no certificate for: the handshake fails.
    let other = format!("other.example.com:{port}:127.0.0.1");
    let (code, _, _) = curl(&[
        "--cacert",
        ca_path,
        "--resolve",
        &other,
        &format!("https://other.example.com:{port}/"),
    ]);
    assert_ne!(code, 0);

    // http_redirect: 308 to https://, path and query kept; unknown hosts get 404.
    let plain = format!("http://127.0.0.1:{redirect}/tasks?page=2");
    let (code, out, err) = curl(&[
        "-H",
        &format!("Host: {HOST}"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        &plain,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("308 https://{HOST}:{port}/tasks?page=2"));
    let (_, out, _) = curl(&[
        "-H",
        "Host: nobody.example.com",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &plain,
    ]);
    assert_eq!(out, "404");
    // curl follows it to the HTTPS edge.
    let redirect_resolve = format!("{HOST}:{redirect}:127.0.0.1");
    let (code, out, err) = https(&[
        "-L",
        "--resolve",
        &redirect_resolve,
        &format!("http://{HOST}:{redirect}/"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("tasks-app {v1}")), "{out}");

    // A WebSocket over TLS stays on its version through a cut-over; a new one goes to the new.
    let (mut on_v1, version) = open_wss(port, &ca);
    assert_eq!(version, v1);
    echo(&mut on_v1, "before");
    let v2 = lab.commit("second");
    lab.deploy().expect(0);
    let (code, out, err) = https(&[&url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("tasks-app {v2}")), "{out}");
    echo(&mut on_v1, "through the cut-over");
    let (mut on_v2, version) = open_wss(port, &ca);
    assert_eq!(version, v2);
    echo(&mut on_v2, "on the new version");

    // `cutover edge upgrade` hands the TLS listeners over too: fresh TLS connections (a curl
    // each, HTTP/2 and HTTP/1.1 in turn) all answer through it, the WebSocket open over TLS
    // on the old edge stays open (until its drain), and http_redirect still redirects.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, ca_path, resolve, url) = (
            stop.clone(),
            ca_path.to_string(),
            resolve.clone(),
            url.clone(),
        );
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            for n in 0..2000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let version = if n % 2 == 0 { "--http2" } else { "--http1.1" };
                let (code, out, err) =
                    curl(&["--cacert", &ca_path, "--resolve", &resolve, version, &url]);
                answers.push((code, out, err));
            }
            answers
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    lab.run(&["edge", "upgrade"])
        .expect(0)
        .says(&["edge upgraded", "handed its listening sockets"]);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = load.join().unwrap();
    assert!(answers.len() >= 3, "{answers:?}");
    let failed: Vec<_> = answers
        .iter()
        .filter(|(code, out, _)| *code != 0 || !out.contains(&format!("tasks-app {v2}")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed through the upgrade: {failed:?}",
        failed.len(),
        answers.len()
    );
    echo(&mut on_v2, "through the edge upgrade");
    let (_, out, _) = curl(&[
        "-H",
        &format!("Host: {HOST}"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &plain,
    ]);
    assert_eq!(out, "308", "http_redirect after the upgrade");
    lab.run(&["down"]).expect(0);
}

/// A lab, the port its `http_redirect` will use, and Pebble validating HTTP-01 on that port and
/// TLS-ALPN-01 on the lab's `listen`; none when Pebble is not installed (and not required).
fn pebble_lab() -> Option<(Lab, u16, cutover_http::testing::Pebble)> {
    let lab = Lab::new();
    let redirect = free_port();
    let pebble_dir = lab.repo.with_extension("pebble");
    let pebble = cutover_http::testing::Pebble::start(&pebble_dir, redirect, lab.listen.port())?;
    Some((lab, redirect, pebble))
}

/// Pebble's issuing root (it changes with every Pebble) in a file, for `curl --cacert`.
fn issuing_root(lab: &Lab, pebble: &cutover_http::testing::Pebble) -> std::path::PathBuf {
    let root = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(pebble.issuing_root());
    let root_file = lab.repo.with_extension("pebble").join("root.pem");
    fs::write(&root_file, &root).unwrap();
    root_file
}

#[test]
fn acme_issues_serves_and_renews_a_certificate_through_the_edge_against_pebble() {
    let Some((lab, redirect, pebble)) = pebble_lab() else {
        return;
    };
    let (by_alpn, by_http) = ("alpn.tasks.test", "http.tasks.test");
    // A receiver of notifications: a failed renewal is told there.
    let receiver = crate::pipeline::Receiver::start();
    let acme_with = |directory: &str, http_redirect: bool| {
        let redirect = if http_redirect {
            format!("http_redirect = \"127.0.0.1:{redirect}\"\n")
        } else {
            String::new()
        };
        format!(
            "{}hosts = [\"{by_alpn}\", \"{by_http}\"]\ntls = \"acme\"\n{redirect}\n[acme]\ndirectory = \"{directory}\"\nemail = \"ops@example.com\"\nca_bundle = \"{}\"\n\n[[notify]]\nurl = \"http://{}/hook\"\n",
            lab.config(),
            pebble.ca_bundle.display(),
            receiver.addr
        )
    };
    let acme = |directory: &str| acme_with(directory, true);
    let v1 = lab.commit_config(&acme(&pebble.directory), "acme");
    lab.deploy().expect(0);
    let root_file = issuing_root(&lab, &pebble);
    let port = lab.listen.port();
    let get = |host: &str| {
        curl(&[
            "--cacert",
            root_file.to_str().unwrap(),
            "--resolve",
            &format!("{host}:{port}:127.0.0.1"),
            &format!("https://{host}:{port}/"),
        ])
    };
    // The edge obtains both certificates by itself (HTTP-01 on http_redirect for both, as the
    // route has one); until then their handshakes fail cleanly.
    let served = eventually(
        Duration::from_secs(40),
        "certificates issued by ACME",
        || {
            let (a, b) = (get(by_alpn), get(by_http));
            (a.0 == 0 && b.0 == 0).then_some((a.1, b.1))
        },
    );
    assert!(served.0.contains(&format!("tasks-app {v1}")), "{served:?}");
    assert!(served.1.contains(&format!("tasks-app {v1}")), "{served:?}");
    let status = lab.run(&["edge", "status", "--json"]).expect(0).json();
    let acme_hosts = status["acme"].as_array().unwrap();
    assert_eq!(acme_hosts.len(), 2, "{status:#}");
    assert!(
        acme_hosts
            .iter()
            .all(|h| h["not_after"].is_i64() && h["error"].is_null()),
        "{status:#}"
    );

    // Kept 0600 in the edge's dir, and renewed at once when asked.
    let cert = lab.edge_dir().join("certs").join(format!("{by_alpn}.crt"));
    let key = lab.edge_dir().join("certs").join(format!("{by_alpn}.key"));
    use std::os::unix::fs::PermissionsExt;
    for file in [&cert, &key] {
        assert_eq!(
            fs::metadata(file).unwrap().permissions().mode() & 0o777,
            0o600,
            "{file:?}"
        );
    }
    let before = fs::read(&cert).unwrap();
    lab.run(&["edge", "renew", by_alpn])
        .expect(0)
        .says(&[&format!(
            "the certificate of {by_alpn} was renewed by ACME: valid until"
        )]);
    assert_ne!(fs::read(&cert).unwrap(), before, "a new certificate");
    assert_eq!(get(by_alpn).0, 0);

    // Without http_redirect nothing answers HTTP-01: the edge answers TLS-ALPN-01 on its TLS
    // listener (Pebble validates on the edge's port), and the renewal still succeeds.
    lab.commit_config(&acme_with(&pebble.directory, false), "acme by TLS-ALPN-01");
    lab.deploy().expect(0);
    let (code, _, _) = curl(&[&format!("http://127.0.0.1:{redirect}/")]);
    assert_ne!(code, 0, "nothing listens on the old http_redirect address");
    let before = fs::read(&cert).unwrap();
    lab.run(&["edge", "renew", by_alpn])
        .expect(0)
        .says(&["was renewed by ACME"]);
    assert_ne!(
        fs::read(&cert).unwrap(),
        before,
        "a new certificate by TLS-ALPN-01"
    );
    assert_eq!(get(by_alpn).0, 0);

    // A host no ACME route has: refused with a hint.
    lab.run(&["edge", "renew", "nobody.test"]).expect(1).says(&[
        "no route of this edge gets the certificate of nobody.test by ACME",
        "hint: ",
    ]);
    // A deploy whose [acme] directory does not answer is refused before anything starts when
    // the edge holds no certificate for one of its hosts (here a new one).
    let before = lab.ledger_summary();
    let gone = format!("https://127.0.0.1:{}/dir", free_port());
    let new_host = acme(&gone).replace(
        &format!("\"{by_http}\"]"),
        &format!("\"{by_http}\", \"new.tasks.test\"]"),
    );
    lab.commit_config(&new_host, "a directory that is gone, and a new host");
    lab.deploy().expect(1).says(&[
        &format!("[acme] directory: the ACME directory {gone} cannot be reached"),
        "the edge holds no valid certificate for new.tasks.test",
        "hint: check [acme] directory",
    ]);
    assert_eq!(lab.ledger_summary(), before, "nothing changed");
    // The directory goes away at runtime: a renewal fails clearly, the old certificate keeps
    // serving, and `edge status` says so.
    let directory = pebble.directory.clone();
    drop(pebble);
    lab.run(&["edge", "renew", by_alpn]).expect(1).says(&[
        &format!("the ACME directory {directory} cannot be reached"),
        "the old certificate, if any, keeps serving",
        "hint: check [acme] directory",
    ]);
    assert_eq!(get(by_alpn).0, 0, "the old certificate serves");
    let status = lab.run(&["edge", "status"]).expect(0);
    assert!(
        status
            .stdout
            .contains(&format!("certificate of {by_alpn} by ACME: valid until"))
            && status
                .stdout
                .contains("the last attempt failed: the ACME directory"),
        "{status:?}"
    );
    // So do `cutover status` (the environment's certificates) and a notification.
    let staging = lab.staging();
    let certificates = staging["certificates"].as_array().expect("certificates[]");
    let failed = certificates
        .iter()
        .find(|c| c["host"] == by_alpn)
        .unwrap_or_else(|| panic!("{staging:#}"));
    assert!(failed["not_after"].is_string(), "{staging:#}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot be reached")),
        "{staging:#}"
    );
    let shown = lab.run(&["status"]).expect(0);
    assert!(
        shown
            .stdout
            .contains(&format!("certificate {by_alpn}  valid until"))
            && shown.stdout.contains("the last ACME attempt failed"),
        "{shown:?}"
    );
    let told = eventually(
        Duration::from_secs(30),
        "a certificate notification",
        || {
            receiver
                .events()
                .into_iter()
                .find(|e| e["kind"] == "certificate" && e["host"] == by_alpn)
        },
    );
    assert_eq!(told["environment"], "staging", "{told:#}");
    assert!(told["not_after"].is_string(), "{told:#}");
    lab.run(&["down"]).expect(0);
}

#[test]
fn an_acme_outage_blocks_neither_deploys_nor_rollbacks_of_an_environment_holding_its_certificates()
{
    let Some((lab, redirect, pebble)) = pebble_lab() else {
        return;
    };
    let acme = |directory: &str| {
        format!(
            "{}hosts = [\"{HOST}\"]\ntls = \"acme\"\nhttp_redirect = \"127.0.0.1:{redirect}\"\n\n[acme]\ndirectory = \"{directory}\"\nca_bundle = \"{}\"\n",
            lab.config(),
            pebble.ca_bundle.display(),
        )
    };
    // A first deploy while the directory does not answer: the edge holds nothing, refused.
    let gone = format!("https://127.0.0.1:{}/dir", free_port());
    lab.commit_config(&acme(&gone), "acme, its directory gone");
    lab.deploy().expect(1).says(&[
        &format!("[acme] directory: the ACME directory {gone} cannot be reached"),
        &format!("the edge holds no valid certificate for {HOST}"),
        "hint: check [acme] directory",
    ]);
    assert!(lab.history().is_empty(), "nothing recorded");

    let v1 = lab.commit_config(&acme(&pebble.directory), "acme");
    let first = lab.deploy().expect(0);
    assert!(!first.stderr.contains("cannot be reached"), "{first:?}");
    let root_file = issuing_root(&lab, &pebble);
    let port = lab.listen.port();
    let get = || {
        curl(&[
            "--cacert",
            root_file.to_str().unwrap(),
            "--resolve",
            &format!("{HOST}:{port}:127.0.0.1"),
            &format!("https://{HOST}:{port}/"),
        ])
    };
    let served = eventually(Duration::from_secs(40), "a certificate by ACME", || {
        let (code, body, _) = get();
        (code == 0).then_some(body)
    });
    assert!(served.contains(&format!("tasks-app {v1}")), "{served:?}");
    let cert = lab.edge_dir().join("certs").join(format!("{HOST}.crt"));
    let issued = fs::read(&cert).unwrap();

    // Let's Encrypt is down: the environment still deploys on the certificate it has, and
    // says so once.
    let directory = pebble.directory.clone();
    drop(pebble);
    let v2 = lab.commit("v2");
    let run = lab.deploy().expect(0).says(&[
        &format!("the ACME directory {directory} cannot be reached"),
        &format!("the certificates held for {HOST} stay valid until "),
        "is live in staging",
    ]);
    assert_eq!(
        run.stderr.matches("cannot be reached").count(),
        1,
        "{run:?}"
    );
    assert!(!run.stderr.contains("error:"), "{run:?}");
    let (code, body, err) = get();
    assert_eq!(code, 0, "HTTPS with the held certificate: {err}");
    assert!(body.contains(&format!("tasks-app {v2}")), "{body:?}");
    assert_eq!(fs::read(&cert).unwrap(), issued, "the same certificate");
    let id = lab.history()[0]["id"].to_string();
    let show = lab.run(&["show", &id, "--json"]).expect(0).json();
    let noted = show["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "certificate")
        .count();
    assert_eq!(noted, 1, "one event: {show:#}");

    // And a rollback goes the same way.
    let back = lab.run(&["rollback", "staging"]).expect(0).says(&[
        &format!("the certificates held for {HOST} stay valid until "),
        "is live in staging",
    ]);
    assert_eq!(
        back.stderr.matches("cannot be reached").count(),
        1,
        "{back:?}"
    );
    let (code, body, err) = get();
    assert_eq!(code, 0, "HTTPS after the rollback: {err}");
    assert!(body.contains(&format!("tasks-app {v1}")), "{body:?}");
    lab.run(&["down"]).expect(0);
}
