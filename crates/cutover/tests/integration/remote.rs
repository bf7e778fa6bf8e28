//! The server for other machines (issue 10, parts 1 and 2): `cutover server --listen ADDR`
//! serves the whole API over HTTPS with a certificate it makes and keeps (its fingerprint
//! printed and shown by `cutover server info`), on a state dir with no repository; every call
//! needs a token whose role allows it, the ledger records the token's owner (not what the body
//! claims), revoking takes effect at once, and every refused call is recorded. The calls are
//! made with real `curl` over TLS.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{free_port, Run};

/// A state dir with no repository around it, and a `cutover server --listen` on it — on this
/// machine, or in a network namespace (another "machine", see `netns.rs`).
pub(crate) struct Remote {
    dir: tempfile::TempDir,
    server: Option<Child>,
    pub(crate) addr: String,
    /// What the server printed first (its HTTPS line).
    said: String,
    /// The network namespace the server runs in, if any.
    namespace: Option<String>,
    /// Extra environment of the server.
    env: Vec<(String, String)>,
}

impl Remote {
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A state dir, and a `cutover.toml` beside it that only names environments (the CLI
    /// lists what its config names); no repository.
    fn new() -> Remote {
        Remote::on(None, "127.0.0.1")
    }

    fn on(namespace: Option<&str>, host: &str) -> Remote {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("cutover.toml"),
            "[app]\nname = \"remote\"\n[build]\nfiles = [\"app\"]\n[run]\ncommand = [\"./app\"]\n\
             [environments.production]\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        Remote {
            dir,
            server: None,
            addr: format!("{host}:{}", free_port()),
            said: String::new(),
            namespace: namespace.map(str::to_string),
            env: Vec::new(),
        }
    }

    /// A server in network namespace `namespace`, listening on `host` (its address there),
    /// with `env` in its environment.
    pub(crate) fn start_in(namespace: &str, host: &str, env: &[(&str, &str)]) -> Remote {
        let mut remote = Remote::on(Some(namespace), host);
        remote.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        remote.launch(&[]);
        remote
    }

    /// Starts the server with `extra` flags; waits for its HTTPS line (or its exit).
    fn start(extra: &[&str]) -> Remote {
        let mut remote = Remote::new();
        remote.launch(extra);
        remote
    }

    fn launch(&mut self, extra: &[&str]) {
        self.said.clear();
        let state = self.state();
        let mut args = vec![
            "--state-dir",
            state.to_str().unwrap(),
            "server",
            "--listen",
            &self.addr,
        ];
        args.extend_from_slice(extra);
        let mut command = match &self.namespace {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_cutover")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_cutover")),
        };
        let mut child = command
            .args(&args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            // Its own machine edge, apart from other tests'.
            .env("CUTOVER_EDGE_DIR", self.dir.path().join("edge"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    self.said.push_str(&line);
                    self.said.push('\n');
                    if line.starts_with("HTTPS API on") {
                        break;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if child.try_wait().unwrap().is_some() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        self.server = Some(child);
    }

    /// Runs `cutover --state-dir STATE ARGS` where there is no cutover.toml.
    pub(crate) fn cli(&self, args: &[&str]) -> Run {
        let state = self.state();
        let mut all = vec!["--state-dir", state.to_str().unwrap()];
        all.extend_from_slice(args);
        run_in(self.dir.path(), &all)
    }

    /// `curl` over TLS (the certificate is self-made; the fingerprint is checked apart):
    /// (status, body).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let url = format!("https://{}{path}", self.addr);
        let mut c = Command::new("curl");
        c.args([
            "-sk",
            "-m",
            "30",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
            &url,
        ]);
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        let out = c.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Waits for the server process to exit; its code.
    fn exit_code(&mut self) -> Option<i32> {
        let child = self.server.as_mut()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = self.cli(&["down"]);
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run_in(dir: &Path, args: &[&str]) -> Run {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(args)
        .current_dir(dir)
        .env("CUTOVER_EDGE_DIR", dir.join("edge"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
        took: started.elapsed(),
        args: args.iter().map(|a| a.to_string()).collect(),
    }
}

pub(crate) fn token(remote: &Remote, name: &str, role: &str) -> String {
    remote
        .cli(&["token", "create", name, "--role", role])
        .expect(0)
        .stdout
        .trim()
        .to_string()
}

#[test]
fn the_https_api_lets_each_token_do_what_its_role_allows_and_records_the_rest() {
    let remote = Remote::start(&[]);
    assert!(
        remote.said.contains("HTTPS API on https://"),
        "{}",
        remote.said
    );
    // The certificate it made is kept, its key private, and `server info` pins it.
    let key = remote.state().join("tls/server.key");
    let mode = fs::metadata(&key).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let info = remote.cli(&["server", "info", "--json"]).expect(0).json();
    assert_eq!(info["running"], true, "{info:#}");
    assert_eq!(info["https"], format!("https://{}", remote.addr).as_str());
    let pin = info["fingerprint"].as_str().unwrap().to_string();
    assert!(pin.starts_with("sha256:") && pin.len() == 7 + 64, "{pin}");
    assert!(
        remote.said.contains(&pin),
        "the server printed its pin: {}",
        remote.said
    );
    remote
        .cli(&["server", "info"])
        .expect(0)
        .stdout
        .contains(&pin)
        .then_some(())
        .expect("server info shows the pin");

    // No token, a made-up token: 401, nothing done.
    let (code, body) = remote.call("GET", "/v1/status", None, None);
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains("token create"),
        "the answer says how to get one: {body}"
    );
    let (code, _) = remote.call("GET", "/v1/status", Some("cut_made_up"), None);
    assert_eq!(code, 401);

    let reader = token(&remote, "alice", "read");
    let deployer = token(&remote, "bob", "deploy");
    let admin = token(&remote, "carol", "admin");
    let freeze = r#"{"env":"production","by":"mallory","reason":"release train"}"#;

    // read: reads, and nothing more.
    let (code, body) = remote.call("GET", "/v1/status", Some(&reader), None);
    assert_eq!(code, 200, "{body}");
    let (code, body) = remote.call("POST", "/v1/freeze", Some(&reader), Some(freeze));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("read") && body.contains("deploy"), "{body}");
    // deploy: freezes, recorded as the token's owner, not as the body claims.
    let (code, body) = remote.call("POST", "/v1/freeze", Some(&deployer), Some(freeze));
    assert_eq!(code, 200, "{body}");
    let status = remote.cli(&["status", "--json"]).expect(0).json();
    let text = status.to_string();
    assert!(text.contains("\"bob\""), "frozen by bob: {status:#}");
    assert!(!text.contains("mallory"), "{status:#}");
    let (code, _) = remote.call("GET", "/v1/tokens", Some(&deployer), None);
    assert_eq!(code, 403, "tokens are an admin's");
    // admin: everything.
    let (code, body) = remote.call("GET", "/v1/tokens", Some(&admin), None);
    assert_eq!(code, 200, "{body}");
    let tokens: Value = serde_json::from_str(&body).unwrap();
    let roles: Vec<(&str, &str)> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [("alice", "read"), ("bob", "deploy"), ("carol", "admin")]
    );

    // Revoking takes effect at once.
    remote.cli(&["token", "revoke", "bob"]).expect(0);
    let (code, _) = remote.call("GET", "/v1/status", Some(&deployer), None);
    assert_eq!(code, 401);

    // A body over the limit is refused before it is read whole.
    let big = format!(
        "{{\"env\":\"x\",\"by\":\"y\",\"reason\":\"{}\"}}",
        "a".repeat(9 << 20)
    );
    let file = remote.dir.path().join("big.json");
    fs::write(&file, big).unwrap();
    let (code, _) = remote.call(
        "POST",
        "/v1/freeze",
        Some(&admin),
        Some(&format!("@{}", file.display())),
    );
    assert_eq!(code, 413);

    // Every refusal is recorded, newest first, with whose token it was.
    let audit = remote.cli(&["token", "audit", "--json"]).expect(0).json();
    let refused: Vec<(Option<&str>, &str, u64)> = audit["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["token"].as_str(),
                r["path"].as_str().unwrap(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            (None, "/v1/status", 401),
            (Some("bob"), "/v1/tokens", 403),
            (Some("alice"), "/v1/freeze", 403),
            (None, "/v1/status", 401),
            (None, "/v1/status", 401),
        ],
        "{audit:#}"
    );

    // `cutover server restart` keeps serving other machines as before: the same address,
    // certificate and pin (the options the server was started with), the tokens still good;
    // the stop needs an admin's token over HTTPS.
    let (code, _) = remote.call("POST", "/v1/server/stop", Some(&reader), Some("{}"));
    assert_eq!(code, 403);
    remote
        .cli(&["server", "restart"])
        .expect(0)
        .says(&["restarted the server", "HTTPS API on https://"]);
    let info = remote.cli(&["server", "info", "--json"]).expect(0).json();
    assert_eq!(info["running"], true, "{info:#}");
    assert_eq!(info["https"], format!("https://{}", remote.addr).as_str());
    assert_eq!(info["fingerprint"].as_str(), Some(pin.as_str()), "{info:#}");
    let (code, body) = remote.call("GET", "/v1/status", Some(&reader), None);
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_server_keeps_its_certificate_and_refuses_bad_tls_files_and_addresses() {
    let mut first = Remote::start(&[]);
    let pin = first.cli(&["server", "info", "--json"]).expect(0).json()["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    // Restarted, it serves the same certificate: clients' pins stay good.
    first.cli(&["down"]).expect(0);
    assert_eq!(first.exit_code(), Some(0));
    first.launch(&[]);
    assert!(first.said.contains(&pin), "{}", first.said);

    // The address is taken (by the first server): exit 1, says what to do.
    let mut taken = Remote::new();
    taken.addr = first.addr.clone();
    taken.launch(&[]);
    assert_eq!(taken.exit_code(), Some(1), "{}", taken.said);
    assert!(
        taken.said.contains("cannot listen on") && taken.said.contains("--listen"),
        "{}",
        taken.said
    );

    // A certificate file that is missing, one that is not PEM, a key of another certificate.
    let other = Remote::start(&[]);
    let cert = first.state().join("tls/server.crt");
    let other_key = other.state().join("tls/server.key");
    let garbage = first.dir.path().join("garbage.pem");
    fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = first.dir.path().join("missing.pem");
    let cases: [(&Path, &Path, &[&str]); 3] = [
        (&missing, &other_key, &["missing.pem", "--tls-cert"]),
        (&garbage, &other_key, &["garbage.pem", "no certificate"]),
        (&cert, &other_key, &["do not go together", "server.key"]),
    ];
    for (cert, key, needles) in cases {
        let mut bad = Remote::new();
        bad.launch(&[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ]);
        assert_eq!(bad.exit_code(), Some(1), "{}", bad.said);
        for needle in needles {
            assert!(bad.said.contains(needle), "{needle}: {}", bad.said);
        }
    }
    // A certificate without its key is a usage error.
    let run = run_in(
        first.dir.path(),
        &[
            "server",
            "--listen",
            "127.0.0.1:1",
            "--tls-cert",
            cert.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--tls-key"), "{run:?}");
}

/// Issue 10, part 4, the server's side: a bundle built elsewhere arrives blob by blob (only
/// the missing ones), each verified on arrival — a truncated upload is refused and stores
/// nothing — and then its manifest, refused until every blob is there.
#[test]
fn a_bundle_uploads_blob_by_blob_and_a_truncated_blob_is_refused() {
    let lab = crate::support::Lab::new();
    let version = lab.head();
    lab.run(&["build"]).expect(0);
    let manifest_file = lab
        .state_dir()
        .join("artifacts/manifests/lab")
        .join(format!("{version}.json"));
    let manifest = fs::read_to_string(&manifest_file).unwrap();
    let artifact: Value = serde_json::from_str(&manifest).unwrap();
    let digests: Vec<String> = artifact["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["digest"].as_str().unwrap().to_string())
        .collect();
    let blob_file = |digest: &str| {
        lab.state_dir()
            .join("artifacts/blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    };

    let remote = Remote::start(&[]);
    let bot = token(&remote, "deploy-bot", "deploy");
    let query = serde_json::json!({ "digests": digests }).to_string();
    let (code, body) = remote.call("POST", "/v1/blobs/missing", Some(&bot), Some(&query));
    assert_eq!(code, 200, "{body}");
    let missing: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(missing["missing"].as_array().unwrap().len(), digests.len());

    // The manifest before its blobs: refused, nothing deployable there.
    let manifest_arg = format!("@{}", manifest_file.display());
    let (code, body) = remote.call("PUT", "/v1/artifacts", Some(&bot), Some(&manifest_arg));
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("blobs are not here"), "{body}");

    // A truncated upload of the first blob: refused, names what arrived.
    let first = &digests[0];
    let whole = fs::read(blob_file(first)).unwrap();
    let cut = remote.dir.path().join("cut");
    fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let put = |digest: &str, file: &Path| {
        let out = Command::new("curl")
            .args([
                "-sk",
                "-m",
                "60",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "-X",
                "PUT",
            ])
            .args(["-H", &format!("Authorization: Bearer {bot}")])
            .args(["-H", "Content-Type: application/octet-stream"])
            .args(["--data-binary", &format!("@{}", file.display())])
            .arg(format!("https://{}/v1/blobs/{digest}", remote.addr))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse::<u16>().unwrap_or(0), body.to_string())
    };
    let (code, body) = put(first, &cut);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("not the blob it claims"), "{body}");
    let (code, body) = remote.call("POST", "/v1/blobs/missing", Some(&bot), Some(&query));
    assert_eq!(code, 200);
    assert!(
        body.contains(first.as_str()),
        "the truncated blob was not kept: {body}"
    );

    // Whole blobs: stored; the manifest then arrives; nothing is missing any more.
    for digest in &digests {
        let (code, body) = put(digest, &blob_file(digest));
        assert!(code == 201 || code == 204, "{code} {body}");
    }
    let (code, body) = remote.call("PUT", "/v1/artifacts", Some(&bot), Some(&manifest_arg));
    assert_eq!(code, 201, "{body}");
    let (_, body) = remote.call("POST", "/v1/blobs/missing", Some(&bot), Some(&query));
    let missing: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(missing["missing"], serde_json::json!([]), "{body}");
    let shipped = remote
        .state()
        .join("artifacts/manifests/lab")
        .join(format!("{version}.json"));
    let kept: Value = serde_json::from_str(&fs::read_to_string(shipped).unwrap()).unwrap();
    assert_eq!(kept["digest"], artifact["digest"]);

    // A read token may not upload.
    let reader = token(&remote, "viewer", "read");
    let (code, _) = put(first, &blob_file(first));
    assert!(code == 204 || code == 201);
    let (code, _) = remote.call("PUT", "/v1/artifacts", Some(&reader), Some(&manifest_arg));
    assert_eq!(code, 403);
}

/// The version an edge at `addr` serves (`/health` 200 only).
pub(crate) fn serving(addr: &str) -> Option<String> {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    match crate::support::http_get(addr, "/health") {
        Ok((200, body)) => crate::support::json_field(&body, "version"),
        _ => None,
    }
}

pub(crate) fn wait_for_version(addr: &str, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        last = serving(addr);
        if last.as_deref() == Some(version) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{addr} did not serve {version}; last {last:?}");
}

/// Issue 10, parts 2–4 and 7 from the CLI's side: one `cutover.toml` drives staging on this
/// machine and production on a server elsewhere (`server = "https://…"`), after `cutover login`
/// pinned its certificate; the bundle built here travels by digest (only what the server
/// lacks), the server deploys it, and history and rollback go there too. A wrong fingerprint,
/// a missing login and a token whose role is too small are refused with exit 1, nothing changed.
#[test]
fn a_laptop_deploys_production_on_a_remote_server_by_digest() {
    let remote = Remote::start(&[]);
    let pin = remote.cli(&["server", "info", "--json"]).expect(0).json()["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let bot = token(&remote, "deploy-bot", "deploy");
    let viewer = token(&remote, "viewer", "read");
    let url = format!("https://{}", remote.addr);
    let production = format!("127.0.0.1:{}", free_port());

    let mut lab = crate::support::Lab::new();
    let logins = tempfile::tempdir().unwrap();
    lab.env.push((
        "XDG_CONFIG_HOME".into(),
        logins.path().to_str().unwrap().into(),
    ));
    let text = format!(
        "{}\n[environments.production]\nlisten = \"{production}\"\nserver = \"{url}\"\n",
        lab.config()
    );
    let v1 = lab.commit_config(&text, "production lives elsewhere");

    // Before logging in: refused, says how.
    lab.run(&["deploy", "production"])
        .expect(1)
        .says(&["not logged in", "cutover login"]);
    // A login with a wrong fingerprint is refused naming both, and keeps nothing.
    let wrong = format!("sha256:{}", "0".repeat(64));
    lab.run(&["login", &url, "--fingerprint", &wrong, "--token", &bot])
        .expect(1)
        .says(&[&pin, &wrong]);
    assert!(!logins.path().join("cutover/servers.json").exists());
    lab.run(&["login", &url, "--fingerprint", &pin, "--token", "cut_nope"])
        .expect(1)
        .says(&["not valid"]);
    lab.run(&["login", &url, "--fingerprint", &pin, "--token", &bot])
        .expect(0)
        .says(&["deploy-bot", "deploy"]);
    let kept = logins.path().join("cutover/servers.json");
    let mode = fs::metadata(&kept).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // Deploy: built here, shipped by digest, deployed there.
    let run = lab.run(&["deploy", "production"]).expect(0);
    assert!(run.stderr.contains(&format!("on {url}")), "{run:?}");
    assert!(
        run.stderr.contains("1 of 1 blobs"),
        "the bundle travelled: {run:?}"
    );
    wait_for_version(&production, &v1);
    let history = lab
        .run(&["history", "production", "--json"])
        .expect(0)
        .json();
    let releases = history["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 1, "{history:#}");
    assert_eq!(releases[0]["requested_by"], "deploy-bot", "{history:#}");
    // `status` shows both, and says where each lives.
    let status = lab.run(&["status", "--json"]).expect(0).json();
    let env = |status: &Value, name: &str| {
        status["environments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}: {status:#}"))
    };
    let prod = env(&status, "production");
    assert_eq!(prod["server"], url.as_str(), "{status:#}");
    assert_eq!(prod["live"]["version"], v1.as_str(), "{status:#}");
    assert!(
        env(&status, "staging").get("server").is_none(),
        "{status:#}"
    );
    let shown = lab.run(&["status"]).expect(0);
    assert!(shown.stdout.contains(&format!("on {url}")), "{shown:?}");

    // A commit that changes no file of the bundle: nothing travels again.
    let v2 = lab.commit("notes only");
    let run = lab.run(&["deploy", "production"]).expect(0);
    assert!(run.stderr.contains("0 of 1 blobs"), "{run:?}");
    wait_for_version(&production, &v2);
    lab.run(&["rollback", "production"]).expect(0);
    wait_for_version(&production, &v1);

    // A read token may look but not deploy; a wrong pin in CI's variables is refused.
    let read_only = [("CUTOVER_TOKEN", viewer.as_str())];
    lab.run_env(&["history", "production"], &read_only)
        .expect(0);
    lab.run_env(&["deploy", "production"], &read_only)
        .expect(1)
        .says(&["role read", "needs deploy"]);
    lab.run_env(
        &["history", "production"],
        &[("CUTOVER_SERVER_FINGERPRINT", wrong.as_str())],
    )
    .expect(1)
    .says(&[&pin, "log in again"]);
    assert_eq!(serving(&production).as_deref(), Some(v1.as_str()));

    lab.run(&["logout", &url]).expect(0);
    lab.run(&["history", "production"])
        .expect(1)
        .says(&["not logged in"]);
}
