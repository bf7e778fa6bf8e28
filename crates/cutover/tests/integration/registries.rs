//! Build → publish → deploy by digest → rollback against registries as teams run them: TLS
//! with a CA of the test, htpasswd basic auth, and token auth (the registry validates JWTs from
//! the test's token endpoint). Wrong credentials, an untrusted CA, and an HTTPS notification
//! receiver, through the real binary and a real Docker engine.
//!
//! Without an engine or `docker-registry` each test prints `SKIPPED: …` and passes, unless
//! `CUTOVER_REQUIRE_DOCKER=1`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use cutover_http::testing::{TestCa, TestServer};

use crate::container_support::*;
use crate::docker_or_skip;
use crate::secure_registry::*;
use crate::support::*;

const USER: &str = "ci";
const PASSWORD: &str = "reg-s3cret-password";
const HOOK_TOKEN: &str = "Bearer hook-s3cret-token";

fn secure_registry(auth: Auth) -> Option<SecureRegistry> {
    docker_ready()?;
    match SecureRegistry::start(auth, USER, PASSWORD) {
        Ok(r) => Some(r),
        Err(e) => {
            skip(&e);
            None
        }
    }
}

/// The walk every team does, against `registry`; `env` gives the registry login.
fn walk(lab: &DockerLab, registry: &SecureRegistry, env: &[(&str, &str)]) -> (String, String) {
    let v1 = lab.head();
    lab.run_env(&["build"], env).expect(0);
    let published = lab.run_env(&["publish"], env).expect(0);
    assert!(
        published.stdout.contains(&registry.addr),
        "published to the TLS registry: {published:?}"
    );
    // The engine has to pull it back by digest, with the login.
    lab.remove_local_images();
    lab.run_env(&["deploy", "staging"], env).expect(0);
    lab.assert_serving(&v1);

    let v2 = lab.commit("second");
    lab.run_env(&["deploy", "staging"], env).expect(0);
    lab.assert_serving(&v2);

    lab.run_env(&["rollback", "staging"], env).expect(0);
    lab.assert_serving(&v1);
    (v1, v2)
}

/// The password is nowhere cutover writes: not in its output, not in the state dir (ledger,
/// logs, artifacts).
fn assert_password_kept_secret(lab: &DockerLab) {
    if let Some(file) = tree_contains(&lab.state_dir(), PASSWORD) {
        panic!("the registry password is in {}", file.display());
    }
}

#[test]
fn a_tls_registry_with_basic_auth_build_publish_deploy_roll_back_and_notify_over_https() {
    let registry = docker_or_skip!(secure_registry(Auth::Htpasswd));
    // An HTTPS receiver with its own CA, trusted through ca_bundle; Slack format.
    let hook_ca = TestCa::new("hook receiver CA");
    let hook_dir = tempfile::tempdir().unwrap();
    let hook_ca_file = hook_ca.write(&hook_dir.path().join("hook-ca.pem"));
    let receiver = TestServer::start(Some(&hook_ca.issue(&["127.0.0.1"])), |_| {
        (200, vec![], b"ok".to_vec())
    });
    let notify = format!(
        "[[notify]]\nurl = \"{}\"\nformat = \"slack\"\nca_bundle = \"{}\"\nheaders = {{ Authorization = {{ env = \"HOOK_TOKEN\" }} }}\n",
        receiver.url(true, "/services/T0/B0/x"),
        hook_ca_file.display()
    );
    let lab = docker_or_skip!(docker_lab_with(|s| {
        s.registry_url = Some(registry.addr.clone());
        s.registry_extra = registry.registry_lines();
        s.extra = notify;
    }));
    let env = [
        ("REG_USER", USER),
        ("REG_PASSWORD", PASSWORD),
        ("HOOK_TOKEN", HOOK_TOKEN),
    ];
    let (v1, v2) = walk(&lab, &registry, &env);

    // The receiver heard, in Slack's words, with the header from its secret source.
    let live = format!("release 1 ({}) is live in staging", &v1[..12]);
    eventually(Duration::from_secs(20), "a slack notification", || {
        receiver.requests().into_iter().find(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            body["text"].as_str().is_some_and(|t| t.contains(&live))
                && r.header("authorization") == Some(HOOK_TOKEN)
        })
    });

    // Wrong password: refused before anything starts, naming the registry and the user.
    let wrong = lab
        .run_env(
            &["deploy", "staging", "--version", &v2],
            &[
                ("REG_USER", USER),
                ("REG_PASSWORD", "wrong-pw-4711"),
                ("HOOK_TOKEN", HOOK_TOKEN),
            ],
        )
        .expect(1)
        .says(&[&registry.addr, "user ci", "password"]);
    assert!(!wrong.stderr.contains("wrong-pw-4711"), "{wrong:?}");
    lab.assert_serving(&v1);

    // A push with the wrong password (the engine's own refusal) names the user, not the password.
    lab.commit("third");
    let push = lab
        .run_env(
            &["publish"],
            &[
                ("REG_USER", USER),
                ("REG_PASSWORD", "wrong-pw-4711"),
                ("HOOK_TOKEN", HOOK_TOKEN),
            ],
        )
        .expect(1)
        .says(&[&registry.addr, "user ci"]);
    assert!(!push.stderr.contains("wrong-pw-4711"), "{push:?}");

    // A config that does not trust the registry's CA: refused, naming the host and the fix.
    let mut lab = lab;
    lab.recommit(
        |s| {
            s.registry_extra =
                "username = { env = \"REG_USER\" }\npassword = { env = \"REG_PASSWORD\" }".into()
        },
        "forget the registry CA",
    );
    lab.run_env(&["deploy", "staging"], &env).expect(1).says(&[
        &registry.addr,
        "unknown CA",
        "ca_bundle",
        "insecure",
    ]);
    lab.assert_serving(&v1);
    assert_password_kept_secret(&lab);
}

#[test]
fn a_tls_registry_with_token_auth_and_a_docker_login() {
    let registry = docker_or_skip!(secure_registry(Auth::Token));
    // No credentials in cutover.toml: the Docker client config has the login.
    let docker_config = tempfile::tempdir().unwrap();
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    };
    std::fs::write(
        docker_config.path().join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
            registry.addr
        ),
    )
    .unwrap();
    let lab = docker_or_skip!(docker_lab_with(|s| {
        s.registry_url = Some(registry.addr.clone());
        s.registry_extra = format!("ca_bundle = \"{}\"", registry.ca_file.display());
    }));
    let config_dir = docker_config.path().to_str().unwrap();
    let env = [("DOCKER_CONFIG", config_dir)];
    walk(&lab, &registry, &env);
    assert!(
        registry.tokens_issued.load(Ordering::SeqCst) > 0,
        "the registry asked for tokens: {}",
        registry.log()
    );
    // Both the engine (push, pull) and cutover's own digest check went through the token flow.
    let clients = registry.token_clients();
    assert!(
        clients.iter().any(|c| c.starts_with("cutover/")),
        "{clients:?}"
    );
    assert!(clients.iter().any(|c| c.contains("docker")), "{clients:?}");
    assert_password_kept_secret(&lab);
}
