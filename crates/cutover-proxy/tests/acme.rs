//! ACME end to end against Pebble (Debian's `pebble`, with `pebble-challtestsrv` answering DNS
//! with 127.0.0.1 for every name), started here on loopback ports of this test: certificates
//! issued over TLS-ALPN-01 and HTTP-01, served by SNI and verified against Pebble's root,
//! renewed, and the clear errors of an unreachable directory and a refused order.
//! Without the binaries the test says so and passes, unless `CUTOVER_REQUIRE_PEBBLE=1` (CI).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cutover_http::testing::Pebble;
use cutover_proxy::acme::{Acme, AcmeError, AcmeSettings, RenewError, Wanted};
use cutover_proxy::tls::{self, AlpnChallenges, CertStore, Pair, Resolver, Site, TlsSource};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn settings(pebble: &Pebble) -> AcmeSettings {
    AcmeSettings {
        directory: pebble.directory.clone(),
        email: Some("ops@example.com".into()),
        ca_bundle: Some(pebble.ca_bundle.clone()),
        renew_before_secs: 30 * 86_400,
    }
}

/// The edge's two challenge answerers, as the real listeners will be: TLS handshakes with the
/// resolver (TLS-ALPN-01), and plain HTTP answering /.well-known/acme-challenge/ (HTTP-01).
async fn answerers(resolver: Arc<Resolver>, acme: Arc<Acme>) -> (SocketAddr, SocketAddr) {
    let tls_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = tls_listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(resolver).unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = tls_listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http_listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = http_listener.accept().await {
            let acme = acme.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let token = req
                        .uri()
                        .path()
                        .strip_prefix("/.well-known/acme-challenge/")
                        .and_then(|t| acme.http01.get(t));
                    async move {
                        Ok::<_, std::convert::Infallible>(match token {
                            Some(answer) => hyper::Response::new(Full::new(Bytes::from(answer))),
                            None => hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        })
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (tls_addr, http_addr)
}

/// The leaf served for `sni`, verified against `root`.
async fn served(addr: SocketAddr, root: &str, sni: &str) -> Result<Vec<u8>, String> {
    let config = cutover_http::testing::client_trusting(root, &[]);
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from(sni.to_string()).unwrap(), stream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_issued_served_and_renewed_by_acme_against_pebble() {
    // The answerers first: Pebble is told their ports.
    let edge_dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CertStore::new(&edge_dir.path().join("certs")));
    let alpn = Arc::new(AlpnChallenges::default());
    let resolver = Arc::new(Resolver::new(store.clone(), alpn.clone()));
    let acme = Arc::new(Acme::new(edge_dir.path(), store.clone(), alpn));
    let (tls_addr, http_addr) = answerers(resolver.clone(), acme.clone()).await;
    let pebble_dir = tempfile::tempdir().unwrap();
    let Some(pebble) = Pebble::start(pebble_dir.path(), http_addr.port(), tls_addr.port()) else {
        return;
    };
    let settings = settings(&pebble);

    let (by_alpn, by_http) = ("alpn.tasks.test", "http.tasks.test");
    let sites = vec![Site {
        hosts: vec![by_alpn.into(), by_http.into()],
        source: TlsSource::Acme,
    }];
    store.prepare(&sites).unwrap();
    resolver.install(&sites);
    let mut wanted = BTreeMap::new();
    wanted.insert(
        by_alpn.to_string(),
        Wanted {
            settings: settings.clone(),
            http01: false,
        },
    );
    wanted.insert(
        by_http.to_string(),
        Wanted {
            settings: settings.clone(),
            http01: true,
        },
    );
    acme.want(wanted);
    // Before anything is issued, handshakes fail cleanly: no certificate of another host.
    let root = pebble.issuing_root().await;
    assert!(served(tls_addr, &root, by_alpn).await.is_err());

    // The renewal loop obtains both (TLS-ALPN-01 for one, HTTP-01 for the other).
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let looping = tokio::spawn(acme.clone().run(Duration::from_millis(200), async move {
        let _ = stop_rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(30);
    while acme.status().iter().any(|s| s.not_after.is_none()) {
        assert!(
            Instant::now() < deadline,
            "not issued in time: {:?}",
            acme.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    looping.await.unwrap();
    let status = acme.status();
    assert!(status.iter().all(|s| s.error.is_none()), "{status:?}");
    let first = served(tls_addr, &root, by_alpn).await.unwrap();
    served(tls_addr, &root, by_http).await.unwrap();

    // Kept 0600 in the edge's dir: the account key and each certificate's key.
    let pair = Pair::acme(&edge_dir.path().join("certs"), by_alpn);
    assert_eq!(mode(&pair.key), 0o600);
    assert_eq!(mode(&pair.cert), 0o600);
    let accounts: Vec<_> = std::fs::read_dir(edge_dir.path().join("acme"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(accounts.len(), 1, "one account for one (directory, email)");
    assert_eq!(mode(&accounts[0]), 0o600);

    // Renewed at once when asked: a new certificate serves; the account is reused.
    let not_after = acme.renew(by_alpn).await.unwrap();
    assert!(not_after > tls::now());
    let second = served(tls_addr, &root, by_alpn).await.unwrap();
    assert_ne!(first, second, "the renewed certificate serves");
    assert_eq!(
        std::fs::read_dir(edge_dir.path().join("acme"))
            .unwrap()
            .count(),
        1
    );
    // A store started afresh (an edge restart) serves the same files.
    let restarted = Arc::new(CertStore::new(&edge_dir.path().join("certs")));
    restarted.prepare(&sites).unwrap();
    assert!(restarted.current(&pair).is_some());

    // A host no ACME route has.
    assert_eq!(acme.renew("other.test").await, Err(RenewError::NotAcme));

    // A directory nobody answers: a clear error, and the old certificate keeps serving.
    let mut wanted = BTreeMap::new();
    let unreachable = AcmeSettings {
        directory: format!("https://127.0.0.1:{}/dir", free_port()),
        ..settings.clone()
    };
    wanted.insert(
        by_alpn.to_string(),
        Wanted {
            settings: unreachable.clone(),
            http01: false,
        },
    );
    // A name the CA refuses to order (a DNS identifier that is an IP address).
    wanted.insert(
        "127.0.0.1".to_string(),
        Wanted {
            settings: settings.clone(),
            http01: false,
        },
    );
    acme.want(wanted);
    let e = match acme.renew(by_alpn).await {
        Err(RenewError::Acme(e)) => e,
        other => panic!("{other:?}"),
    };
    assert!(matches!(e, AcmeError::Unreachable { .. }), "{e}");
    assert!(
        e.to_string().contains(&unreachable.directory) && e.to_string().contains("refused"),
        "{e}"
    );
    assert!(e.hint().contains("[acme] directory"), "{}", e.hint());
    assert_eq!(served(tls_addr, &root, by_alpn).await.unwrap(), second);
    let state = acme
        .status()
        .into_iter()
        .find(|s| s.host == by_alpn)
        .unwrap();
    assert_eq!(state.error.as_deref(), Some(e.to_string().as_str()));
    assert!(state.not_after.is_some(), "{state:?}");

    let e = match acme.renew("127.0.0.1").await {
        Err(RenewError::Acme(e)) => e,
        other => panic!("{other:?}"),
    };
    assert!(matches!(e, AcmeError::Refused { .. }), "{e}");
    assert!(
        e.to_string().contains("refused the order for 127.0.0.1"),
        "{e}"
    );
}
