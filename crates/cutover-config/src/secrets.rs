//! Resolving secret sources. Errors name the secret and its source, never a value.

use crate::SecretSource;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {name}: environment variable {var} is not set\n  hint: export {var} before running cutover, or change the source in [secrets]")]
    EnvMissing { name: String, var: String },
    #[error("secret {name}: environment variable {var} is not valid UTF-8\n  hint: secrets must be text")]
    EnvNotUnicode { name: String, var: String },
    #[error("secret {name}: cannot read file {}: {source}\n  hint: create the file, or fix the path (relative paths start at the directory of cutover.toml)", path.display())]
    FileUnreadable {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret {name}: file {} is not valid UTF-8\n  hint: secrets must be text", path.display())]
    FileNotUnicode { name: String, path: PathBuf },
    #[error("secret {name}: cannot run command `{command}`: {source}\n  hint: check that `sh` is installed")]
    CommandSpawn {
        name: String,
        command: String,
        source: std::io::Error,
    },
    #[error("secret {name}: command `{command}` failed ({status}){}\n  hint: run the command yourself to see why it fails", stderr_tail(.stderr))]
    CommandFailed {
        name: String,
        command: String,
        status: String,
        /// The command's last lines of stderr (stdout, the value, is never kept).
        stderr: String,
    },
    #[error("secret {name}: command `{command}` printed something that is not UTF-8\n  hint: secrets must be text")]
    CommandNotUnicode { name: String, command: String },
    /// The Docker client config, where a registry login is looked up when `[registry]` has none.
    #[error("registry login from the Docker client config {}: {detail}\n  hint: fix it with `docker login`, or set [registry] username and password (secret sources)", path.display())]
    DockerConfig { path: PathBuf, detail: String },
}

impl SecretError {
    /// The name of the secret that failed.
    pub fn secret(&self) -> &str {
        match self {
            SecretError::EnvMissing { name, .. }
            | SecretError::EnvNotUnicode { name, .. }
            | SecretError::FileUnreadable { name, .. }
            | SecretError::FileNotUnicode { name, .. }
            | SecretError::CommandSpawn { name, .. }
            | SecretError::CommandFailed { name, .. }
            | SecretError::CommandNotUnicode { name, .. } => name,
            SecretError::DockerConfig { .. } => "the Docker client config",
        }
    }
}

fn stderr_tail(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

fn trim_one_newline(mut value: String) -> String {
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    value
}

pub(crate) fn resolve_all(
    secrets: &BTreeMap<String, SecretSource>,
    base_dir: &Path,
) -> Result<BTreeMap<String, String>, SecretError> {
    secrets
        .iter()
        .map(|(name, source)| Ok((name.clone(), resolve(name, source, base_dir)?)))
        .collect()
}

fn resolve(name: &str, source: &SecretSource, base_dir: &Path) -> Result<String, SecretError> {
    let name_str = name;
    let name = name.to_string();
    match source {
        SecretSource::OnServer(inner) => resolve(name_str, inner, base_dir),
        SecretSource::Env(var) => match std::env::var(var) {
            Ok(value) => Ok(value),
            Err(std::env::VarError::NotPresent) => Err(SecretError::EnvMissing {
                name,
                var: var.clone(),
            }),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::EnvNotUnicode {
                name,
                var: var.clone(),
            }),
        },
        SecretSource::File(path) => {
            let full = base_dir.join(path);
            let bytes = std::fs::read(&full).map_err(|source| SecretError::FileUnreadable {
                name: name.clone(),
                path: full.clone(),
                source,
            })?;
            String::from_utf8(bytes)
                .map(trim_one_newline)
                .map_err(|_| SecretError::FileNotUnicode { name, path: full })
        }
        SecretSource::Command(command) => {
            let output = Command::new("sh")
                .arg("-c")
                .arg(command)
                .current_dir(base_dir)
                .stdin(Stdio::null())
                .output()
                .map_err(|source| SecretError::CommandSpawn {
                    name: name.clone(),
                    command: command.clone(),
                    source,
                })?;
            if !output.status.success() {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
                let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
                return Err(SecretError::CommandFailed {
                    name,
                    command: command.clone(),
                    status: output.status.to_string(),
                    stderr: tail,
                });
            }
            String::from_utf8(output.stdout)
                .map(trim_one_newline)
                .map_err(|_| SecretError::CommandNotUnicode {
                    name,
                    command: command.clone(),
                })
        }
    }
}
