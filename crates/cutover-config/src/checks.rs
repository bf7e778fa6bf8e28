//! The checks of `cutover.toml` that involve more than one field (which serde's per-field
//! validation cannot see): listen addresses that overlap, names that clash, `[run] command`
//! variables, the runtime's own keys, and the pipeline's DAG. Each error is located with
//! `toml_edit` at the later offending place.

use super::*;

impl Config {
    /// Checks that involve more than one field; errors point at the later offending place.
    pub(crate) fn check_consistency(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let entries = locate::entries(text);
        let at_value = |path: &[&str]| locate::value_span(&entries, path).map_or(0, |s| s.start);
        let at_key = |path: &[&str]| locate::key_span(&entries, path).map_or(0, |s| s.start);
        let field = |path: &[&str], table: bool| {
            let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            locate::field_name(&path, table)
        };

        if self.environments.is_empty() {
            return Err(ConfigError::at(
                text,
                origin,
                at_value(&["environments"]),
                "no environment is declared",
            )
            .with_field("[environments]")
            .with_hint("add one, e.g. [environments.staging] with listen = \"127.0.0.1:8001\""));
        }

        // Listen addresses, in document order: a later one may share an earlier one only when
        // both have hosts and no host is in both; it may not overlap one otherwise.
        let mut listens: Vec<(usize, &str, &Environment)> = self
            .environments
            .iter()
            .map(|(name, env)| {
                (
                    at_value(&["environments", name, "listen"]),
                    name.as_str(),
                    env,
                )
            })
            .collect();
        listens.sort_by_key(|(offset, name, _)| (*offset, *name));
        for (i, (offset, name, env)) in listens.iter().enumerate() {
            let addr = env.listen;
            for (_, first, other) in listens[..i]
                .iter()
                .filter(|(_, _, o)| overlaps(o.listen, addr))
            {
                if other.listen != addr {
                    return Err(ConfigError::at(
                        text,
                        origin,
                        *offset,
                        format!("{addr} overlaps {}, the listen address of environment `{first}`", other.listen),
                    )
                    .with_field(field(&["environments", name, "listen"], false))
                    .with_hint(format!(
                        "share the same address with `hosts` ({} in both), or give each environment its own port",
                        other.listen
                    )));
                }
                let hostless = [(name, env), (first, other)]
                    .into_iter()
                    .find(|(_, e)| e.hosts.is_empty());
                if let Some((without, _)) = hostless {
                    return Err(ConfigError::at(
                        text,
                        origin,
                        *offset,
                        format!(
                            "{addr} is also the listen address of environment `{first}`, and \
                             `{without}` has no hosts to tell their requests apart"
                        ),
                    )
                    .with_field(field(&["environments", without, "hosts"], false))
                    .with_hint(
                        "give every environment on a shared address its own hosts, e.g. \
                         hosts = [\"staging.example.com\"], or give each its own port, e.g. \
                         127.0.0.1:8001 and 127.0.0.1:8002",
                    ));
                }
                if let Some(host) = env.hosts.iter().find(|h| other.hosts.contains(h)) {
                    return Err(ConfigError::at(
                        text,
                        origin,
                        at_value(&["environments", name, "hosts"]),
                        format!("host {host:?} is also a host of environment `{first}` on {addr}"),
                    )
                    .with_field(field(&["environments", name, "hosts"], false))
                    .with_hint(
                        "each host belongs to one environment: remove it from one of them",
                    ));
                }
            }
        }

        // TLS keys that would be ignored are a mistake, not a default.
        if self.health.ca_bundle.is_some() && self.health.scheme == HealthScheme::Http {
            return Err(ConfigError::at(
                text,
                origin,
                at_value(&["health", "ca_bundle"]),
                "ca_bundle verifies the certificates of instances that serve HTTPS, but scheme is \"http\"",
            )
            .with_field(field(&["health", "ca_bundle"], false))
            .with_hint("add scheme = \"https\" to [health] if the app serves TLS, or remove ca_bundle"));
        }
        if let Some(r) = self
            .registry
            .as_ref()
            .filter(|r| r.insecure && r.ca_bundle.is_some())
        {
            return Err(ConfigError::at(
                text,
                origin,
                at_value(&["registry", "insecure"]),
                format!(
                    "insecure = true accepts any certificate from {}, so ca_bundle would never be used",
                    r.url
                ),
            )
            .with_field(field(&["registry", "insecure"], false))
            .with_hint("remove insecure to verify the registry against ca_bundle, or remove ca_bundle"));
        }

        self.check_tls(text, origin, &entries)?;
        self.check_pipeline(text, origin, &entries)?;
        for (name, env) in &self.environments {
            for (i, required) in env.requires.iter().enumerate() {
                let problem = if required == name {
                    Some(format!("environment `{name}` cannot require itself"))
                } else if !self.environments.contains_key(required) {
                    Some(format!("no environment named `{required}`"))
                } else {
                    None
                };
                if let Some(message) = problem {
                    let at = locate::value_span(&entries, &["environments", name, "requires"])
                        .map_or(0, |s| s.start);
                    let known: Vec<&str> = self
                        .environments
                        .keys()
                        .filter(|k| *k != name)
                        .map(String::as_str)
                        .collect();
                    return Err(ConfigError::at(text, origin, at, message)
                        .with_field(format!("[environments.{name}] requires[{i}]"))
                        .with_hint(format!(
                            "name environments a version must pass first: {}",
                            known.join(", ")
                        )));
                }
            }
        }

        // `[environments.X.swarm]` configures the swarm runtime only.
        for (name, env) in &self.environments {
            if env.swarm.is_some() && env.runtime != RuntimeKind::Swarm {
                return Err(ConfigError::at(
                    text,
                    origin,
                    at_key(&["environments", name, "swarm"]),
                    format!(
                        "environment `{name}` runs on {}, and [environments.{name}.swarm] configures the swarm runtime",
                        runtime_name(env.runtime)
                    ),
                )
                .with_field(format!("[environments.{name}.swarm]"))
                .with_hint(format!(
                    "set runtime = \"swarm\" in [environments.{name}], or remove [environments.{name}.swarm]"
                )));
            }
        }

        // What each environment's runtime needs from [build] and [run].
        for (name, env) in &self.environments {
            let need = |table: &str, key: &str, what: &str, hint: &str| {
                let at = locate::key_span(&entries, &[table])
                    .or_else(|| locate::key_span(&entries, &["environments", name]))
                    .map_or(0, |s| s.start);
                Err(ConfigError::at(
                    text,
                    origin,
                    at,
                    format!(
                        "environment `{name}` runs on {}, which needs {what}",
                        runtime_name(env.runtime)
                    ),
                )
                .with_field(format!("[{table}] {key}"))
                .with_hint(hint.to_string()))
            };
            if env.runtime.is_container() {
                if self.build.dockerfile.is_none() {
                    return need(
                        "build",
                        "dockerfile",
                        "an image to run",
                        "add dockerfile = \"Dockerfile\" to [build]",
                    );
                }
                if self.run.port.is_none() {
                    return need(
                        "run",
                        "port",
                        "the port the app listens on in the container",
                        "add port = 8000 to [run]",
                    );
                }
            } else {
                if self.build.files.is_empty() {
                    return need("build", "files", "a bundle of files", "list what goes into the bundle, e.g. files = [\"target/release/app\"], or set runtime = \"docker\"");
                }
                if self.run.command.is_empty() {
                    return need(
                        "run",
                        "command",
                        "a command to run",
                        "add command = [\"./app\"] to [run], or set runtime = \"docker\"",
                    );
                }
            }
        }

        // Plain env names: not secrets, not set by cutover.
        let mut plain: Vec<Vec<&str>> = self.env.keys().map(|k| vec!["env", k.as_str()]).collect();
        for (env_name, env) in &self.environments {
            plain.extend(
                env.env
                    .keys()
                    .map(|k| vec!["environments", env_name, "env", k.as_str()]),
            );
        }
        for path in &plain {
            let Some(name) = path.last() else { continue };
            if self.secrets.contains_key(*name) {
                return Err(ConfigError::at(
                    text,
                    origin,
                    at_key(path),
                    format!("{name} is also declared in [secrets]"),
                )
                .with_field(field(path, false))
                .with_hint(format!(
                    "a variable is either plain or a secret: remove {name} from one of them"
                )));
            }
        }
        let secret_paths = self.secrets.keys().map(|k| vec!["secrets", k.as_str()]);
        for path in plain.iter().cloned().chain(secret_paths) {
            let Some(name) = path.last() else { continue };
            if self.is_reserved(name) {
                return Err(ConfigError::at(
                    text,
                    origin,
                    at_key(&path),
                    format!("{name} is set by cutover for every instance"),
                )
                .with_field(field(&path, false))
                .with_hint(format!(
                    "remove it; cutover sets {}, {}",
                    self.run.port_env,
                    RESERVED_ENV.join(", ")
                )));
            }
        }
        self.check_run_command(text, origin)
    }

    /// `$NAME` in `[run] command`: well formed, not a secret, and given to the instances of
    /// every environment.
    fn check_run_command(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        for (i, arg) in self.run.command.iter().enumerate() {
            let err = |message: String, hint: String| {
                let at =
                    locate::array_item_span(text, &["run", "command"], i).map_or(0, |s| s.start);
                Err(ConfigError::at(text, origin, at, message)
                    .with_field(format!("[run] command[{i}]"))
                    .with_hint(hint))
            };
            let names = match argv::names(arg) {
                Ok(names) => names,
                Err(message) => {
                    return err(
                        message,
                        "write $NAME or ${NAME} for a variable, and $$ for a literal $".into(),
                    )
                }
            };
            for name in names {
                if self.secrets.contains_key(name) {
                    return err(
                        format!("{name} is a secret, and a process's arguments are visible to every user of the machine (`ps`)"),
                        format!("remove it from the command and read {name} from the environment in the app, where cutover puts it"),
                    );
                }
                for (env_name, env) in &self.environments {
                    let known = self.instance_vars(env);
                    if known.contains(&name) {
                        continue;
                    }
                    let elsewhere = self
                        .environments
                        .values()
                        .any(|e| self.instance_vars(e).contains(&name));
                    if name == "CUTOVER_DATA_DIR" {
                        return err(
                            format!("CUTOVER_DATA_DIR is not set in environment `{env_name}`: it runs containers and [run] has no volumes"),
                            "in a container it is the path of the first of [run] volumes: add one, e.g. volumes = [\"data:/data\"]".into(),
                        );
                    }
                    if elsewhere {
                        return err(
                            format!("{name} is not set in environment `{env_name}`"),
                            format!("add {name} to [env], or to [environments.{env_name}.env]"),
                        );
                    }
                    return err(
                        format!("unknown variable {name} in {arg:?}"),
                        format!(
                            "the instance gets {}; add {name} to [env] to give it one, or write $$ for a literal $",
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// The names of the variables cutover gives every instance of `env`, secrets aside: the
    /// port, the ones it sets itself, then `[env]` and the environment's env.
    fn instance_vars<'a>(&'a self, env: &'a Environment) -> Vec<&'a str> {
        let data_dir = !env.runtime.is_container() || !self.run.volumes.is_empty();
        let mut names = vec![self.run.port_env.as_str()];
        names.extend(
            RESERVED_ENV
                .iter()
                .copied()
                .filter(|n| data_dir || *n != "CUTOVER_DATA_DIR"),
        );
        for key in self.env.keys().chain(env.env.keys()) {
            if !names.contains(&key.as_str()) {
                names.push(key);
            }
        }
        names
    }
}

impl Config {
    /// `tls`, `hosts` and `http_redirect` of each environment: what ACME can issue, and a
    /// redirect that has somewhere to send people.
    fn check_tls(
        &self,
        text: &str,
        origin: &str,
        entries: &[locate::Entry],
    ) -> Result<(), ConfigError> {
        let at = |path: &[&str]| {
            locate::value_span(entries, path)
                .or_else(|| locate::key_span(entries, &path[..2]))
                .map_or(0, |s| s.start)
        };
        for (name, env) in &self.environments {
            let err = |key: &str, message: String, hint: String| {
                Err(
                    ConfigError::at(text, origin, at(&["environments", name, key]), message)
                        .with_field(format!("[environments.{name}] {key}"))
                        .with_hint(hint),
                )
            };
            if env.tls == Some(Tls::Acme) {
                if env.hosts.is_empty() {
                    return err(
                        "tls",
                        format!("tls = \"acme\" needs the names to get a certificate for, and environment `{name}` has no hosts"),
                        format!("add hosts = [\"app.example.com\"] to [environments.{name}], or use your own files: tls = {{ cert = \"…\", key = \"…\" }}"),
                    );
                }
                if let Some(wild) = env.hosts.iter().find(|h| h.starts_with("*.")) {
                    return err(
                        "hosts",
                        format!("{wild:?} is a wildcard, and ACME issues wildcard certificates only through DNS-01, which cutover does not answer"),
                        "list each name instead, or give a wildcard certificate of your own: tls = { cert = \"…\", key = \"…\" }".to_string(),
                    );
                }
            }
            let Some(redirect) = env.http_redirect else {
                continue;
            };
            if env.tls.is_none() {
                return err(
                    "http_redirect",
                    format!("http_redirect sends plain HTTP to https://, and environment `{name}` serves no TLS"),
                    format!("add tls = \"acme\" (or tls = {{ cert, key }}) to [environments.{name}], or remove http_redirect"),
                );
            }
            if overlaps(redirect, env.listen) {
                return err(
                    "http_redirect",
                    format!("{redirect} is also the listen address of environment `{name}`: one port cannot answer both TLS and plain HTTP"),
                    format!("give http_redirect its own port, e.g. \"{}:80\" beside listen on 443", redirect.ip()),
                );
            }
            let taken = self
                .environments
                .iter()
                .find(|(other, e)| *other != name && overlaps(e.listen, redirect));
            if let Some((other, _)) = taken {
                return err(
                    "http_redirect",
                    format!("{redirect} is already the listen address of environment `{other}`"),
                    "give http_redirect a port no environment listens on, e.g. \"0.0.0.0:80\""
                        .to_string(),
                );
            }
        }
        Ok(())
    }

    /// Check names are unique, `needs` name existing checks, and there is no cycle.
    fn check_pipeline(
        &self,
        text: &str,
        origin: &str,
        entries: &[locate::Entry],
    ) -> Result<(), ConfigError> {
        let checks = &self.pipeline.checks;
        let at = locate::key_span(entries, &["pipeline"]).map_or(0, |s| s.start);
        let err = |i: usize, key: &str, message: String, hint: String| {
            Err(ConfigError::at(text, origin, at, message)
                .with_field(format!("[[pipeline.check]] #{} {key}", i + 1))
                .with_hint(hint))
        };
        for (i, check) in checks.iter().enumerate() {
            if checks[..i].iter().any(|c| c.name == check.name) {
                return err(
                    i,
                    "name",
                    format!("two checks are named `{}`", check.name),
                    "give each check its own name".into(),
                );
            }
            for need in &check.needs {
                if !checks.iter().any(|c| &c.name == need) {
                    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
                    return err(
                        i,
                        "needs",
                        format!(
                            "check `{}` needs `{need}`, which is not a check",
                            check.name
                        ),
                        format!("the checks are: {}", names.join(", ")),
                    );
                }
            }
        }
        if let Some(cycle) = find_cycle(checks) {
            let i = checks.iter().position(|c| c.name == cycle[0]).unwrap_or(0);
            return err(
                i,
                "needs",
                format!(
                    "the checks need each other in a circle: {}",
                    cycle.join(" → ")
                ),
                "remove one of these `needs` so the checks can run in some order".into(),
            );
        }
        Ok(())
    }
}

/// A cycle in the checks' `needs`, as names (first repeated at the end), if there is one.
fn find_cycle(checks: &[Check]) -> Option<Vec<String>> {
    fn visit<'a>(
        name: &'a str,
        checks: &'a [Check],
        path: &mut Vec<&'a str>,
        done: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| *n == name) {
            let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
            cycle.push(name.to_string());
            return Some(cycle);
        }
        if done.contains(&name) {
            return None;
        }
        path.push(name);
        let check = checks.iter().find(|c| c.name == name)?;
        for need in &check.needs {
            if let Some(cycle) = visit(need, checks, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.push(name);
        None
    }
    let mut done = Vec::new();
    for check in checks {
        if let Some(cycle) = visit(&check.name, checks, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

fn runtime_name(kind: RuntimeKind) -> &'static str {
    match kind {
        RuntimeKind::Process => "the process runtime",
        RuntimeKind::Docker => "docker",
        RuntimeKind::Podman => "podman",
        RuntimeKind::Swarm => "swarm",
    }
}

/// Two listen addresses conflict on the same port if their IPs are equal or one is a wildcard.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
