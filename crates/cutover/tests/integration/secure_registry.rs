//! Registries as teams run them: Debian's `docker-registry` over TLS (a certificate from a CA
//! the test makes, trusted by the Docker engine through `/etc/docker/certs.d/<host:port>/ca.crt`
//! and by cutover through `[registry] ca_bundle`), with htpasswd basic auth, or with its
//! `auth: token:` configuration trusting a signing key of the test, whose small token endpoint
//! issues JWTs as Docker Hub's documented token flow does. The registry itself validates the
//! tokens; the endpoint is the only stand-in (no token server can be installed here).

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use cutover_http::testing::{Answer, Recorded, TestCa, TestServer};

use crate::container_support::spawn_watched_registry;
use crate::support::free_port;

/// How the registry checks who asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `auth: htpasswd:` (bcrypt entries made with `htpasswd -Bbn`).
    Htpasswd,
    /// `auth: token:`, with the test's token endpoint as realm.
    Token,
}

pub struct SecureRegistry {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// The PEM file of the CA that signed the registry's certificate.
    pub ca_file: PathBuf,
    /// The token endpoint (token auth only; kept running while the registry is), and how many
    /// tokens it issued.
    token_endpoint: Option<TestServer>,
    pub tokens_issued: Arc<AtomicUsize>,
    dir: PathBuf,
    certs_d: PathBuf,
}

const SERVICE: &str = "cutover-test-registry";
const ISSUER: &str = "cutover-test-token-issuer";

impl SecureRegistry {
    /// Starts a TLS registry accepting `user`/`password`; `Err` says why it could not.
    pub fn start(auth: Auth, user: &str, password: &str) -> Result<SecureRegistry, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cutover-it-secure-registry-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(dir.join("storage")).map_err(|e| e.to_string())?;
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");

        let ca = TestCa::new("cutover test registry CA");
        let ca_file = ca.write(&dir.join("ca.pem"));
        let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]).write(&dir);

        let tokens_issued = Arc::new(AtomicUsize::new(0));
        let (auth_yaml, token_endpoint) = match auth {
            Auth::Htpasswd => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .map_err(|e| {
                        format!("htpasswd cannot run ({e}): apt-get install -y apache2-utils")
                    })?;
                if !out.status.success() {
                    return Err(format!(
                        "htpasswd failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                fs::write(dir.join("htpasswd"), &out.stdout).map_err(|e| e.to_string())?;
                (
                    format!(
                        "auth:\n  htpasswd:\n    realm: cutover-test\n    path: {}\n",
                        dir.join("htpasswd").display()
                    ),
                    None,
                )
            }
            Auth::Token => {
                let signer = TestCa::new("cutover test token signer");
                let bundle = signer.write(&dir.join("token-signer.pem"));
                let endpoint = token_endpoint(signer, user, password, tokens_issued.clone());
                (
                    format!(
                        "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                        endpoint.url(false, "/token"),
                        bundle.display()
                    ),
                    Some(endpoint),
                )
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{auth_yaml}http:\n  addr: {addr}\n  tls:\n    certificate: {}\n    key: {}\n",
            dir.join("storage").display(),
            cert.display(),
            key.display()
        );

        // The engine trusts the test CA for this registry only.
        let certs_d = PathBuf::from("/etc/docker/certs.d").join(&addr);
        fs::create_dir_all(&certs_d)
            .map_err(|e| format!("cannot create {}: {e}", certs_d.display()))?;
        fs::copy(&ca_file, certs_d.join("ca.crt")).map_err(|e| e.to_string())?;

        let registry = SecureRegistry {
            addr: addr.clone(),
            ca_file,
            token_endpoint,
            tokens_issued,
            dir: dir.clone(),
            certs_d,
        };
        spawn_watched_registry(&dir, &config)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(&addr).is_err() {
            if Instant::now() > deadline {
                let log = fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
                return Err(format!("docker-registry did not listen on {addr}: {log}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    /// The `[registry]` lines for this registry: credentials from `REG_USER`/`REG_PASSWORD`,
    /// and its CA.
    pub fn registry_lines(&self) -> String {
        format!(
            "username = {{ env = \"REG_USER\" }}\npassword = {{ env = \"REG_PASSWORD\" }}\nca_bundle = \"{}\"",
            self.ca_file.display()
        )
    }

    /// The `User-Agent`s of the token requests so far (the engine's and cutover's).
    pub fn token_clients(&self) -> Vec<String> {
        self.token_endpoint
            .as_ref()
            .map(|t| {
                t.requests()
                    .iter()
                    .map(|r| r.header("user-agent").unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for SecureRegistry {
    fn drop(&mut self) {
        // The watchdog stops the registry and removes its dir.
        let _ = fs::write(self.dir.join("stop"), "");
        let _ = fs::remove_dir_all(&self.certs_d);
    }
}

/// The token endpoint of Docker's token authentication: `GET /token?service=…&scope=…` with
/// basic auth; a signed JWT granting the requested actions on the requested repositories.
fn token_endpoint(
    signer: TestCa,
    user: &str,
    password: &str,
    issued: Arc<AtomicUsize>,
) -> TestServer {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let user = user.to_string();
    let x5c = base64::engine::general_purpose::STANDARD.encode(signer.cert_der());
    let rng = ring::rand::SystemRandom::new();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &signer.key_pkcs8_der(),
        &rng,
    )
    .expect("signing key");
    TestServer::start(None, move |r: &Recorded| -> Answer {
        if r.header("authorization") != Some(expected.as_str()) {
            return (
                401,
                vec![("content-type".into(), "application/json".into())],
                br#"{"details":"incorrect username or password"}"#.to_vec(),
            );
        }
        let query = r.path.split_once('?').map_or("", |(_, q)| q);
        let mut service = String::new();
        let mut access = Vec::new();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match k {
                "service" => service = v,
                "scope" => {
                    // repository:<name>:<action>[,<action>]
                    let mut parts = v.rsplitn(2, ':');
                    let actions = parts.next().unwrap_or("");
                    let rest = parts.next().unwrap_or("");
                    if let Some((kind, name)) = rest.split_once(':') {
                        access.push(serde_json::json!({
                            "type": kind,
                            "name": name,
                            "actions": actions.split(',').collect::<Vec<_>>(),
                        }));
                    }
                }
                _ => {}
            }
        }
        if service != SERVICE {
            return (400, vec![], b"{\"details\":\"unknown service\"}".to_vec());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let n = issued.fetch_add(1, Ordering::SeqCst);
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": user,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now - 10,
            "jti": format!("cutover-test-{n}"),
            "access": access,
        });
        let signing_input = format!("{}.{}", b64(&header), b64(&claims));
        let signature = key
            .sign(&rng, signing_input.as_bytes())
            .expect("sign the token");
        let jwt = format!(
            "{signing_input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature.as_ref())
        );
        let body = serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300});
        (
            200,
            vec![("content-type".into(), "application/json".into())],
            body.to_string().into_bytes(),
        )
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `path` holds `needle` anywhere under it (files read as bytes).
pub fn tree_contains(path: &Path, needle: &str) -> Option<PathBuf> {
    for file in crate::support::files_under(path) {
        if let Ok(bytes) = fs::read(&file) {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                return Some(file);
            }
        }
    }
    None
}
