//! How the CLI reaches cutover servers on other machines: per server URL, the certificate
//! fingerprint it pins and the token it sends, kept by `cutover login` in a file only the user
//! can read (`$XDG_CONFIG_HOME/cutover/servers.json`, else `~/.config/cutover/servers.json`,
//! mode 0600) — never in `cutover.toml`. For CI, `CUTOVER_TOKEN` (or `--token-file`) and
//! `CUTOVER_SERVER_FINGERPRINT` work without a login and take precedence.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context as _;
use cutover_api::Refusal;
use serde::{Deserialize, Serialize};

/// What the CLI needs to talk to one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// `sha256:<hex>` of the server's certificate.
    pub fingerprint: String,
    pub token: String,
}

static TOKEN_FILE: OnceLock<PathBuf> = OnceLock::new();

/// `--token-file`, given once on the command line for the whole invocation.
pub fn set_token_file(path: PathBuf) {
    let _ = TOKEN_FILE.set(path);
}

/// The file `cutover login` keeps.
pub fn file() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).context(
                "neither XDG_CONFIG_HOME nor HOME is set: cannot find where logins are kept",
            )?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(base.join("cutover").join("servers.json"))
}

fn load(path: &Path) -> anyhow::Result<BTreeMap<String, Credentials>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a cutover login file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn store(path: &Path, all: &BTreeMap<String, Credentials>) -> anyhow::Result<()> {
    cutover_daemon::write_private(path, &serde_json::to_vec_pretty(all)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Keeps `credentials` for `url`.
pub fn save(url: &str, credentials: Credentials) -> anyhow::Result<PathBuf> {
    let path = file()?;
    let mut all = load(&path)?;
    all.insert(url.to_string(), credentials);
    store(&path, &all)?;
    Ok(path)
}

/// Forgets `url`; whether it was known.
pub fn forget(url: &str) -> anyhow::Result<bool> {
    let path = file()?;
    let mut all = load(&path)?;
    let known = all.remove(url).is_some();
    if known {
        store(&path, &all)?;
    }
    Ok(known)
}

/// The token `--token-file` or `CUTOVER_TOKEN` gives, if one does.
pub fn token_from_environment() -> anyhow::Result<Option<String>> {
    if let Some(path) = TOKEN_FILE.get() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        let token = text.trim().to_string();
        anyhow::ensure!(
            !token.is_empty(),
            "the token file {} is empty",
            path.display()
        );
        return Ok(Some(token));
    }
    Ok(std::env::var("CUTOVER_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// What to use for `url`: the environment's token and fingerprint first, then the login.
pub fn for_server(url: &str) -> anyhow::Result<Credentials> {
    let saved = load(&file()?)?.remove(url);
    let token = token_from_environment()?.or_else(|| saved.as_ref().map(|s| s.token.clone()));
    let fingerprint = match std::env::var("CUTOVER_SERVER_FINGERPRINT") {
        Ok(f) if !f.trim().is_empty() => Some(parse_pin(&f, "CUTOVER_SERVER_FINGERPRINT")?),
        _ => saved.map(|s| s.fingerprint),
    };
    match (token, fingerprint) {
        (Some(token), Some(fingerprint)) => Ok(Credentials { fingerprint, token }),
        _ => Err(Refusal::new(
            format!("not logged in to {url}"),
            Some(format!(
                "`cutover login {url} --fingerprint sha256:… --token …` (the fingerprint is what `cutover server info` shows there); in CI, set CUTOVER_TOKEN and CUTOVER_SERVER_FINGERPRINT"
            )),
        )
        .into()),
    }
}

/// A fingerprint as `cutover server info` prints it (or as openssl does).
pub fn parse_pin(text: &str, what: &str) -> anyhow::Result<String> {
    cutover_http::pin::parse_fingerprint(text).ok_or_else(|| {
        Refusal::new(
            format!("{what}: {text:?} is not a SHA-256 certificate fingerprint"),
            Some(
                "copy it from `cutover server info` on the server: sha256: and 64 hex digits"
                    .into(),
            ),
        )
        .into()
    })
}
