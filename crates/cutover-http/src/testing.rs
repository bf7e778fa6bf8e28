//! Test parts (feature `testing`): a CA that issues certificates, and a small HTTP(S) server
//! that records what it is sent and answers as the test says. Used by the tests of every crate
//! that talks HTTP out, so that none of them carries its own TLS server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A TLS client configuration that trusts only the certificates of `roots_pem` (a test CA's,
/// Pebble's) and offers `alpn` (e.g. `[b"h2"]`), for tests that speak TLS to a server.
pub fn client_trusting(roots_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a CA certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS 1.2 and 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A certificate authority made for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate (and its key) issued by a [`TestCa`].
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { cert, key }
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA's certificate, DER (e.g. for a JWT's `x5c` when the CA signs tokens).
    pub fn cert_der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// The CA's private key, PKCS#8 DER (ECDSA P-256).
    pub fn key_pkcs8_der(&self) -> Vec<u8> {
        self.key.serialize_der()
    }

    /// Writes the CA's certificate to `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.pem()).expect("write CA");
        path.to_path_buf()
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid now.
    pub fn issue(&self, names: &[&str]) -> Issued {
        self.issue_with(names, false)
    }

    /// A server certificate for `names` that expired in 2001.
    pub fn issue_expired(&self, names: &[&str]) -> Issued {
        self.issue_with(names, true)
    }

    fn issue_with(&self, names: &[&str], expired: bool) -> Issued {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("issue");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }
}

impl Issued {
    /// The certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Writes `cert.pem` and `key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// One request a [`TestServer`] received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a [`TestServer`] answers: status, headers, body.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

type Handler = dyn Fn(&Recorded) -> Answer + Send + Sync;

/// An HTTP or HTTPS server on 127.0.0.1, on its own thread and runtime (usable from sync and
/// async tests alike); it stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    /// Serves HTTPS with `tls`, or plain HTTP with `None`; `handler` answers each request.
    pub fn start(
        tls: Option<&Issued>,
        handler: impl Fn(&Recorded) -> Answer + Send + Sync + 'static,
    ) -> TestServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tls.map(|t| {
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(t.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(t.key_der.clone())),
            )
            .expect("server config");
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let recorded = requests.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let handler = handler.clone();
                        let recorded = recorded.clone();
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let service = service_fn(move |req| {
                                let handler = handler.clone();
                                let recorded = recorded.clone();
                                async move { answer(req, &*handler, &recorded).await }
                            });
                            let http = hyper::server::conn::http1::Builder::new();
                            match acceptor {
                                Some(a) => {
                                    if let Ok(tls) = a.accept(stream).await {
                                        let io = hyper_util::rt::TokioIo::new(tls);
                                        let _ = http.serve_connection(io, service).await;
                                    }
                                }
                                None => {
                                    let io = hyper_util::rt::TokioIo::new(stream);
                                    let _ = http.serve_connection(io, service).await;
                                }
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        TestServer {
            addr,
            requests,
            stop: Some(stop),
        }
    }

    /// `https://127.0.0.1:<port>` (or `http://` for a plain server given `false`).
    pub fn url(&self, https: bool, path: &str) -> String {
        let scheme = if https { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// What the server received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    handler: &Handler,
    recorded: &Mutex<Vec<Recorded>>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req.into_body().collect().await?.to_bytes().to_vec();
    let request = Recorded {
        method,
        path,
        headers,
        body,
    };
    let (status, headers, body) = handler(&request);
    recorded
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request);
    let mut resp = hyper::Response::builder().status(status);
    for (k, v) in headers {
        resp = resp.header(k, v);
    }
    Ok(resp
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new()))))
}

/// Pebble, Let's Encrypt's test ACME server (Debian's `pebble`), with `pebble-challtestsrv`
/// answering DNS with 127.0.0.1 for every name, both on loopback ports of their own; killed
/// when dropped. Validation connects to the given ports on 127.0.0.1.
pub struct Pebble {
    children: Vec<std::process::Child>,
    /// The ACME directory URL.
    pub directory: String,
    management: u16,
    /// The CA of Pebble's own HTTPS certificate (what `[acme] ca_bundle` trusts).
    pub ca_bundle: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn have(binary: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Pebble {
    /// Starts Pebble (files in `dir`), validating HTTP-01 on `http_port` and TLS-ALPN-01 on
    /// `tls_port`. `None` (and says why) without the binaries, unless `CUTOVER_REQUIRE_PEBBLE=1`
    /// (CI), which makes that a failure.
    pub fn start(dir: &Path, http_port: u16, tls_port: u16) -> Option<Pebble> {
        use std::process::{Command, Stdio};
        if !have("pebble") || !have("pebble-challtestsrv") {
            assert!(
                std::env::var("CUTOVER_REQUIRE_PEBBLE").as_deref() != Ok("1"),
                "CUTOVER_REQUIRE_PEBBLE=1 but pebble or pebble-challtestsrv is missing (apt-get install pebble)"
            );
            eprintln!("skipped: pebble and pebble-challtestsrv are not installed (apt-get install pebble)");
            return None;
        }
        std::fs::create_dir_all(dir).expect("pebble dir");
        let ca = TestCa::new("pebble wfe CA");
        let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]).write(dir);
        let ca_bundle = ca.write(&dir.join("ca.pem"));
        let (listen, management, dns) = (free_port(), free_port(), free_port());
        let config = dir.join("pebble.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"pebble": {{"listenAddress": "127.0.0.1:{listen}", "managementListenAddress": "127.0.0.1:{management}", "certificate": "{}", "privateKey": "{}", "httpPort": {http_port}, "tlsPort": {tls_port}, "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}"#,
                cert.display(),
                key.display()
            ),
        )
        .expect("pebble config");
        let log = |name: &str| std::fs::File::create(dir.join(name)).expect("log file");
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv starts");
        let pebble = Command::new("pebble")
            .args(["-config", &config.display().to_string()])
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble starts");
        let pebble = Pebble {
            children: vec![dns_server, pebble],
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management,
            ca_bundle,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", management)).is_err()
        {
            assert!(std::time::Instant::now() < deadline, "pebble did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(pebble)
    }

    /// The root that signs what Pebble issues (made anew each time Pebble starts), PEM.
    pub async fn issuing_root(&self) -> String {
        let client =
            crate::client(&crate::ClientOptions::verified(Some(&self.ca_bundle))).expect("client");
        let url = format!("https://127.0.0.1:{}/roots/0", self.management);
        client
            .get(url)
            .send()
            .await
            .expect("pebble's management port answers")
            .text()
            .await
            .expect("a PEM root")
    }
}
