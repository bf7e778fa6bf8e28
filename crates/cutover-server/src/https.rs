//! The server's HTTPS listener (`cutover server --listen ADDR`): the whole API for other
//! machines, over TLS (rustls), each call authenticated by a token whose role allows it
//! (`auth.rs`). The certificate comes from files (`--tls-cert`, `--tls-key`) or is one the
//! server makes itself on first start and keeps in the state dir; clients pin its SHA-256
//! fingerprint, so no CA is involved.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A client has this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's TLS identity: its rustls config and the fingerprint clients pin.
pub struct Identity {
    pub config: Arc<rustls::ServerConfig>,
    /// `sha256:<hex>` of the leaf certificate (DER).
    pub fingerprint: String,
    /// Where the certificate is, for messages.
    pub cert_file: PathBuf,
}

/// Where a server keeps the certificate it made itself.
pub fn own_cert_files(state_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = state_dir.join("tls");
    (dir.join("server.crt"), dir.join("server.key"))
}

/// `sha256:<hex>` of a certificate's DER bytes.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// The fingerprint of the certificate in `path` (PEM), for `cutover server info`.
pub fn fingerprint_of(path: &Path) -> Result<String, String> {
    let certs = read_certs(path)?;
    Ok(fingerprint(&certs[0]))
}

/// The identity from `cert`/`key` when given, else the server's own (made on first start).
pub fn identity(state_dir: &Path, files: Option<(&Path, &Path)>) -> Result<Identity, String> {
    let (cert_file, key_file) = match files {
        Some((cert, key)) => (cert.to_path_buf(), key.to_path_buf()),
        None => {
            let (cert, key) = own_cert_files(state_dir);
            if !cert.exists() || !key.exists() {
                make_own(&cert, &key)?;
            }
            (cert, key)
        }
    };
    let certs = read_certs(&cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|e| {
        format!(
            "cannot read a private key from {}: {e}\n  hint: give --tls-key a PEM file with the certificate's key (PKCS#8, PKCS#1 or SEC1)",
            key_file.display()
        )
    })?;
    let fingerprint = fingerprint(&certs[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "the certificate {} and the key {} do not go together: {e}\n  hint: give the key that was made with this certificate",
                cert_file.display(),
                key_file.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Identity {
        config: Arc::new(config),
        fingerprint,
        cert_file,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let hint = "give --tls-cert a PEM file that starts with the server's certificate";
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "cannot read certificates from {}: {e}\n  hint: {hint}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate\n  hint: {hint}",
            path.display()
        ));
    }
    Ok(certs)
}

/// Makes a self-signed certificate for this server and keeps it (key mode 0600).
fn make_own(cert_file: &Path, key_file: &Path) -> Result<(), String> {
    let mut names = vec!["localhost".to_string()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && host != "localhost" {
            names.push(host.to_string());
        }
    }
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot make the server's certificate: {e}"))?;
    let dir = cert_file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    cutover_daemon::write_private(key_file, made.key_pair.serialize_pem().as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", key_file.display()))?;
    cutover_daemon::write_atomic(cert_file, made.cert.pem().as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", cert_file.display()))?;
    Ok(())
}

/// Binds `addr`, with an error that says what to do.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot listen on {addr}: {e}\n  hint: pick a free address for --listen, e.g. 0.0.0.0:9871")
    })
}

/// Serves `app` over TLS on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, app: Router, identity: Arc<rustls::ServerConfig>) {
    let acceptor = TlsAcceptor::from(identity);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    eprintln!("https: TLS handshake with {peer} failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let service = TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await;
        });
    }
}
