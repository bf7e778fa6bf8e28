//! The registry digest check against registries that misbehave: untrusted certificates, a
//! token service that errs, wrong credentials, silence. Small HTTP(S) stand-ins on 127.0.0.1
//! (cutover-http's test server); no engine needed. The real registries (TLS, htpasswd, token
//! auth) are exercised end to end in crates/cutover/tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_docker::{registry_digest, Credentials, DockerError, RegistryAccess};
use cutover_http::testing::{Answer, Recorded, TestCa, TestServer};

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn manifest(_: &Recorded) -> Answer {
    (
        200,
        vec![("docker-content-digest".into(), DIGEST.into())],
        vec![],
    )
}

fn bundle(ca: &TestCa, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cutover-docker-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    ca.write(&dir.join(name))
}

fn host(server: &TestServer) -> String {
    server.addr.to_string()
}

#[tokio::test]
async fn untrusted_certificates_are_named_with_the_fix_and_never_fall_back_to_http() {
    let ca = TestCa::new("registry CA");
    let trusted = RegistryAccess {
        ca_bundle: Some(bundle(&ca, "registry-ca.pem")),
        ..RegistryAccess::default()
    };
    let good = TestServer::start(Some(&ca.issue(&["127.0.0.1"])), manifest);
    assert_eq!(
        registry_digest(&host(&good), "app", "v1", None, &trusted)
            .await
            .unwrap()
            .as_deref(),
        Some(DIGEST)
    );

    let unknown = registry_digest(&host(&good), "app", "v1", None, &RegistryAccess::default())
        .await
        .unwrap_err();
    let wrong_name = TestServer::start(Some(&ca.issue(&["registry.example"])), manifest);
    let wrong = registry_digest(&host(&wrong_name), "app", "v1", None, &trusted)
        .await
        .unwrap_err();
    let expired = TestServer::start(Some(&ca.issue_expired(&["127.0.0.1"])), manifest);
    let old = registry_digest(&host(&expired), "app", "v1", None, &trusted)
        .await
        .unwrap_err();
    for (err, why, server) in [
        (unknown, "unknown CA", &good),
        (wrong, "another name", &wrong_name),
        (old, "expired", &expired),
    ] {
        assert!(matches!(err, DockerError::RegistryTls { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(why), "{text}");
        assert!(text.contains(&host(server)), "{text}");
        assert!(
            text.contains("ca_bundle") && text.contains("insecure"),
            "{text}"
        );
    }
    // Only the TLS handshakes reached them: no plain-HTTP retry after a certificate error.
    assert_eq!(wrong_name.requests().len(), 0);

    // insecure = true: any certificate.
    let insecure = RegistryAccess {
        insecure: true,
        ..RegistryAccess::default()
    };
    assert!(
        registry_digest(&host(&expired), "app", "v1", None, &insecure)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_loopback_registry_without_tls_is_spoken_to_over_http() {
    let plain = TestServer::start(None, manifest);
    let access = RegistryAccess::default();
    assert_eq!(
        registry_digest(&host(&plain), "app", "v1", None, &access)
            .await
            .unwrap()
            .as_deref(),
        Some(DIGEST)
    );
}

/// A registry behind the bearer-token challenge; its token service answers `realm_status`
/// (200 with a token that lives `life` seconds), counting the tokens it issued.
fn token_registry(realm_status: u16, life: u64) -> (TestServer, TestServer, Arc<AtomicUsize>) {
    let issued = Arc::new(AtomicUsize::new(0));
    let count = issued.clone();
    let realm = TestServer::start(None, move |r: &Recorded| {
        if realm_status != 200 {
            return (
                realm_status,
                vec![],
                b"{\"errors\":[{\"code\":\"DENIED\"}]}".to_vec(),
            );
        }
        if r.header("authorization").is_none() {
            return (401, vec![], vec![]);
        }
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        let body = format!("{{\"token\":\"tok-{n}\",\"expires_in\":{life}}}");
        (200, vec![], body.into_bytes())
    });
    let realm_url = realm.url(false, "/token");
    let registry = TestServer::start(None, move |r: &Recorded| {
        match r.header("authorization") {
            Some(a) if a.starts_with("Bearer tok-") => manifest(r),
            _ => (
                401,
                vec![(
                    "www-authenticate".into(),
                    format!(
                        "Bearer realm=\"{realm_url}\",service=\"test-registry\",scope=\"repository:team/app:pull\""
                    ),
                )],
                vec![],
            ),
        }
    });
    (registry, realm, issued)
}

fn login(user: &str, password: &str) -> Credentials {
    Credentials {
        username: user.into(),
        password: password.into(),
    }
}

#[tokio::test]
async fn bearer_tokens_are_fetched_as_docker_hub_does_and_kept_until_they_expire() {
    let (registry, realm, issued) = token_registry(200, 300);
    let access = RegistryAccess::default();
    let creds = login("ci", "s3cret");
    for _ in 0..3 {
        let d = registry_digest(&host(&registry), "team/app", "v1", Some(&creds), &access)
            .await
            .unwrap();
        assert_eq!(d.as_deref(), Some(DIGEST));
    }
    assert_eq!(issued.load(Ordering::SeqCst), 1, "the token was kept");
    let asked = &realm.requests()[0];
    assert!(
        asked.path.contains("service=test-registry"),
        "{}",
        asked.path
    );
    assert!(
        asked.path.contains("scope=repository%3Ateam%2Fapp%3Apull"),
        "{}",
        asked.path
    );
    assert!(asked.header("authorization").unwrap().starts_with("Basic "));

    // A token that expires at once is fetched again.
    let (registry, _realm, issued) = token_registry(200, 0);
    for _ in 0..2 {
        registry_digest(&host(&registry), "team/app", "v1", Some(&creds), &access)
            .await
            .unwrap();
    }
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_token_service_that_errs_or_refuses_is_named() {
    let access = RegistryAccess::default();
    let creds = login("ci", "hunter2-password");
    let (registry, _realm, _) = token_registry(500, 60);
    let e = registry_digest(&host(&registry), "team/app", "v1", Some(&creds), &access)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("token service") && e.contains("HTTP 500"), "{e}");

    let (registry, _realm, _) = token_registry(401, 60);
    let e = registry_digest(&host(&registry), "team/app", "v1", Some(&creds), &access)
        .await
        .unwrap_err();
    assert!(matches!(e, DockerError::AuthRefused { .. }), "{e}");
    let e = e.to_string();
    assert!(e.contains("user ci") && e.contains("HTTP 401"), "{e}");
    assert!(e.contains(&host(&registry)), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

#[tokio::test]
async fn wrong_basic_credentials_name_the_registry_and_user_never_the_password() {
    let registry = TestServer::start(None, |r: &Recorded| match r.header("authorization") {
        Some("Basic Y2k6cmlnaHQ=") => manifest(r), // ci:right
        _ => (
            401,
            vec![("www-authenticate".into(), "Basic realm=\"registry\"".into())],
            vec![],
        ),
    });
    let access = RegistryAccess::default();
    let ok = registry_digest(
        &host(&registry),
        "app",
        "v1",
        Some(&login("ci", "right")),
        &access,
    )
    .await
    .unwrap();
    assert_eq!(ok.as_deref(), Some(DIGEST));
    let e = registry_digest(
        &host(&registry),
        "app",
        "v1",
        Some(&login("ci", "wrong-pw")),
        &access,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("user ci") && e.contains(&host(&registry)), "{e}");
    assert!(!e.contains("wrong-pw"), "{e}");
    assert!(e.contains("docker login"), "{e}");
    let e = registry_digest(&host(&registry), "app", "v1", None, &access)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs credentials"), "{e}");
}

#[tokio::test]
async fn a_registry_that_never_answers_times_out() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let access = RegistryAccess {
        timeout: Duration::from_millis(700),
        ..RegistryAccess::default()
    };
    let started = Instant::now();
    let e = registry_digest(
        &silent.local_addr().unwrap().to_string(),
        "app",
        "v1",
        None,
        &access,
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e, DockerError::RegistryUnreachable { .. }), "{e}");
    assert!(e.to_string().contains("no answer"), "{e}");
}
