//! Registry logins from the Docker client's config, as `docker login` left them: the
//! `credHelpers` entry of the registry, else the `credsStore` helper, else the base64 `auth`
//! entry of `auths`. A helper is used only when its binary (`docker-credential-<name>`) is on
//! `PATH`. Values are never shown; errors name the file or the helper.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use crate::SecretError;

/// Docker Hub's names; its logins are kept under `https://index.docker.io/v1/`.
const DOCKER_HUB: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// The Docker client config of this user: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir).join("config.json")),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".docker").join("config.json")),
    }
}

/// The login the Docker client would use for `registry` (`host[:port]`), if it has one.
pub fn docker_login(registry: &str) -> Result<Option<(String, String)>, SecretError> {
    let Some(path) = docker_config_path() else {
        return Ok(None);
    };
    let search = std::env::var_os("PATH").unwrap_or_default();
    login_from(&path, registry, &search)
}

/// [`docker_login`] from the config at `path`, finding helpers on `search` (a `PATH`).
pub(crate) fn login_from(
    path: &Path,
    registry: &str,
    search: &OsStr,
) -> Result<Option<(String, String)>, SecretError> {
    let fail = |detail: String| SecretError::DockerConfig {
        path: path.to_path_buf(),
        detail,
    };
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(format!("cannot read it: {e}"))),
    };
    let config: DockerConfig = serde_json::from_slice(&text)
        .map_err(|e| fail(format!("not a Docker client config: {e}")))?;
    let host = normalize(registry);

    let helper = config
        .cred_helpers
        .iter()
        .find(|(key, _)| normalize(key) == host)
        .map(|(_, h)| h.clone())
        .or(config.creds_store.clone())
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        if let Some(bin) = find_helper(&helper, search) {
            return run_helper(&bin, &host).map_err(fail);
        }
    }
    for (key, entry) in &config.auths {
        if normalize(key) != host {
            continue;
        }
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| fail(format!("the auth entry of {key} is not base64")))?;
            let raw = String::from_utf8(raw)
                .map_err(|_| fail(format!("the auth entry of {key} is not text")))?;
            let Some((user, password)) = raw.split_once(':') else {
                return Err(fail(format!(
                    "the auth entry of {key} is not base64 of user:password"
                )));
            };
            return Ok(Some((user.to_string(), password.to_string())));
        }
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some((u.clone(), p.clone())));
        }
    }
    Ok(None)
}

/// `https://index.docker.io/v1/` → `docker.io`; `https://host:5000/` → `host:5000`.
fn normalize(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or("").to_ascii_lowercase();
    if DOCKER_HUB.contains(&host.as_str()) {
        "docker.io".to_string()
    } else {
        host
    }
}

fn find_helper(name: &str, search: &OsStr) -> Option<PathBuf> {
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return None;
    }
    std::env::split_paths(search)
        .map(|dir| dir.join(format!("docker-credential-{name}")))
        .find(|p| p.is_file())
}

/// `docker-credential-<name> get`, the server on stdin, `{"Username", "Secret"}` on stdout.
fn run_helper(bin: &Path, host: &str) -> Result<Option<(String, String)>, String> {
    let server = if host == "docker.io" {
        DOCKER_HUB_KEY
    } else {
        host
    };
    let shown = bin.display();
    let mut child = Command::new(bin)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the credential helper {shown}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("the credential helper {shown} failed: {e}"))?;
    if !out.status.success() {
        // Helpers say "credentials not found in native keychain" on stdout.
        let said = String::from_utf8_lossy(&out.stdout).to_lowercase()
            + &String::from_utf8_lossy(&out.stderr).to_lowercase();
        if said.contains("not found") {
            return Ok(None);
        }
        let last = String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        return Err(format!(
            "the credential helper {shown} failed ({}) for {server}: {last}",
            out.status
        ));
    }
    let answer: HelperAnswer = serde_json::from_slice(&out.stdout).map_err(|_| {
        format!("the credential helper {shown} answered something that is not its JSON")
    })?;
    Ok(Some((answer.username, answer.secret)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("cutover-docker-auth-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn base64_auth_entries_are_read_for_their_registry_only() {
        let d = dir("auths");
        let path = d.join("config.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}}, "127.0.0.1:5000": {{"auth": "{}"}}}}}}"#,
                b64("hub-user:hub-pass"),
                b64("ci:s3cret:with:colons")
            ),
        )
        .unwrap();
        let none = OsStr::new("");
        assert_eq!(
            login_from(&path, "docker.io", none).unwrap(),
            Some(("hub-user".into(), "hub-pass".into()))
        );
        assert_eq!(
            login_from(&path, "127.0.0.1:5000", none).unwrap(),
            Some(("ci".into(), "s3cret:with:colons".into()))
        );
        assert_eq!(login_from(&path, "ghcr.io", none).unwrap(), None);
        assert_eq!(
            login_from(&d.join("missing.json"), "ghcr.io", none).unwrap(),
            None
        );

        std::fs::write(&path, r#"{"auths": {"ghcr.io": {"auth": "%%%"}}}"#).unwrap();
        let e = login_from(&path, "ghcr.io", none).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("not base64"), "{e}");
        std::fs::write(&path, "{").unwrap();
        let e = login_from(&path, "ghcr.io", none).unwrap_err().to_string();
        assert!(e.contains("not a Docker client config"), "{e}");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn credential_helpers_are_asked_when_their_binary_exists() {
        let d = dir("helpers");
        let helper = d.join("docker-credential-cutovertest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\nif [ \"$server\" = ghcr.io ]; then echo '{\"ServerURL\":\"ghcr.io\",\"Username\":\"bot\",\"Secret\":\"tok\"}'; else echo 'credentials not found in native keychain'; exit 1; fi\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = d.join("config.json");
        std::fs::write(
            &path,
            r#"{"credHelpers": {"ghcr.io": "cutovertest", "quay.io": "absent"}, "auths": {"quay.io": {"username": "q", "password": "p"}}}"#,
        )
        .unwrap();
        let search = d.clone().into_os_string();
        assert_eq!(
            login_from(&path, "ghcr.io", &search).unwrap(),
            Some(("bot".into(), "tok".into()))
        );
        // The helper of quay.io is not installed: the auths entry is used.
        assert_eq!(
            login_from(&path, "quay.io", &search).unwrap(),
            Some(("q".into(), "p".into()))
        );
        // A credsStore that does not know the registry: no login.
        std::fs::write(&path, r#"{"credsStore": "cutovertest"}"#).unwrap();
        assert_eq!(login_from(&path, "docker.io", &search).unwrap(), None);
        let _ = std::fs::remove_dir_all(d);
    }
}
