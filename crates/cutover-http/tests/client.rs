//! The client against real TLS servers: what is trusted, and how each failure is sorted.

use std::time::Duration;

use cutover_http::testing::{Answer, TestCa, TestServer};
use cutover_http::{classify, client, ClientOptions, Failure, Verify};

fn ok(_: &cutover_http::testing::Recorded) -> Answer {
    (200, vec![], b"ok".to_vec())
}

fn bundle(ca: &TestCa, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cutover-http-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    ca.write(&dir.join(name))
}

async fn get(options: &ClientOptions, url: &str) -> Result<u16, Failure> {
    let c = client(options).unwrap();
    match c.get(url).send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(classify(&e)),
    }
}

#[tokio::test]
async fn a_certificate_of_a_trusted_bundle_passes_and_others_are_sorted() {
    let ca = TestCa::new("cutover test CA");
    let good = TestServer::start(Some(&ca.issue(&["127.0.0.1", "localhost"])), ok);
    let path = bundle(&ca, "ca-good.pem");
    let trusted = ClientOptions::verified(Some(&path));

    assert_eq!(get(&trusted, &good.url(true, "/")).await, Ok(200));
    // Without the bundle: an unknown CA.
    match get(&ClientOptions::default(), &good.url(true, "/")).await {
        Err(Failure::Certificate(why)) => assert!(why.contains("unknown CA"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Not verified at all: accepted.
    let any = ClientOptions {
        verify: Verify::Nothing,
        ..ClientOptions::default()
    };
    assert_eq!(get(&any, &good.url(true, "/")).await, Ok(200));

    let wrong_name = TestServer::start(Some(&ca.issue(&["registry.example"])), ok);
    match get(&trusted, &wrong_name.url(true, "/")).await {
        Err(Failure::Certificate(why)) => assert!(why.contains("another name"), "{why}"),
        other => panic!("{other:?}"),
    }
    let expired = TestServer::start(Some(&ca.issue_expired(&["127.0.0.1"])), ok);
    match get(&trusted, &expired.url(true, "/")).await {
        Err(Failure::Certificate(why)) => assert!(why.contains("expired"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn plain_http_refused_ports_and_silence_are_told_apart() {
    let plain = TestServer::start(None, ok);
    let opts = ClientOptions {
        timeout: Some(Duration::from_millis(500)),
        ..ClientOptions::default()
    };
    assert_eq!(get(&opts, &plain.url(true, "/")).await, Err(Failure::NoTls));
    assert_eq!(get(&opts, &plain.url(false, "/")).await, Ok(200));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert_eq!(
        get(&opts, &format!("http://127.0.0.1:{port}/")).await,
        Err(Failure::Refused)
    );

    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", silent.local_addr().unwrap());
    assert_eq!(get(&opts, &url).await, Err(Failure::Timeout));
}

#[tokio::test]
async fn redirects_are_followed_on_the_same_host_only() {
    let target = TestServer::start(None, ok);
    let elsewhere = format!("http://localhost:{}/x", target.addr.port());
    let redirecting = TestServer::start(None, move |r| {
        if r.path == "/same" {
            (302, vec![("location".into(), "/final".into())], vec![])
        } else if r.path == "/away" {
            (302, vec![("location".into(), elsewhere.clone())], vec![])
        } else {
            (200, vec![], vec![])
        }
    });
    let opts = ClientOptions::default();
    assert_eq!(get(&opts, &redirecting.url(false, "/same")).await, Ok(200));
    match get(&opts, &redirecting.url(false, "/away")).await {
        Err(Failure::Redirect(why)) => assert!(why.contains("localhost"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(target.requests().is_empty());
}

/// The environment's proxy carries requests to other hosts, never to loopback ones.
#[tokio::test]
async fn proxies_from_the_environment_skip_loopback_addresses() {
    let proxy = TestServer::start(None, ok);
    let target = TestServer::start(None, ok);
    std::env::set_var("HTTP_PROXY", proxy.url(false, ""));
    let c = client(&ClientOptions::default()).unwrap();
    std::env::remove_var("HTTP_PROXY");
    let direct = c.get(target.url(false, "/direct")).send().await.unwrap();
    assert_eq!(direct.status(), 200);
    assert_eq!(target.requests().len(), 1);
    let proxied = c
        .get("http://registry.cutover-test.invalid/v2/")
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 200);
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].header("host"),
        Some("registry.cutover-test.invalid")
    );
}

/// A pinned client talks to exactly the certificate it pins, whatever its name or issuer; any
/// other is refused naming both fingerprints.
#[tokio::test]
async fn a_pinned_client_trusts_exactly_the_pinned_certificate() {
    use cutover_http::pin::{fingerprint, parse_fingerprint};
    let ca = TestCa::new("nobody trusts this CA");
    let issued = ca.issue(&["not-the-name-we-call.example"]);
    let server = TestServer::start(Some(&issued), ok);
    let good = fingerprint(issued.cert_der());
    let pinned = |fingerprint: &str| ClientOptions {
        verify: Verify::Pinned {
            fingerprint: fingerprint.to_string(),
        },
        ..ClientOptions::default()
    };
    assert_eq!(get(&pinned(&good), &server.url(true, "/")).await, Ok(200));

    let wrong = format!("sha256:{}", "ab".repeat(32));
    let said = get(&pinned(&wrong), &server.url(true, "/"))
        .await
        .unwrap_err()
        .to_string();
    assert!(said.contains(&good) && said.contains(&wrong), "{said}");
    // Roots do not vouch for it either: the pin is what trusts it.
    assert!(get(&ClientOptions::default(), &server.url(true, "/"))
        .await
        .is_err());

    let colons: Vec<String> = good.as_bytes()["sha256:".len()..]
        .chunks(2)
        .map(|p| String::from_utf8(p.to_vec()).unwrap().to_uppercase())
        .collect();
    let openssl_style = format!("SHA256:{}", colons.join(":"));
    assert_eq!(parse_fingerprint(&openssl_style), Some(good.clone()));
    assert_eq!(parse_fingerprint("sha256:1234"), None);
    assert_eq!(parse_fingerprint("md5:00"), None);
}
