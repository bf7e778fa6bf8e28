//! Certificates at the edge: every bad input a user can give (each named with its field and
//! fix), reloading when files change, and which certificate a real TLS handshake gets by SNI.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cutover_http::testing::TestCa;
use cutover_proxy::tls::{
    self, AlpnChallenges, CertError, CertStore, Pair, Resolver, Site, TlsSource,
};
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};

fn files(pair: &Pair) -> TlsSource {
    TlsSource::Files {
        cert: pair.cert.clone(),
        key: pair.key.clone(),
    }
}

fn site(hosts: &[&str], source: TlsSource) -> Site {
    Site {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        source,
    }
}

fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) -> Pair {
    let pair = Pair {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&pair.cert, cert).unwrap();
    std::fs::write(&pair.key, key).unwrap();
    pair
}

#[test]
fn every_bad_certificate_input_is_named_with_its_field_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("edge test CA");
    let good = ca.issue(&["tasks.example.com", "*.tasks.example.com"]);
    let other = ca.issue(&["tasks.example.com"]);
    let expired = ca.issue_expired(&["tasks.example.com"]);
    let ok = write_pair(dir.path(), "good", &good.cert_pem, &good.key_pem);
    let loaded = tls::load_pair(&ok).unwrap();
    assert_eq!(loaded.names, ["tasks.example.com", "*.tasks.example.com"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(loaded.not_after > now, "valid now");

    let missing = Pair {
        cert: dir.path().join("nope.crt"),
        key: ok.key.clone(),
    };
    let key_missing = Pair {
        cert: ok.cert.clone(),
        key: dir.path().join("nope.key"),
    };
    // A directory cannot be read as a file (the tests run as root, so modes would not stop it).
    let unreadable = Pair {
        cert: dir.path().to_path_buf(),
        key: ok.key.clone(),
    };
    let der = dir.path().join("der.crt");
    std::fs::write(&der, good.cert_der()).unwrap();
    let not_pem = Pair {
        cert: der,
        key: ok.key.clone(),
    };
    let key_not_pem = write_pair(dir.path(), "keytext", &good.cert_pem, "not a key\n");
    let key_is_cert = write_pair(dir.path(), "keycert", &good.cert_pem, &good.cert_pem);
    let garbage_cert = write_pair(
        dir.path(),
        "garbage",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        &good.key_pem,
    );
    let old = write_pair(dir.path(), "expired", &expired.cert_pem, &expired.key_pem);
    let mismatch = write_pair(dir.path(), "mismatch", &good.cert_pem, &other.key_pem);

    let cases: Vec<(Pair, &str, &str, &str)> = vec![
        (
            missing,
            "tls.cert",
            "does not exist",
            "put the certificate chain",
        ),
        (
            key_missing,
            "tls.key",
            "does not exist",
            "put the private key",
        ),
        (unreadable, "tls.cert", "cannot be read", "readable"),
        (
            not_pem,
            "tls.cert",
            "holds no PEM certificate",
            "openssl x509 -inform der",
        ),
        (key_not_pem, "tls.key", "holds no PEM private key", "PKCS#8"),
        (key_is_cert, "tls.key", "holds no PEM private key", "PKCS#8"),
        (garbage_cert, "tls.cert", "cannot be read", "PEM"),
        (old, "tls.cert", "expired on 2001-01-01", "renew"),
        (
            mismatch,
            "tls.key",
            "does not belong to the certificate",
            "issued for",
        ),
    ];
    for (pair, field, says, hint) in cases {
        let e = tls::load_pair(&pair).expect_err(&format!("{pair:?}"));
        assert_eq!(e.field(), field, "{e}");
        assert!(e.to_string().contains(says), "{e}");
        assert!(e.hint().contains(hint), "{e} / {}", e.hint());
        // A route asking for it is refused the same way.
        let store = CertStore::new(dir.path());
        assert_eq!(store.prepare(&[site(&[], files(&pair))]), Err(e));
    }

    // A certificate that does not cover a host of the route.
    let store = CertStore::new(dir.path());
    let e = store
        .prepare(&[site(&["tasks.example.com", "www.example.com"], files(&ok))])
        .unwrap_err();
    assert_eq!(e.field(), "hosts");
    assert!(matches!(&e, CertError::NotCovered { host, .. } if host == "www.example.com"));
    assert!(
        e.to_string().contains(
            "does not cover www.example.com (it covers tasks.example.com, *.tasks.example.com)"
        ),
        "{e}"
    );
    assert!(
        e.hint().contains("remove www.example.com from hosts"),
        "{e}"
    );
    // One label under the wildcard is covered; two are not.
    store
        .prepare(&[site(
            &["tasks.example.com", "eu.tasks.example.com"],
            files(&ok),
        )])
        .unwrap();
    assert!(store
        .prepare(&[site(&["a.eu.tasks.example.com"], files(&ok))])
        .is_err());
}

/// The DER of the certificate a TLS client gets for `sni` from `acceptor`, or the error.
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    ca_pem: &str,
    sni: &str,
    alpn: &[&[u8]],
) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = acceptor.clone();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = acceptor.accept(stream).await;
    });
    let config = cutover_http::testing::client_trusting(ca_pem, alpn);
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, stream))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())
        .map(|tls| {
            let (_, conn) = tls.get_ref();
            (
                conn.peer_certificates().unwrap()[0].to_vec(),
                conn.alpn_protocol().map(<[u8]>::to_vec),
            )
        });
    server.abort();
    result
}

#[tokio::test]
async fn the_certificate_is_picked_by_sni_and_reloaded_when_its_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let ca = TestCa::new("edge test CA");
    let tasks = ca.issue(&["tasks.example.com"]);
    let wild = ca.issue(&["*.example.org"]);
    let a = write_pair(dir.path(), "tasks", &tasks.cert_pem, &tasks.key_pem);
    let w = write_pair(dir.path(), "wild", &wild.cert_pem, &wild.key_pem);

    let store = Arc::new(CertStore::new(&certs));
    let resolver = Arc::new(Resolver::new(
        store.clone(),
        Arc::new(AlpnChallenges::default()),
    ));
    let sites = vec![
        site(&["tasks.example.com"], files(&a)),
        site(&["*.example.org"], files(&w)),
        site(&["new.example.net"], TlsSource::Acme),
    ];
    store.prepare(&sites).unwrap();
    resolver.install(&sites);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(resolver.clone()).unwrap());
    let ca_pem = ca.pem();

    // Exact host, then a wildcard of one label; HTTP/2 is offered first.
    let (cert, alpn) = handshake(
        &acceptor,
        &ca_pem,
        "tasks.example.com",
        &[b"h2", b"http/1.1"],
    )
    .await
    .unwrap();
    assert_eq!(cert, tasks.cert_der());
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (cert, alpn) = handshake(&acceptor, &ca_pem, "www.example.org", &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(cert, wild.cert_der());
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    // No certificate of another host for a name nobody serves, nor for an ACME host whose
    // certificate is not issued yet: the handshake fails.
    for name in ["other.example.com", "a.b.example.org", "new.example.net"] {
        let e = handshake(&acceptor, &ca_pem, name, &[]).await.unwrap_err();
        assert!(!e.contains("timed out"), "{name}: {e}");
    }

    // The ACME certificate appears in certs/: served from the next refresh on.
    let issued = ca.issue(&["new.example.net"]);
    let acme = Pair::acme(&certs, "new.example.net");
    std::fs::write(&acme.cert, &issued.cert_pem).unwrap();
    std::fs::write(&acme.key, &issued.key_pem).unwrap();
    assert_eq!(store.refresh(), vec![acme.clone()]);
    let (cert, _) = handshake(&acceptor, &ca_pem, "new.example.net", &[])
        .await
        .unwrap();
    assert_eq!(cert, issued.cert_der());

    // A renewed file is served after a refresh; a broken one keeps the last good certificate.
    let renewed = ca.issue(&["tasks.example.com"]);
    std::fs::write(&a.cert, &renewed.cert_pem).unwrap();
    std::fs::write(&a.key, &renewed.key_pem).unwrap();
    assert_eq!(store.refresh(), vec![a.clone()]);
    assert!(store.refresh().is_empty(), "nothing changed since");
    let (cert, _) = handshake(&acceptor, &ca_pem, "tasks.example.com", &[])
        .await
        .unwrap();
    assert_eq!(cert, renewed.cert_der());
    std::fs::write(&a.key, ca.issue(&["x.example.com"]).key_pem).unwrap();
    assert!(store.refresh().is_empty());
    std::fs::write(&a.cert, "half a file").unwrap();
    assert!(store.refresh().is_empty());
    let (cert, _) = handshake(&acceptor, &ca_pem, "tasks.example.com", &[])
        .await
        .unwrap();
    assert_eq!(
        cert,
        renewed.cert_der(),
        "the old certificate keeps serving"
    );
    std::fs::remove_file(&a.cert).unwrap();
    assert!(store.refresh().is_empty());
    let (cert, _) = handshake(&acceptor, &ca_pem, "tasks.example.com", &[])
        .await
        .unwrap();
    assert_eq!(
        cert,
        renewed.cert_der(),
        "a vanished file keeps the old one too"
    );

    // A host-less route's certificate serves any name on its listener.
    let store = Arc::new(CertStore::new(&certs));
    let resolver = Arc::new(Resolver::new(
        store.clone(),
        Arc::new(AlpnChallenges::default()),
    ));
    let sites = vec![site(&[], files(&w))];
    store.prepare(&sites).unwrap();
    resolver.install(&sites);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(resolver).unwrap());
    let e = handshake(&acceptor, &ca_pem, "anything.example.com", &[])
        .await
        .unwrap_err();
    // Served (the client refuses a certificate for another name, which is the point).
    assert!(
        e.contains("NotValidForName") || e.contains("not valid for name"),
        "{e}"
    );
}
