//! Validating deserializers for single fields. Validation happens while deserializing so that
//! the TOML error carries the span of the offending value (or key).

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Separates a message from its hint inside a serde custom error; split again in `error.rs`.
pub(crate) const HINT_SEP: &str = "\n  hint: ";

/// A serde error made of a message and the fix.
pub(crate) fn invalid<E: de::Error>(message: &str, hint: &str) -> E {
    E::custom(format!("{message}{HINT_SEP}{hint}"))
}

/// `[A-Za-z_][A-Za-z0-9_]*`
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `[a-z0-9-]+`
fn is_lower_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub(crate) const ENV_VAR_HINT: &str =
    "environment variable names use letters, digits and `_`, and do not start with a digit, e.g. DATABASE_URL";

/// The name of the app: `[a-z0-9-]+`, 1 to 63 characters (it becomes part of process,
/// container and DNS names).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AppName(String);

impl AppName {
    /// Checks `name`; the error says what is wrong and the fix.
    pub fn new(name: &str) -> Result<AppName, String> {
        Self::check(name).map_err(|(message, hint)| format!("{message}: {hint}"))
    }

    fn check(name: &str) -> Result<AppName, (String, String)> {
        let hint = "use 1 to 63 lowercase letters, digits and `-`, e.g. \"tasks-app\"".to_string();
        if name.is_empty() || name.len() > 63 {
            return Err((format!("{name:?} must be 1 to 63 characters long"), hint));
        }
        if !is_lower_name(name) {
            return Err((format!("{name:?} is not a valid app name"), hint));
        }
        Ok(AppName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AppName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AppName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AppName, D::Error> {
        let name = String::deserialize(d)?;
        AppName::check(&name).map_err(|(message, hint)| invalid(&message, &hint))
    }
}

/// A branch or remote name of `[pipeline]`: what `git check-ref-format` allows, and never
/// something git would read as an option.
pub(crate) fn git_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    let hint = "use a name as git shows it, e.g. \"main\" for a branch or \"origin\" for a remote";
    if name.is_empty() {
        return Err(invalid("must not be empty", hint));
    }
    if name.starts_with('-') {
        return Err(invalid(
            &format!("{name:?} starts with `-`, which git would read as an option"),
            hint,
        ));
    }
    let bad = name.chars().find(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    });
    if let Some(c) = bad {
        return Err(invalid(
            &format!("{name:?} has {c:?}, which git does not allow in a name"),
            hint,
        ));
    }
    if name.contains("..") || name.ends_with('/') || name.ends_with(".lock") || name.contains("@{")
    {
        return Err(invalid(&format!("{name:?} is not a name git allows"), hint));
    }
    Ok(name)
}

/// `[environments.X] server`: `https://host[:port]`, nothing more (no path, no credentials:
/// those live in `cutover login`'s file, never in `cutover.toml`).
pub(crate) fn server_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let url = String::deserialize(d)?;
    parse_server_url(&url)
        .map(Some)
        .map_err(|(message, hint)| invalid(&message, &hint))
}

/// Checks a server URL (`https://host[:port]`); returns it without a trailing `/`, or what is
/// wrong and the fix.
pub fn parse_server_url(url: &str) -> Result<String, (String, String)> {
    let hint = "write the server's address as `cutover server --listen` serves it, e.g. \"https://prod.example.com:9871\"".to_string();
    let Some(rest) = url.strip_prefix("https://") else {
        let why = if url.starts_with("http://") {
            format!("{url:?} is plain HTTP; a remote server is reached over HTTPS only")
        } else {
            format!("{url:?} is not an https:// URL")
        };
        return Err((why, hint));
    };
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() {
        return Err((format!("{url:?} names no host"), hint));
    }
    if host.contains('@') {
        return Err((
            "the URL carries credentials (not repeated here)".into(),
            "credentials never go in cutover.toml: use `cutover login URL --token …` (or CUTOVER_TOKEN in CI)".into(),
        ));
    }
    if let Some(c) = host
        .chars()
        .find(|c| matches!(c, '/' | '?' | '#') || c.is_whitespace())
    {
        return Err((
            format!("{url:?} has {c:?}: a server URL has no path, query or spaces"),
            hint,
        ));
    }
    if let Some((_, port)) = host.rsplit_once(':').filter(|_| !host.ends_with(']')) {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err((format!("{url:?} has no valid port"), hint));
        }
    }
    Ok(format!("https://{host}"))
}

/// A string, or a scalar of another type shown as written (for better errors).
pub(crate) enum StrOrOther {
    Str(String),
    Other(String),
}

impl<'de> Deserialize<'de> for StrOrOther {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StrOrOther, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrOrOther;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrOther, E> {
                Ok(StrOrOther::Str(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrOrOther, E> {
                Ok(StrOrOther::Other(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrOrOther, E> {
                Ok(StrOrOther::Other(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrOrOther, E> {
                Ok(StrOrOther::Other(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A key of an env map: an environment variable name.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct EnvVarKey(String);

impl<'de> Deserialize<'de> for EnvVarKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EnvVarKey, D::Error> {
        let name = String::deserialize(d)?;
        if is_env_var_name(&name) {
            Ok(EnvVarKey(name))
        } else {
            Err(invalid(
                &format!("{name:?} is not a valid environment variable name"),
                ENV_VAR_HINT,
            ))
        }
    }
}

/// A key of `[environments]`: `[a-z0-9-]+`.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct EnvironmentKey(String);

impl<'de> Deserialize<'de> for EnvironmentKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EnvironmentKey, D::Error> {
        let name = String::deserialize(d)?;
        if is_lower_name(&name) {
            Ok(EnvironmentKey(name))
        } else {
            Err(invalid(
                &format!("{name:?} is not a valid environment name"),
                "use lowercase letters, digits and `-`, e.g. [environments.staging]",
            ))
        }
    }
}

fn rekey<K, V>(map: BTreeMap<K, V>, key: impl Fn(K) -> String) -> BTreeMap<String, V> {
    map.into_iter().map(|(k, v)| (key(k), v)).collect()
}

pub(crate) fn env_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    BTreeMap::<EnvVarKey, String>::deserialize(d).map(|m| rekey(m, |k| k.0))
}

pub(crate) fn secrets_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, SecretSource>, D::Error> {
    BTreeMap::<EnvVarKey, SecretSource>::deserialize(d).map(|m| rekey(m, |k| k.0))
}

pub(crate) fn environments_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, crate::Environment>, D::Error> {
    BTreeMap::<EnvironmentKey, crate::Environment>::deserialize(d).map(|m| rekey(m, |k| k.0))
}

pub(crate) fn env_var_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    EnvVarKey::deserialize(d).map(|k| k.0)
}

/// A non-empty list of strings; a plain string gets a hint to write a list.
fn string_list<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    example: &'static str,
) -> Result<Vec<String>, D::Error> {
    struct V {
        what: &'static str,
        example: &'static str,
    }
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of strings")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Err(invalid(
                &format!(
                    "{v:?} is a string, but this must be a list of {}",
                    self.what
                ),
                &format!("write it as a list, e.g. {}", self.example),
            ))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                out.push(item);
            }
            if out.is_empty() {
                return Err(invalid(
                    &format!("the list of {} is empty", self.what),
                    &format!("give at least one, e.g. {}", self.example),
                ));
            }
            Ok(out)
        }
    }
    d.deserialize_any(V { what, example })
}

pub(crate) fn argv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    string_list(d, "arguments", r#"["python3", "serve.py"]"#)
}

pub(crate) fn files<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    string_list(d, "files", r#"["serve.py", "static/**"]"#)
}

pub(crate) fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let tags = string_list(d, "tags", r#"["latest"]"#)?;
    for tag in &tags {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && !tag.starts_with(['.', '-']);
        if !valid {
            return Err(invalid(
                &format!("{tag:?} is not a valid image tag"),
                "use letters, digits, `_`, `.` and `-` (at most 128), e.g. \"latest\" or \"staging\"",
            ));
        }
        if tag.len() == 40 && tag.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid(
                &format!("{tag:?} looks like a commit sha"),
                "the <sha> tag is given by cutover; moving tags are names such as \"latest\"",
            ));
        }
    }
    Ok(tags)
}

/// `hosts`: DNS names (lowercased), each once; `*.example.com` matches one label under it.
pub(crate) fn hosts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let hosts = string_list(d, "host names", r#"["tasks.example.com"]"#)?;
    let mut out: Vec<String> = Vec::with_capacity(hosts.len());
    for host in hosts {
        let name = host.strip_suffix('.').unwrap_or(&host).to_ascii_lowercase();
        if let Err(why) = check_host(&name) {
            return Err(invalid(
                &format!("{host:?} is not a valid host name: {why}"),
                "write DNS names without scheme, port or path, e.g. \"tasks.example.com\" or \"*.example.com\"",
            ));
        }
        if out.contains(&name) {
            return Err(invalid(
                &format!("{host:?} is listed twice"),
                "list each host once",
            ));
        }
        out.push(name);
    }
    Ok(out)
}

/// Why `name` (lowercase) is not a DNS name a `Host` header can carry: labels of letters,
/// digits and inner `-`, 1 to 63 each, 253 in all, not all digits (an IP address is matched
/// by `listen`, not by host); a leading `*.` is a wildcard for one label.
pub fn check_host(name: &str) -> Result<(), &'static str> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    if bare.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 253 {
        return Err("it is longer than 253 characters");
    }
    if bare.contains(['*']) {
        return Err("a wildcard is only allowed as the whole first label, as in *.example.com");
    }
    if bare.contains([':', '/', '@', ' ']) {
        return Err("a host name has no scheme, port, path or spaces");
    }
    if bare
        .split('.')
        .all(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("an IP address is not a host name (the listen address already selects it)");
    }
    if name.starts_with("*.") && !bare.contains('.') {
        return Err("a wildcard needs at least two labels after it, as in *.example.com");
    }
    for label in bare.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label has 1 to 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label does not begin or end with `-`");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err("a label has only letters, digits and `-`");
        }
    }
    Ok(())
}

pub(crate) fn volumes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let volumes = string_list(d, "volumes", r#"["app-data:/data"]"#)?;
    for v in &volumes {
        let ok = v.split_once(':').is_some_and(|(name, path)| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                && path.starts_with('/')
        });
        if !ok {
            return Err(invalid(
                &format!("{v:?} is not a named volume"),
                "write NAME:/path/in/container, e.g. \"tasks-data:/data\" (a name, not a host path)",
            ));
        }
    }
    Ok(volumes)
}

/// Swarm placement constraints: `<attribute> ==|!= <value>`, the attributes Swarm knows.
pub(crate) fn constraints<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = string_list(d, "constraints", r#"["node.role == worker"]"#)?;
    for c in &list {
        check_constraint(c).map_err(|why| {
            invalid::<D::Error>(
                &format!("{c:?} is not a placement constraint: {why}"),
                "write ATTRIBUTE == VALUE or ATTRIBUTE != VALUE, where ATTRIBUTE is node.id, \
                 node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.NAME \
                 or engine.labels.NAME, e.g. \"node.role == worker\"",
            )
        })?;
    }
    Ok(list)
}

fn check_constraint(c: &str) -> Result<(), &'static str> {
    let (key, value) = match (c.split_once("=="), c.split_once("!=")) {
        (Some(_), Some(_)) => return Err("it has both == and !="),
        (Some(kv), None) | (None, Some(kv)) => kv,
        (None, None) => return Err("it has no == or !="),
    };
    let (key, value) = (key.trim(), value.trim());
    let known = [
        "node.id",
        "node.hostname",
        "node.role",
        "node.platform.os",
        "node.platform.arch",
    ];
    let label = ["node.labels.", "engine.labels."]
        .iter()
        .any(|p| key.strip_prefix(p).is_some_and(|n| !n.is_empty()));
    if !known.contains(&key) && !label {
        return Err("Swarm knows no such attribute");
    }
    if value.is_empty() || value.contains(['=', '!']) || value.chars().any(char::is_whitespace) {
        return Err("the value must be one word");
    }
    if key == "node.role" && !["manager", "worker"].contains(&value) {
        return Err("node.role is manager or worker");
    }
    Ok(())
}

pub(crate) fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let value = i64::deserialize(d)?;
    match u16::try_from(value) {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(invalid(
            &format!("{value} is not a port"),
            "use a number from 1 to 65535, e.g. 8000",
        )),
    }
}

pub(crate) fn registry_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = String::deserialize(d)?;
    let ok = !url.is_empty()
        && !url.contains("://")
        && !url.ends_with('/')
        && url
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:_[]".contains(c));
    if ok {
        Ok(url)
    } else {
        Err(invalid(
            &format!("{url:?} is not a registry address"),
            "write host[:port] without a scheme, e.g. \"127.0.0.1:5000\" or \"ghcr.io\"",
        ))
    }
}

pub(crate) fn repository<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let repo = String::deserialize(d)?;
    let ok = !repo.is_empty()
        && repo.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        });
    if ok {
        Ok(repo)
    } else {
        Err(invalid(
            &format!("{repo:?} is not a repository name"),
            "use lowercase letters, digits, `.`, `_`, `-` and `/`, e.g. \"tasks-app\" or \"team/tasks-app\"",
        ))
    }
}

pub(crate) fn check_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
    if ok {
        Ok(name)
    } else {
        Err(invalid(
            &format!("{name:?} is not a check name"),
            "use letters, digits, `-` and `_`, e.g. \"lint\"",
        ))
    }
}

pub(crate) fn check_run<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let run = String::deserialize(d)?;
    if run.trim().is_empty() {
        Err(invalid(
            "the command is empty",
            "give the shell command the check runs, e.g. run = \"cargo test\"",
        ))
    } else {
        Ok(run)
    }
}

pub(crate) fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = String::deserialize(d)?;
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() > "http://".len() + 1
        && !url.contains(char::is_whitespace);
    if ok {
        Ok(url)
    } else {
        Err(invalid(
            &format!("{url:?} is not an http(s) URL"),
            "write the receiver's URL with http:// or https://, e.g. \"https://hooks.slack.com/services/…\"",
        ))
    }
}

/// The request headers a `[[notify]]` adds: header names, never ones cutover sets itself,
/// each value a secret source.
pub(crate) fn headers<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, SecretSource>, D::Error> {
    BTreeMap::<HeaderKey, SecretSource>::deserialize(d).map(|m| rekey(m, |k| k.0))
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct HeaderKey(String);

impl<'de> Deserialize<'de> for HeaderKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HeaderKey, D::Error> {
        let name = String::deserialize(d)?;
        let token = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
        if !token {
            return Err(invalid(
                &format!("{name:?} is not an HTTP header name"),
                "use letters, digits and `-`, e.g. Authorization or X-Api-Key",
            ));
        }
        let own = [
            "host",
            "content-type",
            "content-length",
            "transfer-encoding",
            "connection",
        ];
        if own.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(invalid(
                &format!("{name} is set by cutover on every notification"),
                "remove it; give only headers the receiver needs, e.g. Authorization",
            ));
        }
        Ok(HeaderKey(name))
    }
}

/// A path to a PEM bundle of CA certificates.
pub(crate) fn ca_bundle<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    match StrOrOther::deserialize(d)? {
        StrOrOther::Str(path) if !path.trim().is_empty() => Ok(Some(PathBuf::from(path))),
        StrOrOther::Str(_) => Err(invalid(
            "the path is empty",
            "give the PEM file of the CA certificates to trust, e.g. ca_bundle = \"certs/ca.pem\", or leave the key out",
        )),
        StrOrOther::Other(text) => Err(invalid(
            &format!("{text} is not a path"),
            "write the PEM file's path as a string, e.g. ca_bundle = \"certs/ca.pem\"",
        )),
    }
}

pub(crate) fn health_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let path = String::deserialize(d)?;
    if path.starts_with('/') {
        Ok(path)
    } else {
        Err(invalid(
            &format!("{path:?} does not start with `/`"),
            &format!(
                "write the HTTP path of the health check, e.g. \"/{}\"",
                path.trim_start_matches('/')
            ),
        ))
    }
}

pub(crate) fn status<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let Some(code) = Option::<i64>::deserialize(d)? else {
        return Ok(None);
    };
    match u16::try_from(code) {
        Ok(code) if (100..=599).contains(&code) => Ok(Some(code)),
        _ => Err(invalid(
            &format!("{code} is not an HTTP status code"),
            "use a code from 100 to 599, e.g. 200; leave `status` out to accept any 2xx",
        )),
    }
}

fn bounded_u32<E: de::Error>(value: i64, min: u32, max: u32, example: &str) -> Result<u32, E> {
    match u32::try_from(value) {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ if max == u32::MAX => Err(invalid(
            &format!("{value} is too small"),
            &format!("use {min} or more, e.g. {example}"),
        )),
        _ => Err(invalid(
            &format!("{value} is out of range"),
            &format!("use a number from {min} to {max}, e.g. {example}"),
        )),
    }
}

pub(crate) fn threshold<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded_u32(i64::deserialize(d)?, 1, u32::MAX, "2")
}

pub(crate) fn instances<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded_u32(i64::deserialize(d)?, 1, 32, "1")
}

pub(crate) fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let hint = "use IP:PORT, e.g. \"127.0.0.1:8001\" (or \"0.0.0.0:8001\" for every interface)";
    match StrOrOther::deserialize(d)? {
        StrOrOther::Str(text) => text
            .parse()
            .map_err(|_| invalid(&format!("{text:?} is not an IP:PORT address"), hint)),
        StrOrOther::Other(text) => Err(invalid(
            &format!("{text} is not an IP:PORT address"),
            &format!("write it as a string, e.g. \"127.0.0.1:{text}\""),
        )),
    }
}

/// Where a secret's value comes from. In TOML: `{ env = "VAR" }`, `{ file = "path" }` or
/// `{ command = "shell command" }`: exactly one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretSource {
    /// An environment variable of the process that asks for the deploy.
    Env(String),
    /// A file, relative to the directory of `cutover.toml`; one trailing newline is trimmed.
    File(PathBuf),
    /// A command run with `sh -c`; its stdout, less one trailing newline, is the value.
    Command(String),
    /// `{ env = "…", on = "server" }`: resolved by the server that runs the release, never by
    /// the CLI that asks for the deploy (production secrets never touch a laptop).
    #[serde(rename = "on-server")]
    OnServer(Box<SecretSource>),
}

impl SecretSource {
    /// How the source is written in `cutover.toml`, e.g. `{ env = "API_TOKEN" }`.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(var) => format!("{{ env = {var:?} }}"),
            SecretSource::File(path) => format!("{{ file = {:?} }}", path.display().to_string()),
            SecretSource::Command(cmd) => format!("{{ command = {cmd:?} }}"),
            SecretSource::OnServer(inner) => {
                let inner = inner.describe();
                format!("{}, on = \"server\" }}", inner.trim_end_matches(" }"))
            }
        }
    }

    /// Whether the server resolves it (`on = "server"`), not the CLI that asks for a deploy.
    pub fn on_server(&self) -> bool {
        matches!(self, SecretSource::OnServer(_))
    }
}

const SECRET_HINT: &str = r#"write exactly one source: { env = "VAR" }, { file = "path" } or { command = "shell command" }, and optionally on = "server""#;

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SecretSource, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretSource;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret source")
            }
            fn visit_str<E: de::Error>(self, _value: &str) -> Result<SecretSource, E> {
                // The value is not repeated: it may be the secret itself.
                Err(invalid(
                    "a plain string is not a secret source",
                    &format!("never write a secret's value in cutover.toml; {SECRET_HINT}"),
                ))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretSource, A::Error> {
                let mut found: Vec<SecretSource> = Vec::new();
                let mut keys: Vec<String> = Vec::new();
                let mut on_server = false;
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<String>()?;
                    let source = match key.as_str() {
                        "on" if value == "server" => {
                            on_server = true;
                            continue;
                        }
                        "on" => {
                            return Err(invalid(
                                &format!("on = {value:?} is not a place a secret resolves"),
                                r#"write on = "server" to resolve it on the server that runs the release, or leave `on` out to resolve it where the deploy is asked for"#,
                            ))
                        }
                        "env" => SecretSource::Env(value),
                        "file" => SecretSource::File(PathBuf::from(value)),
                        "command" => SecretSource::Command(value),
                        other => {
                            return Err(invalid(
                                &format!("unknown secret source `{other}`"),
                                SECRET_HINT,
                            ))
                        }
                    };
                    keys.push(key);
                    found.push(source);
                }
                match (found.pop(), found.is_empty()) {
                    (Some(source), true) if on_server => {
                        Ok(SecretSource::OnServer(Box::new(source)))
                    }
                    (Some(source), true) => Ok(source),
                    (None, _) => Err(invalid("the secret has no source", SECRET_HINT)),
                    (Some(_), false) => Err(invalid(
                        &format!(
                            "the secret has {} sources ({})",
                            keys.len(),
                            keys.join(", ")
                        ),
                        SECRET_HINT,
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `http_redirect`: an optional IP:PORT.
pub(crate) fn listen_option<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    listen(d).map(Some)
}

/// `[acme] directory`: an https URL (the account key and the orders travel over it).
pub(crate) fn acme_directory<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = String::deserialize(d)?;
    let rest = url.strip_prefix("https://").unwrap_or_default();
    if rest.is_empty() || rest.starts_with('/') || url.contains(char::is_whitespace) {
        return Err(invalid(
            &format!("{url:?} is not an https URL"),
            &format!(
                "ACME directories are served over HTTPS; write its URL, e.g. directory = \"{}\"",
                crate::LETS_ENCRYPT
            ),
        ));
    }
    Ok(url)
}

/// `[acme] email`: an address the CA can write to.
pub(crate) fn email<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let email = String::deserialize(d)?;
    let ok = match email.split_once('@') {
        Some((user, domain)) => {
            !user.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !email.contains(|c: char| c.is_whitespace() || c == ':' || c == ',')
        }
        None => false,
    };
    if ok {
        Ok(Some(email))
    } else {
        Err(invalid(
            &format!("{email:?} is not an email address"),
            "write the address the CA may warn about expiring certificates, e.g. email = \"ops@example.com\", or leave the key out",
        ))
    }
}

/// `tls = "acme"` or `tls = { cert = "…", key = "…" }`, in TOML and in the JSON snapshot.
pub(crate) mod tls_option {
    use super::invalid;
    use crate::Tls;
    use serde::de::{self, Deserializer, MapAccess, Visitor};
    use serde::ser::{SerializeMap, Serializer};
    use std::fmt;
    use std::path::PathBuf;

    const HINT: &str =
        "write tls = \"acme\" for certificates by ACME, or tls = { cert = \"certs/site.pem\", key = \"certs/site.key\" } for your own files";

    pub fn serialize<S: Serializer>(tls: &Option<Tls>, s: S) -> Result<S::Ok, S::Error> {
        match tls {
            None => s.serialize_none(),
            Some(Tls::Acme) => s.serialize_str("acme"),
            Some(Tls::Files { cert, key }) => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("cert", cert)?;
                map.serialize_entry("key", key)?;
                map.end()
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Tls>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tls;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"acme\" or a table { cert, key }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Tls, E> {
                if v == "acme" {
                    Ok(Tls::Acme)
                } else {
                    Err(invalid(
                        &format!("{v:?} is not a way to get a certificate"),
                        HINT,
                    ))
                }
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Tls, E> {
                Err(invalid(
                    &format!("{v} is not a way to get a certificate"),
                    HINT,
                ))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Tls, E> {
                Err(invalid(
                    &format!("{v} is not a way to get a certificate"),
                    HINT,
                ))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tls, A::Error> {
                let (mut cert, mut key): (Option<PathBuf>, Option<PathBuf>) = (None, None);
                while let Some(name) = map.next_key::<String>()? {
                    let value: String = map.next_value().map_err(|_| {
                        invalid(
                            &format!("tls.{name} is not a path"),
                            "write the PEM file's path as a string, e.g. cert = \"certs/site.pem\"",
                        )
                    })?;
                    if value.trim().is_empty() {
                        return Err(invalid(
                            &format!("tls.{name} is empty"),
                            "give the path of the PEM file, relative to cutover.toml",
                        ));
                    }
                    match name.as_str() {
                        "cert" => cert = Some(value.into()),
                        "key" => key = Some(value.into()),
                        _ => {
                            return Err(invalid(
                                &format!("unknown key `{name}` in tls"),
                                "tls takes cert (the PEM chain, leaf first) and key (its private key), e.g. tls = { cert = \"certs/site.pem\", key = \"certs/site.key\" }",
                            ))
                        }
                    }
                }
                match (cert, key) {
                    (Some(cert), Some(key)) => Ok(Tls::Files { cert, key }),
                    (None, _) => Err(invalid(
                        "tls has no cert",
                        "add the certificate chain's PEM file, e.g. tls = { cert = \"certs/site.pem\", key = \"certs/site.key\" }",
                    )),
                    (_, None) => Err(invalid(
                        "tls has no key",
                        "add the private key's PEM file, e.g. tls = { cert = \"certs/site.pem\", key = \"certs/site.key\" }",
                    )),
                }
            }
        }
        d.deserialize_any(V).map(Some)
    }
}
