use cutover_config::*;
use std::path::Path;
use std::time::Duration;

const BASE: &str = r#"[app]
name = "tasks"

[build]
files = ["serve.py"]

[run]
command = ["python3", "serve.py"]

[environments.staging]
listen = "127.0.0.1:8001"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "cutover.toml")
}

fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

/// BASE with `line` inserted right after the header `[table]` (added if absent).
fn with(table: &str, line: &str) -> String {
    let header = format!("[{table}]\n");
    match BASE.find(&header) {
        Some(at) => {
            let at = at + header.len();
            format!("{}{line}\n{}", &BASE[..at], &BASE[at..])
        }
        None => format!("{BASE}\n{header}{line}\n"),
    }
}

fn line_col(e: &ConfigError) -> (usize, usize) {
    let l = e.location().expect("a location");
    (l.line, l.column)
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.app.name.as_str(), "tasks");
    assert_eq!(c.run.port_env, "PORT");
    assert_eq!(c.run.stop_timeout, Duration::from_secs(10));
    assert_eq!(c.health, Health::default());
    assert_eq!(c.health.interval, Duration::from_millis(200));
    let staging = c.environment("staging").unwrap();
    assert_eq!(staging.strategy, Strategy::BlueGreen);
    assert_eq!(staging.instances, 1);
    assert!(c.secrets.is_empty() && c.env.is_empty());
}

#[test]
fn malformed_toml_has_line_and_column() {
    let e = err("[app\nname = \"x\"\n");
    assert_eq!(e.kind(), ConfigErrorKind::Syntax);
    assert_eq!(line_col(&e), (1, 5));
    assert!(e.to_string().starts_with("cutover.toml:1:5: "), "{e}");
    assert!(e.hint().is_some());
}

#[test]
fn unknown_top_level_key_lists_valid_keys() {
    let e = err(&format!("colour = \"red\"\n{BASE}"));
    assert_eq!(line_col(&e), (1, 1));
    assert_eq!(e.field(), Some("colour"));
    assert!(
        e.message()
            .contains("unknown key `colour` at the top level"),
        "{e}"
    );
    let hint = e.hint().unwrap();
    for key in [
        "app",
        "build",
        "run",
        "health",
        "env",
        "secrets",
        "environments",
    ] {
        assert!(hint.contains(key), "{hint}");
    }
}

#[test]
fn unknown_nested_key_names_table_and_valid_keys() {
    let e = err(&with("health", "intervall = \"1s\""));
    assert_eq!(e.field(), Some("[health] intervall"));
    assert!(
        e.message().contains("unknown key `intervall` in [health]"),
        "{e}"
    );
    assert!(e.hint().unwrap().contains("interval"), "{e}");
    let text = with("health", "intervall = \"1s\"");
    let line = text
        .lines()
        .position(|l| l.starts_with("intervall"))
        .unwrap()
        + 1;
    assert_eq!(line_col(&e), (line, 1));

    let e = err(&with("environments.staging", "replicas = 2"));
    assert_eq!(e.field(), Some("[environments.staging] replicas"));
    assert!(e.hint().unwrap().contains("instances"), "{e}");
}

#[test]
fn wrong_type_names_field_and_expected_type() {
    let e = err(&with("health", "healthy_threshold = \"two\""));
    assert_eq!(e.field(), Some("[health] healthy_threshold"));
    assert!(e.message().contains("expected a whole number"), "{e}");
    assert!(e.hint().is_some());

    let text = BASE.replace(
        r#"command = ["python3", "serve.py"]"#,
        r#"command = "python3 serve.py""#,
    );
    let e = err(&text);
    assert_eq!(e.field(), Some("[run] command"));
    assert!(
        e.hint().unwrap().contains(r#"["python3", "serve.py"]"#),
        "{e}"
    );
}

#[test]
fn bad_durations_point_at_the_value_with_the_fix() {
    let text = with("health", "interval = \"10\"");
    let e = err(&text);
    let line = text
        .lines()
        .position(|l| l.starts_with("interval"))
        .unwrap()
        + 1;
    assert_eq!(line_col(&e), (line, 12));
    assert_eq!(e.field(), Some("[health] interval"));
    let shown = e.to_string();
    assert_eq!(
        shown,
        format!("cutover.toml:{line}:12: [health] interval: \"10\" is not a duration (the unit is missing)\n  hint: use a number with a unit, e.g. \"10s\" or \"500ms\" (units: ms, s, m, h, d)")
    );

    let e = err(&with("health", "deadline = \"-1s\""));
    assert!(e.message().contains("negative"), "{e}");
    assert!(e.hint().unwrap().contains("\"10s\""));

    let e = err(&with("run", "stop_timeout = 10"));
    assert_eq!(e.field(), Some("[run] stop_timeout"));
    assert!(e.hint().unwrap().contains("\"10s\""), "{e}");

    let e = err(&with("health", "timeout = \"ten\""));
    assert!(e.message().contains("\"ten\" is not a duration"), "{e}");
}

#[test]
fn zero_monitor_and_compound_durations_are_fine() {
    let c = parse(&with("health", "monitor = \"0s\"\ndeadline = \"1m30s\"")).unwrap();
    assert_eq!(c.health.monitor, Duration::ZERO);
    assert_eq!(c.health.deadline, Duration::from_secs(90));
}

#[test]
fn app_name_with_spaces_or_uppercase_is_refused() {
    for bad in ["my app", "MyApp", "", "x_y"] {
        let e = err(&BASE.replace("name = \"tasks\"", &format!("name = {bad:?}")));
        assert_eq!(e.field(), Some("[app] name"), "{e}");
        assert_eq!(line_col(&e), (2, 8));
        assert!(e.hint().unwrap().contains("lowercase"), "{e}");
    }
    let long = "a".repeat(64);
    let e = err(&BASE.replace("name = \"tasks\"", &format!("name = {long:?}")));
    assert!(e.message().contains("1 to 63"), "{e}");
    assert!(AppName::new("ok-123").is_ok());
}

#[test]
fn two_environments_on_one_listen_points_at_the_second() {
    let text = format!("{BASE}\n[environments.production]\nlisten = \"127.0.0.1:8001\"\n");
    let e = err(&text);
    let line = text
        .lines()
        .collect::<Vec<_>>()
        .iter()
        .rposition(|l| l.starts_with("listen"))
        .unwrap()
        + 1;
    assert_eq!(line_col(&e), (line, 10));
    // Sharing an address needs hosts on both.
    assert_eq!(e.field(), Some("[environments.production] hosts"));
    assert!(e.message().contains("staging"), "{e}");
    assert!(e.hint().is_some());

    // A wildcard address overlaps every address on its port.
    let text = format!("{BASE}\n[environments.production]\nlisten = \"0.0.0.0:8001\"\n");
    assert_eq!(err(&text).field(), Some("[environments.production] listen"));
}

#[test]
fn environments_share_a_listen_address_by_disjoint_hosts() {
    let shared = |staging: &str, production: &str| {
        format!(
            "{}\n[environments.production]\nlisten = \"127.0.0.1:8001\"\n{production}\n",
            with("environments.staging", staging)
        )
    };
    let c = parse(&shared(
        r#"hosts = ["Staging.Example.com."]"#,
        r#"hosts = ["example.com", "www.example.com"]"#,
    ))
    .unwrap();
    // Lowercased, the trailing dot dropped.
    assert_eq!(c.environments["staging"].hosts, vec!["staging.example.com"]);
    assert_eq!(c.environments["production"].hosts.len(), 2);

    // One of them without hosts: named, with both ways out.
    let e = err(&shared(r#"hosts = ["staging.example.com"]"#, ""));
    assert_eq!(e.field(), Some("[environments.production] hosts"), "{e}");
    assert!(e.message().contains("`staging`"), "{e}");
    assert!(e.hint().unwrap().contains("hosts = ["), "{e}");
    let e = err(&shared("", r#"hosts = ["example.com"]"#));
    assert_eq!(e.field(), Some("[environments.staging] hosts"), "{e}");

    // The same host twice: pointed at the later list.
    let text = shared(
        r#"hosts = ["a.example.com"]"#,
        r#"hosts = ["b.example.com", "A.example.com"]"#,
    );
    let e = err(&text);
    assert_eq!(e.field(), Some("[environments.production] hosts"), "{e}");
    assert!(e.message().contains("\"a.example.com\""), "{e}");
    let line = text
        .lines()
        .collect::<Vec<_>>()
        .iter()
        .rposition(|l| l.starts_with("hosts"))
        .unwrap()
        + 1;
    assert_eq!(line_col(&e), (line, 9));

    // A wildcard address overlaps but cannot share a listener: its own port, or the same address.
    let text = format!(
        "{}\n[environments.production]\nlisten = \"0.0.0.0:8001\"\nhosts = [\"b.example.com\"]\n",
        with("environments.staging", r#"hosts = ["a.example.com"]"#)
    );
    let e = err(&text);
    assert_eq!(e.field(), Some("[environments.production] listen"), "{e}");
    assert!(e.hint().unwrap().contains("127.0.0.1:8001"), "{e}");
}

#[test]
fn bad_hosts_name_the_field_and_the_fix() {
    for (bad, why) in [
        (r#"hosts = "example.com""#, "must be a list"),
        ("hosts = []", "is empty"),
        (
            r#"hosts = ["https://example.com"]"#,
            "no scheme, port, path",
        ),
        (r#"hosts = ["example.com:443"]"#, "no scheme, port, path"),
        (r#"hosts = ["exa mple.com"]"#, "no scheme, port, path"),
        (r#"hosts = ["ex_ample.com"]"#, "letters, digits and `-`"),
        (r#"hosts = ["-example.com"]"#, "begin or end with `-`"),
        (r#"hosts = ["a..example.com"]"#, "1 to 63"),
        (r#"hosts = ["10.0.0.1"]"#, "IP address"),
        (r#"hosts = ["a.*.example.com"]"#, "wildcard"),
        (r#"hosts = ["*.com"]"#, "wildcard needs"),
        (
            r#"hosts = ["a.example.com", "A.example.com"]"#,
            "listed twice",
        ),
        ("hosts = [\"\"]", "is empty"),
    ] {
        let e = err(&with("environments.staging", bad));
        assert_eq!(
            e.field(),
            Some("[environments.staging] hosts"),
            "{bad}: {e}"
        );
        assert!(e.to_string().contains(why), "{bad}: {e}");
        assert!(e.hint().is_some(), "{bad}: {e}");
        assert_eq!(line_col(&e).0, 11, "{bad}: {e}");
    }
    let long = format!("hosts = [\"{}.example.com\"]", "a".repeat(64));
    assert!(err(&with("environments.staging", &long))
        .to_string()
        .contains("1 to 63"));
    let c = parse(&with(
        "environments.staging",
        r#"hosts = ["*.example.com", "xn--bcher-kva.example"]"#,
    ))
    .unwrap();
    assert_eq!(c.environments["staging"].hosts[0], "*.example.com");
}

#[test]
fn bad_listen_address() {
    let e = err(&BASE.replace("127.0.0.1:8001", "localhost:8001"));
    assert_eq!(e.field(), Some("[environments.staging] listen"));
    assert!(
        e.message()
            .contains("\"localhost:8001\" is not an IP:PORT address"),
        "{e}"
    );
    assert!(e.hint().unwrap().contains("127.0.0.1:8001"));
    let e = err(&BASE.replace("\"127.0.0.1:8001\"", "8001"));
    assert!(e.hint().unwrap().contains("\"127.0.0.1:8001\""), "{e}");
}

#[test]
fn instances_zero_is_refused() {
    let e = err(&with("environments.staging", "instances = 0"));
    assert_eq!(e.field(), Some("[environments.staging] instances"));
    assert!(e.hint().unwrap().contains("1 to 32"), "{e}");
    assert!(err(&with("environments.staging", "instances = 33"))
        .message()
        .contains("33"));
}

#[test]
fn unknown_strategy_lists_the_choices() {
    let e = err(&with("environments.staging", "strategy = \"canary\""));
    assert_eq!(e.field(), Some("[environments.staging] strategy"));
    assert!(e.message().contains("\"canary\""), "{e}");
    assert!(
        e.hint().unwrap().contains("\"blue-green\", \"recreate\""),
        "{e}"
    );
    let c = parse(&with("environments.staging", "strategy = \"recreate\"")).unwrap();
    assert_eq!(c.environments["staging"].strategy, Strategy::Recreate);
}

#[test]
fn secret_needs_exactly_one_source() {
    let e = err(&with("secrets", r#"API_TOKEN = { env = "X", file = "y" }"#));
    assert_eq!(e.field(), Some("[secrets] API_TOKEN"));
    assert!(e.message().contains("2 sources (env, file)"), "{e}");
    assert!(e.hint().unwrap().contains("exactly one"));

    let e = err(&with("secrets", "API_TOKEN = {}"));
    assert!(e.message().contains("no source"), "{e}");

    let e = err(&with("secrets", r#"API_TOKEN = "hunter2""#));
    assert!(e.hint().unwrap().contains("never write a secret"), "{e}");

    let e = err(&with("secrets", r#"API_TOKEN = { vault = "x" }"#));
    assert!(e.message().contains("unknown secret source `vault`"), "{e}");

    let c = parse(&with(
        "secrets",
        "A = { env = \"X\" }\nB = { file = \"f\" }\nC = { command = \"echo\" }",
    ))
    .unwrap();
    assert_eq!(c.secrets["A"], SecretSource::Env("X".into()));
    assert_eq!(c.secrets["B"], SecretSource::File("f".into()));
    assert_eq!(c.secrets["C"], SecretSource::Command("echo".into()));
}

/// `on = "server"`: resolved by the server that runs the release, never by the CLI.
#[test]
fn a_secret_may_resolve_on_the_server_and_only_there() {
    let text = with(
        "secrets",
        "DB = { env = \"CUTOVER_T_DB\", on = \"server\" }\nAPI = { env = \"CUTOVER_T_API\" }",
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.secrets["DB"],
        SecretSource::OnServer(Box::new(SecretSource::Env("CUTOVER_T_DB".into())))
    );
    assert_eq!(
        c.secrets["DB"].describe(),
        r#"{ env = "CUTOVER_T_DB", on = "server" }"#
    );
    // The caller resolves only its own: the server's variable is not set here, and is not
    // asked for.
    std::env::set_var("CUTOVER_T_API", "from-the-laptop");
    let dir = tempfile::tempdir().unwrap();
    let here = c.resolve_secrets(dir.path()).unwrap();
    assert_eq!(here.keys().collect::<Vec<_>>(), ["API"]);
    assert!(!c.secrets_complete(&here));
    // The server resolves what is missing, and its own even when a caller sent a value.
    std::env::set_var("CUTOVER_T_DB", "from-the-server");
    let mut given = here.clone();
    given.insert("DB".into(), "smuggled".into());
    let all = c.complete_secrets(dir.path(), given).unwrap();
    assert_eq!(all["DB"], "from-the-server");
    assert_eq!(all["API"], "from-the-laptop");

    // Any other place is refused, naming the field and the fix.
    let text = with("secrets", r#"DB = { env = "X", on = "laptop" }"#);
    let e = err(&text);
    assert_eq!(e.field(), Some("[secrets] DB"), "{e}");
    assert!(e.message().contains(r#"on = "laptop""#), "{e}");
    assert!(e.to_string().contains(r#"on = "server""#), "{e}");
    // `on` alone is no source.
    let e = err(&with("secrets", r#"DB = { on = "server" }"#));
    assert!(e.message().contains("no source"), "{e}");
}

#[test]
fn env_var_names_are_checked() {
    let text = with("env", "1BAD = \"x\"");
    let e = err(&text);
    assert_eq!(e.field(), Some("[env] 1BAD"));
    let line = text.lines().position(|l| l.starts_with("1BAD")).unwrap() + 1;
    assert_eq!(line_col(&e), (line, 1));
    assert!(
        e.hint().unwrap().contains("do not start with a digit"),
        "{e}"
    );

    let e = err(&with("secrets", r#""MY-TOKEN" = { env = "X" }"#));
    assert_eq!(e.field(), Some("[secrets] MY-TOKEN"), "{e}");

    let e = err(&with("environments.staging", "env = { \"A B\" = \"1\" }"));
    assert_eq!(e.field(), Some("[environments.staging.env] \"A B\""), "{e}");

    let e = err(&with("run", "port_env = \"1PORT\""));
    assert_eq!(e.field(), Some("[run] port_env"));
}

#[test]
fn env_names_may_not_clash_with_secrets_or_cutover() {
    let e = err(&format!(
        "{}\n[secrets]\nTOKEN = {{ env = \"T\" }}\n",
        with("env", "TOKEN = \"x\"")
    ));
    assert_eq!(e.field(), Some("[env] TOKEN"));
    assert!(e.message().contains("also declared in [secrets]"), "{e}");

    let e = err(&with("env", "APP_VERSION = \"1\""));
    assert!(e.message().contains("set by cutover"), "{e}");
    let e = err(&with("env", "CUTOVER_INSTANCE = \"1\""));
    assert!(e.message().contains("set by cutover"), "{e}");
    let e = err(&with("environments.staging", "env = { PORT = \"80\" }"));
    assert_eq!(e.field(), Some("[environments.staging.env] PORT"), "{e}");
}

/// BASE with `[run] command` set to `argv` (TOML array text).
fn with_command(argv: &str) -> String {
    BASE.replace(
        "command = [\"python3\", \"serve.py\"]",
        &format!("command = {argv}"),
    )
}

#[test]
fn run_command_refuses_an_unknown_variable_with_the_known_ones() {
    let e = err(&with_command(r#"["gunicorn", "-b", "127.0.0.1:${PROT}"]"#));
    assert_eq!(e.field(), Some("[run] command[2]"), "{e}");
    assert_eq!(line_col(&e), (8, 30), "{e}");
    assert!(
        e.to_string().starts_with(
            "cutover.toml:8:30: [run] command[2]: unknown variable PROT in \"127.0.0.1:${PROT}\""
        ),
        "{e}"
    );
    let hint = e.hint().unwrap();
    for known in [
        "PORT",
        "APP_VERSION",
        "CUTOVER_APP",
        "CUTOVER_ENV",
        "CUTOVER_RELEASE",
        "CUTOVER_INSTANCE",
        "CUTOVER_DATA_DIR",
        "$$",
    ] {
        assert!(hint.contains(known), "{known}: {e}");
    }

    // With another port_env, PORT is not given; [env] keys are.
    let text = with("env", "WORKERS = \"2\"")
        .replace("[run]\n", "[run]\nport_env = \"HTTP_PORT\"\n")
        .replace("\"serve.py\"]", "\"serve.py\", \"$PORT\"]");
    let e = err(&text);
    assert!(e.message().contains("unknown variable PORT"), "{e}");
    assert!(
        e.hint().unwrap().contains("HTTP_PORT") && e.hint().unwrap().contains("WORKERS"),
        "{e}"
    );

    // Malformed references are named too.
    let e = err(&with_command(r#"["./app", "--port=${PORT"]"#));
    assert_eq!(e.field(), Some("[run] command[1]"), "{e}");
    assert!(e.message().contains("no closing"), "{e}");
    assert!(e.hint().unwrap().contains("$$"), "{e}");
}

#[test]
fn run_command_refuses_a_secret_because_ps_shows_arguments() {
    let text = format!(
        "{}\n[secrets]\nAPI_TOKEN = {{ env = \"API_TOKEN\" }}\n",
        with_command(r#"["./app", "--token", "$API_TOKEN"]"#)
    );
    let e = err(&text);
    assert_eq!(e.field(), Some("[run] command[2]"), "{e}");
    assert_eq!(line_col(&e), (8, 32), "{e}");
    assert!(
        e.message().contains("API_TOKEN is a secret") && e.message().contains("`ps`"),
        "{e}"
    );
    assert!(
        e.hint()
            .unwrap()
            .contains("read API_TOKEN from the environment in the app"),
        "{e}"
    );
}

#[test]
fn run_command_may_use_what_the_instance_gets() {
    let text = format!(
        "{}\n[env]\nWORKERS = \"2\"\n\n[environments.production]\nlisten = \"127.0.0.1:8002\"\nenv = {{ MODE = \"prod\" }}\n",
        with_command(
            r#"["./app", "-b", "127.0.0.1:${PORT}", "-w", "$WORKERS", "--mode=$MODE", "$$HOME", "5$", "$CUTOVER_INSTANCE"]"#
        )
        .replace(
            "listen = \"127.0.0.1:8001\"",
            "listen = \"127.0.0.1:8001\"\nenv = { MODE = \"staging\" }"
        )
    );
    let c = parse(&text).unwrap();
    let vars: std::collections::BTreeMap<String, String> = [
        ("PORT", "8123"),
        ("WORKERS", "2"),
        ("MODE", "prod"),
        ("CUTOVER_INSTANCE", "production-r1-1-x"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(
        expand_argv(&c.run.command, &vars).unwrap(),
        [
            "./app",
            "-b",
            "127.0.0.1:8123",
            "-w",
            "2",
            "--mode=prod",
            "$HOME",
            "5$",
            "production-r1-1-x"
        ]
    );

    // A name only one environment sets is missing in the other.
    let e = err(&text.replace("env = { MODE = \"prod\" }", ""));
    assert!(
        e.message()
            .contains("MODE is not set in environment `production`"),
        "{e}"
    );
    assert!(
        e.hint().unwrap().contains("[environments.production.env]"),
        "{e}"
    );
}

#[test]
fn bad_environment_name_health_path_and_status() {
    let e = err(&format!(
        "{BASE}\n[environments.Prod]\nlisten = \"127.0.0.1:9\"\n"
    ));
    assert!(
        e.message()
            .contains("\"Prod\" is not a valid environment name"),
        "{e}"
    );
    let e = err(&with("health", "path = \"health\""));
    assert!(e.hint().unwrap().contains("\"/health\""), "{e}");
    let e = err(&with("health", "status = 42"));
    assert_eq!(e.field(), Some("[health] status"));
    let e = err(&with("health", "healthy_threshold = 0"));
    assert!(e.hint().unwrap().contains("1 or more"), "{e}");
}

#[test]
fn missing_required_keys() {
    let e = err(&BASE.replace(
        "[run]\ncommand = [\"python3\", \"serve.py\"]\n",
        "[run]\nport_env = \"P\"\n",
    ));
    assert_eq!(e.field(), Some("[run] command"));
    assert!(e.hint().unwrap().contains("command = ["), "{e}");
    let e = err(&BASE.replace("[build]\nfiles = [\"serve.py\"]\n", ""));
    assert_eq!(e.field(), Some("[build]"), "{e}");
    assert!(e.hint().unwrap().contains("files = ["), "{e}");
    let e = err(&BASE.replace("files = [\"serve.py\"]", "files = []"));
    assert!(e.message().contains("empty"), "{e}");
    let e = err(&format!(
        "{}\n[environments]\n",
        BASE.replace("[environments.staging]\nlisten = \"127.0.0.1:8001\"\n", "")
    ));
    assert_eq!(e.field(), Some("[environments]"), "{e}");
}

#[test]
fn unknown_environment_lists_known_ones() {
    let c = parse(&format!(
        "{BASE}\n[environments.production]\nlisten = \"127.0.0.1:8002\"\n"
    ))
    .unwrap();
    let e = c.environment("prod").unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::UnknownEnvironment);
    assert!(e.to_string().contains("production, staging"), "{e}");
}

#[test]
fn overrides_refuse_bad_names_secrets_and_reserved() {
    let c = parse(&with("secrets", "API_TOKEN = { env = \"API_TOKEN\" }")).unwrap();
    let ov = |n: &str| vec![(n.to_string(), "sup3r-s3cret-value".to_string())];
    assert!(c.check_overrides(&ov("LOG_LEVEL")).is_ok());
    let e = c.check_overrides(&ov("API_TOKEN")).unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::Override);
    assert!(
        e.message()
            .starts_with("API_TOKEN is a secret; set it through its source"),
        "{e}"
    );
    assert!(!e.to_string().contains("sup3r"), "{e}");
    let e = c.check_overrides(&ov("1BAD")).unwrap_err();
    assert!(
        e.to_string()
            .contains("not a valid environment variable name"),
        "{e}"
    );
    assert!(!e.to_string().contains("sup3r"));
    assert!(c.check_overrides(&ov("PORT")).is_err());
}

#[test]
fn missing_secret_env_var_names_the_secret_not_values() {
    let text = with(
        "secrets",
        "FROM_FILE = { file = \"token.txt\" }\nMISSING = { env = \"CUTOVER_TEST_SURELY_UNSET_VAR\" }",
    );
    let c = parse(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token.txt"), "file-secret-value\n").unwrap();
    let e = c.resolve_secrets(dir.path()).unwrap_err();
    assert_eq!(e.secret(), "MISSING");
    let shown = e.to_string();
    assert!(shown.contains("secret MISSING"), "{shown}");
    assert!(shown.contains("CUTOVER_TEST_SURELY_UNSET_VAR"), "{shown}");
    assert!(!shown.contains("file-secret-value"), "{shown}");
}

#[test]
fn secrets_from_file_command_and_env() {
    std::env::set_var("CUTOVER_TEST_SECRET_ENV", "from-env");
    let text = with(
        "secrets",
        "A = { file = \"token.txt\" }\nB = { command = \"printf 'from-command\\\\n\\\\n'\" }\nC = { env = \"CUTOVER_TEST_SECRET_ENV\" }",
    );
    let c = parse(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token.txt"), "from-file\n").unwrap();
    let values = c.resolve_secrets(dir.path()).unwrap();
    assert_eq!(values["A"], "from-file");
    // Only one trailing newline is trimmed.
    assert_eq!(values["B"], "from-command\n");
    assert_eq!(values["C"], "from-env");
}

#[test]
fn failing_secret_command_and_missing_file_name_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let c = parse(&with(
        "secrets",
        "T = { command = \"printf 'leak%s' ed-value; echo nope >&2; exit 3\" }",
    ))
    .unwrap();
    let shown = c.resolve_secrets(dir.path()).unwrap_err().to_string();
    assert!(
        shown.contains("secret T") && shown.contains("exit status: 3"),
        "{shown}"
    );
    assert!(shown.contains("nope"), "{shown}");
    assert!(!shown.contains("leaked-value"), "{shown}");

    let c = parse(&with("secrets", "F = { file = \"absent.txt\" }")).unwrap();
    let shown = c.resolve_secrets(dir.path()).unwrap_err().to_string();
    assert!(
        shown.contains("secret F") && shown.contains("absent.txt"),
        "{shown}"
    );
}

#[test]
fn init_template_parses_and_explains() {
    let text = init_template("tasks-app");
    let c = parse(&text).unwrap();
    assert_eq!(c.app.name.as_str(), "tasks-app");
    assert_eq!(
        c.environments["staging"].listen.to_string(),
        "127.0.0.1:8001"
    );
    assert_eq!(
        c.environments["production"].listen.to_string(),
        "127.0.0.1:8002"
    );
    assert_eq!(c.health, Health::default());
    for key in [
        "command",
        "files",
        "port_env",
        "stop_timeout",
        "path",
        "status",
        "body_contains",
        "interval",
        "timeout",
        "healthy_threshold",
        "deadline",
        "monitor",
        "unhealthy_threshold",
        "listen",
        "strategy",
        "instances",
        "env =",
        "file =",
    ] {
        assert!(text.contains(key), "template lacks {key}");
    }
}

#[test]
fn snapshot_round_trips_through_json() {
    let text = format!(
        "{}\n[secrets]\nA = {{ env = \"X\" }}\nB = {{ file = \"f\" }}\nC = {{ command = \"echo\" }}\n",
        init_template("tasks-app").replace("# status = 200", "status = 200").replace("monitor = \"10s\"", "monitor = \"1m30s\"").replace("[secrets]", "")
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.health.status, Some(200));
    let json = serde_json::to_string(&c).unwrap();
    assert!(json.contains("\"monitor\":\"1m30s\""), "{json}");
    assert!(json.contains("\"interval\":\"200ms\""), "{json}");
    let back: Config = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
    // And back to TOML.
    let toml_text = toml::to_string(&c).unwrap();
    assert_eq!(parse(&toml_text).unwrap(), c);
}

#[test]
fn load_names_the_path_and_hints_init() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.toml");
    let e = Config::load(&path).unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::NotFound);
    let shown = e.to_string();
    assert!(
        shown.contains(&path.display().to_string()) && shown.contains("cutover init"),
        "{shown}"
    );

    std::fs::write(&path, with("health", "interval = \"10\"")).unwrap();
    let shown = Config::load(&path).unwrap_err().to_string();
    assert!(
        shown.starts_with(&format!("{}:", path.display())),
        "{shown}"
    );

    std::fs::write(&path, BASE).unwrap();
    assert!(Config::load(&path).is_ok());
    assert!(Config::load(Path::new("/")).is_err());
}

// ---- container keys (issue 3) ----

const DOCKER: &str = r#"[app]
name = "tasks-app"

[build]
dockerfile = "Dockerfile"
tags = ["latest"]

[registry]
url = "127.0.0.1:5000"
repository = "tasks-app"
password = { env = "REGISTRY_PASSWORD" }

[retention]
keep = 3

[run]
port = 8000
volumes = ["tasks-data:/data"]

[environments.production]
runtime = "docker"
listen = "127.0.0.1:8000"
"#;

#[test]
fn a_container_config_parses_and_round_trips() {
    let c = parse(DOCKER).unwrap();
    assert_eq!(c.environments["production"].runtime, RuntimeKind::Docker);
    assert_eq!(
        c.registry.as_ref().unwrap().image(),
        "127.0.0.1:5000/tasks-app"
    );
    assert_eq!(c.run.port, Some(8000));
    assert_eq!(c.retention.keep, 3);
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), c);
}

#[test]
fn a_misspelled_runtime_is_named_with_the_valid_ones() {
    let e = err(&DOCKER.replace(r#"runtime = "docker""#, r#"runtime = "dockr""#));
    let text = e.to_string();
    assert!(
        text.contains("dockr") && text.contains("docker") && text.contains("podman"),
        "{text}"
    );
    assert_eq!(line_col(&e).0, 21);
}

#[test]
fn a_container_environment_needs_a_dockerfile_and_a_port() {
    let e = err(&DOCKER.replace("dockerfile = \"Dockerfile\"\n", ""));
    assert!(e.to_string().contains("dockerfile"), "{e}");
    let e = err(&DOCKER.replace("port = 8000\n", ""));
    assert_eq!(e.field(), Some("[run] port"), "{e}");
}

#[test]
fn a_process_environment_needs_files_and_a_command() {
    let e = err(&DOCKER.replace(r#"runtime = "docker""#, r#"runtime = "process""#));
    assert!(e.to_string().contains("files"), "{e}");
}

#[test]
fn bad_container_values_are_refused_with_a_hint() {
    for (from, to, says) in [
        ("tasks-data:/data", "/host/path:/data", "named volume"),
        ("port = 8000", "port = 70000", "not a port"),
        (
            r#"url = "127.0.0.1:5000""#,
            r#"url = "http://127.0.0.1:5000""#,
            "registry address",
        ),
        (
            r#"repository = "tasks-app""#,
            r#"repository = "Tasks App""#,
            "repository name",
        ),
        (r#"tags = ["latest"]"#, r#"tags = ["no good"]"#, "image tag"),
        ("keep = 3", "keep = 0", "too small"),
    ] {
        let e = err(&DOCKER.replace(from, to));
        assert!(e.to_string().contains(says), "{to}: {e}");
        assert!(e.hint().is_some(), "{to}: no hint");
    }
}

// ---- the swarm runtime (issue 11) ----

fn swarm(extra: &str) -> String {
    DOCKER.replace(r#"runtime = "docker""#, r#"runtime = "swarm""#) + extra
}

#[test]
fn a_swarm_environment_parses_with_its_constraints() {
    let c = parse(&swarm(
        "\n[environments.production.swarm]\nconstraints = [\"node.role == worker\", \"node.labels.zone != b\"]\n",
    ))
    .unwrap();
    let env = &c.environments["production"];
    assert_eq!(env.runtime, RuntimeKind::Swarm);
    assert_eq!(
        env.swarm.as_ref().unwrap().constraints,
        ["node.role == worker", "node.labels.zone != b"]
    );
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), c);
    // Without the table: anywhere.
    assert!(parse(&swarm("")).unwrap().environments["production"]
        .swarm
        .is_none());
    // A swarm environment runs an image, as containers do.
    let e = err(&swarm("").replace("port = 8000\n", ""));
    assert_eq!(e.field(), Some("[run] port"), "{e}");
}

#[test]
fn bad_swarm_settings_are_refused_where_they_are() {
    for (constraint, says) in [
        ("node.role = worker", "no == or !="),
        ("node.rol == worker", "no such attribute"),
        ("node.role == boss", "manager or worker"),
        ("node.labels. == a", "no such attribute"),
        ("node.hostname == ", "one word"),
        ("node.hostname == a b", "one word"),
    ] {
        let text = swarm(&format!(
            "\n[environments.production.swarm]\nconstraints = [{constraint:?}]\n"
        ));
        let e = err(&text);
        let msg = e.to_string();
        assert!(
            msg.contains(says) && msg.contains(constraint),
            "{constraint}: {msg}"
        );
        assert!(
            e.hint().is_some_and(|h| h.contains("node.role == worker")),
            "{e:?}"
        );
        assert_eq!(line_col(&e).0, 25, "{constraint}: {msg}");
    }
    // An unknown key, a string instead of a list, an empty list.
    let e = err(&swarm(
        "\n[environments.production.swarm]\nconstraint = [\"node.role == worker\"]\n",
    ));
    assert!(e.to_string().contains("constraint"), "{e}");
    assert_eq!(line_col(&e).0, 25, "{e}");
    let e = err(&swarm(
        "\n[environments.production.swarm]\nconstraints = \"node.role == worker\"\n",
    ));
    assert!(e.hint().is_some_and(|h| h.contains("list")), "{e:?}");
    let e = err(&swarm(
        "\n[environments.production.swarm]\nconstraints = []\n",
    ));
    assert!(e.to_string().contains("empty"), "{e}");
    // A swarm table on an environment that does not run on the swarm runtime.
    let e = err(&(DOCKER.to_string()
        + "\n[environments.production.swarm]\nconstraints = [\"node.role == worker\"]\n"));
    assert_eq!(e.field(), Some("[environments.production.swarm]"), "{e}");
    assert!(
        e.hint().is_some_and(|h| h.contains("runtime = \"swarm\"")),
        "{e:?}"
    );
    assert_eq!(line_col(&e).0, 24, "{e}");
    // The valid runtimes are named, swarm among them.
    let e = err(&DOCKER.replace(r#"runtime = "docker""#, r#"runtime = "swarn""#));
    assert!(e.to_string().contains("swarm"), "{e}");
}

// ---- pipeline keys (issue 4) ----

const PIPELINE: &str = r#"[app]
name = "tasks"

[build]
files = ["serve.py"]

[run]
command = ["python3", "serve.py"]

[pipeline]
branch = "main"

[[pipeline.check]]
name = "lint"
run = "cargo clippy -- -D warnings"

[[pipeline.check]]
name = "test"
run = "cargo test"

[[pipeline.check]]
name = "scan"
run = "cargo audit"
needs = ["lint"]
timeout = "10m"

[webhook]
secret = { env = "CUTOVER_WEBHOOK_SECRET" }

[[notify]]
url = "http://127.0.0.1:9000/hook"

[environments.staging]
listen = "127.0.0.1:8001"

[environments.production]
listen = "127.0.0.1:8002"
requires = ["staging"]
approval = "manual"
approvers = ["alice", "bob"]
"#;

#[test]
fn a_pipeline_config_parses() {
    let c = parse(PIPELINE).unwrap();
    assert_eq!(c.pipeline.checks.len(), 3);
    assert_eq!(c.pipeline.checks[2].timeout, Duration::from_secs(600));
    assert_eq!(c.environments["production"].approval, Approval::Manual);
    assert_eq!(c.environments["staging"].approval, Approval::Auto);
    assert_eq!(c.notify[0].url, "http://127.0.0.1:9000/hook");
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), c);
}

#[test]
fn bad_pipeline_values_are_refused_with_a_hint() {
    for (from, to, says) in [
        (r#"needs = ["lint"]"#, r#"needs = ["lnt"]"#, "not a check"),
        (r#"run = "cargo test""#, r#"run = "  ""#, "empty"),
        (
            r#"approval = "manual""#,
            r#"approval = "sometimes""#,
            "sometimes",
        ),
        (
            r#"requires = ["staging"]"#,
            r#"requires = ["qa"]"#,
            "no environment named `qa`",
        ),
        (
            r#"requires = ["staging"]"#,
            r#"requires = ["production"]"#,
            "cannot require itself",
        ),
        (r#"name = "test""#, r#"name = "lint""#, "two checks"),
        (
            r#"url = "http://127.0.0.1:9000/hook""#,
            r#"url = "127.0.0.1:9000""#,
            "not an http(s) URL",
        ),
    ] {
        let e = err(&PIPELINE.replace(from, to));
        assert!(e.to_string().contains(says), "{to}: {e}");
        assert!(e.hint().is_some(), "{to}: no hint");
    }
}

#[test]
fn a_needs_cycle_is_named() {
    let text = PIPELINE.replace(
        "name = \"lint\"\nrun = \"cargo clippy -- -D warnings\"",
        "name = \"lint\"\nrun = \"cargo clippy -- -D warnings\"\nneeds = [\"scan\"]",
    );
    let e = err(&text);
    assert!(
        e.to_string().contains("circle") && e.to_string().contains("lint"),
        "{e}"
    );
}

#[test]
fn pipeline_branch_and_remote_must_be_names_git_allows() {
    let ok = parse(&with(
        "pipeline",
        "branch = \"release/2.x\"\nremote = \"forge\"",
    ))
    .unwrap();
    assert_eq!(ok.pipeline.branch, "release/2.x");
    assert_eq!(ok.pipeline.remote, "forge");
    assert_eq!(parse(BASE).unwrap().pipeline.remote, "origin");
    for (key, value, needle) in [
        (
            "remote",
            "--upload-pack=touch /tmp/x",
            "git would read as an option",
        ),
        ("remote", "", "must not be empty"),
        ("branch", "main branch", "does not allow"),
        ("branch", "feat..x", "not a name git allows"),
        ("branch", "-f", "git would read as an option"),
    ] {
        let e = err(&with("pipeline", &format!("{key} = {value:?}")));
        assert_eq!(e.field(), Some(format!("[pipeline] {key}").as_str()), "{e}");
        assert!(e.message().contains(needle), "{key} = {value:?}: {e}");
        assert!(e.hint().unwrap().contains("\"origin\""), "{e}");
        assert_eq!(line_col(&e).0, 14, "{e}");
    }
    let e = err(&with("pipeline", "remote = 7"));
    assert_eq!(e.field(), Some("[pipeline] remote"), "{e}");
}

#[test]
fn edge_limits_have_defaults_and_parse() {
    let c = parse(BASE).unwrap();
    let edge = c.environment("staging").unwrap().edge;
    assert_eq!(edge, EdgeLimits::default());
    assert_eq!(edge.max_body, 100_000_000);
    assert_eq!(edge.upstream_timeout, Duration::from_secs(60));
    assert_eq!(edge.idle_timeout, Duration::from_secs(75));
    assert_eq!(edge.header_timeout, Duration::from_secs(30));
    assert_eq!(edge.drain_timeout, Duration::from_secs(30));
    assert!(!edge.hsts);

    let c = parse(&with(
        "environments.staging.edge",
        "max_body = \"1MiB\"\nupstream_timeout = \"5s\"\nidle_timeout = \"2m\"\nheader_timeout = \"500ms\"\ndrain_timeout = \"3s\"\nhsts = true",
    ))
    .unwrap();
    let edge = c.environment("staging").unwrap().edge;
    assert_eq!(edge.max_body, 1 << 20);
    assert_eq!(edge.upstream_timeout, Duration::from_secs(5));
    assert_eq!(edge.idle_timeout, Duration::from_secs(120));
    assert_eq!(edge.header_timeout, Duration::from_millis(500));
    assert_eq!(edge.drain_timeout, Duration::from_secs(3));
    assert!(edge.hsts);
    // The committed snapshot keeps them.
    let json = serde_json::to_string(&c).unwrap();
    let back: Config = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
}

#[test]
fn bad_edge_limits_are_refused_naming_the_field_and_the_fix() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "max_body = \"100XB\"",
            "max_body",
            "unknown unit",
            "\"100MB\"",
        ),
        (
            "max_body = \"100\"",
            "max_body",
            "unit is missing",
            "\"100MB\"",
        ),
        ("max_body = \"-1MB\"", "max_body", "negative", "\"100MB\""),
        ("max_body = \"0B\"", "max_body", "zero", "\"100MB\""),
        ("max_body = 0", "max_body", "not a size", "\"0MB\""),
        ("max_body = 100", "max_body", "not a size", "\"100MB\""),
        (
            "upstream_timeout = \"-1s\"",
            "upstream_timeout",
            "negative",
            "\"10s\"",
        ),
        (
            "upstream_timeout = \"0s\"",
            "upstream_timeout",
            "timeout of 0",
            "\"30s\"",
        ),
        (
            "idle_timeout = 75",
            "idle_timeout",
            "not a duration",
            "\"75s\"",
        ),
        (
            "header_timeout = \"30\"",
            "header_timeout",
            "unit is missing",
            "\"10s\"",
        ),
        (
            "drain_timeout = \"soon\"",
            "drain_timeout",
            "not a duration",
            "\"10s\"",
        ),
        (
            "drain_timeout = \"0ms\"",
            "drain_timeout",
            "timeout of 0",
            "\"30s\"",
        ),
        ("hsts = \"yes\"", "hsts", "", ""),
        ("hsts = 1", "hsts", "", ""),
    ];
    for (line, field, message, hint) in cases {
        let text = with("environments.staging.edge", line);
        let e = err(&text);
        assert_eq!(
            e.field(),
            Some(format!("[environments.staging.edge] {field}").as_str()),
            "{line}: {e}"
        );
        assert!(e.message().contains(message), "{line}: {e}");
        assert!(e.hint().is_some(), "{line}: {e}");
        assert!(e.hint().unwrap().contains(hint), "{line}: {e}");
        let at = text.lines().position(|l| l == *line).unwrap() + 1;
        assert_eq!(e.location().unwrap().line, at, "{line}: {e}");
    }
    let e = err(&with("environments.staging.edge", "max_bodies = \"1MB\""));
    assert_eq!(e.field(), Some("[environments.staging.edge] max_bodies"));
    assert!(e.hint().unwrap().contains("max_body"), "{e}");
}

// ---- HTTPS registries, receivers and probes (issue 8) ----

#[test]
fn tls_keys_parse() {
    let text = DOCKER.replace(
        "password = { env = \"REGISTRY_PASSWORD\" }",
        "password = { env = \"REGISTRY_PASSWORD\" }\nca_bundle = \"certs/ca.pem\"",
    ) + "\n[health]\nscheme = \"https\"\nca_bundle = \"certs/app-ca.pem\"\n\n[[notify]]\nurl = \"https://hooks.example/x\"\nformat = \"teams\"\nheaders = { Authorization = { env = \"TEAMS_TOKEN\" } }\nca_bundle = \"certs/hooks.pem\"\n";
    let c = parse(&text).unwrap();
    let r = c.registry.as_ref().unwrap();
    assert!(!r.insecure);
    assert_eq!(r.ca_bundle.as_deref(), Some(Path::new("certs/ca.pem")));
    assert_eq!(c.health.scheme, HealthScheme::Https);
    assert_eq!(
        c.health.ca_bundle.as_deref(),
        Some(Path::new("certs/app-ca.pem"))
    );
    let n = &c.notify[0];
    assert_eq!(n.format, NotifyFormat::Teams);
    assert_eq!(
        n.headers["Authorization"],
        SecretSource::Env("TEAMS_TOKEN".into())
    );
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), c);
    // The defaults: verified HTTPS, JSON, plain HTTP probes.
    let c = parse(PIPELINE).unwrap();
    assert_eq!(c.notify[0].format, NotifyFormat::Json);
    assert_eq!(c.health.scheme, HealthScheme::Http);
}

#[test]
fn bad_tls_values_are_refused_with_a_hint() {
    let registry = |line: &str| {
        DOCKER.replace(
            "password = { env = \"REGISTRY_PASSWORD\" }",
            &format!("password = {{ env = \"REGISTRY_PASSWORD\" }}\n{line}"),
        )
    };
    let notify = |line: &str| {
        PIPELINE.replace(
            "url = \"http://127.0.0.1:9000/hook\"",
            &format!("url = \"http://127.0.0.1:9000/hook\"\n{line}"),
        )
    };
    for (text, field, says) in [
        (registry("insecure = \"yes\""), "insecure", "yes"),
        (registry("ca_bundle = \"\""), "ca_bundle", "empty"),
        (registry("ca_bundle = 5"), "ca_bundle", "not a path"),
        (registry("verify = false"), "verify", "verify"),
        (with("health", "scheme = \"tls\""), "scheme", "tls"),
        (with("health", "ca_bundle = \"  \""), "ca_bundle", "empty"),
        (notify("format = \"discord\""), "format", "discord"),
        (
            notify("headers = { Authorization = \"Bearer abc\" }"),
            "Authorization",
            "not a secret source",
        ),
        (
            notify("headers = { \"Bad Header\" = { env = \"X\" } }"),
            "headers",
            "not an HTTP header name",
        ),
        (
            notify("headers = { Content-Type = { env = \"X\" } }"),
            "headers",
            "set by cutover",
        ),
        (notify("ca_bundle = \"\""), "ca_bundle", "empty"),
        (
            PIPELINE.replace("http://127.0.0.1:9000/hook", "ftp://127.0.0.1/hook"),
            "url",
            "not an http(s) URL",
        ),
    ] {
        let e = err(&text);
        let shown = e.to_string();
        assert!(shown.contains(says), "{text}\n→ {shown}");
        assert!(
            e.field().unwrap_or_default().contains(field) || shown.contains(field),
            "{shown}"
        );
        assert!(e.hint().is_some(), "no hint: {shown}");
        assert!(!shown.contains("Bearer abc"), "{shown}");
        assert!(e.location().is_some(), "{shown}");
    }
}

#[test]
fn notify_header_values_come_from_their_sources() {
    let text = PIPELINE.replace(
        "url = \"http://127.0.0.1:9000/hook\"",
        "url = \"http://127.0.0.1:9000/hook\"\nheaders = { Authorization = { env = \"CUTOVER_TEST_HOOK_TOKEN_8\" } }",
    );
    let c = parse(&text).unwrap();
    let e = c.notify[0].resolve_headers(Path::new(".")).unwrap_err();
    assert!(
        e.to_string().contains("headers.Authorization")
            && e.to_string().contains("CUTOVER_TEST_HOOK_TOKEN_8"),
        "{e}"
    );
    std::env::set_var("CUTOVER_TEST_HOOK_TOKEN_8", "Bearer s3cret");
    assert_eq!(
        c.notify[0].resolve_headers(Path::new(".")).unwrap(),
        [("Authorization".to_string(), "Bearer s3cret".to_string())]
    );
}

#[test]
fn tls_keys_that_would_be_ignored_are_refused() {
    let e = err(&with("health", "ca_bundle = \"certs/ca.pem\""));
    assert_eq!(e.field(), Some("[health] ca_bundle"), "{e}");
    assert!(e.hint().unwrap().contains("scheme = \"https\""), "{e}");
    assert!(e.location().is_some(), "{e}");
    let e = err(&DOCKER.replace(
        "password = { env = \"REGISTRY_PASSWORD\" }",
        "password = { env = \"REGISTRY_PASSWORD\" }\ninsecure = true\nca_bundle = \"ca.pem\"",
    ));
    assert_eq!(e.field(), Some("[registry] insecure"), "{e}");
    assert!(e.message().contains("127.0.0.1:5000"), "{e}");
    assert!(e.hint().unwrap().contains("remove"), "{e}");
    // Each alone is fine.
    parse(&DOCKER.replace(
        "password = { env = \"REGISTRY_PASSWORD\" }",
        "password = { env = \"REGISTRY_PASSWORD\" }\ninsecure = true",
    ))
    .unwrap();
}

#[test]
fn an_environment_on_another_server_names_it_by_https_url_only() {
    let ok = parse(&with(
        "environments.staging",
        "server = \"https://prod.example.com:9871/\"",
    ))
    .unwrap();
    assert_eq!(
        ok.environments["staging"].server.as_deref(),
        Some("https://prod.example.com:9871")
    );
    assert_eq!(parse(BASE).unwrap().environments["staging"].server, None);
    for (value, needle, hint) in [
        ("http://prod:9871", "plain HTTP", "https://"),
        ("prod.example.com:9871", "not an https:// URL", "https://"),
        ("https://", "names no host", "https://"),
        (
            "https://bot:s3cret@prod:9871",
            "carries credentials",
            "cutover login",
        ),
        ("https://prod:9871/api", "no path", "https://"),
        ("https://prod:http", "no valid port", "https://"),
    ] {
        let e = err(&with(
            "environments.staging",
            &format!("server = {value:?}"),
        ));
        assert_eq!(e.field(), Some("[environments.staging] server"), "{e}");
        assert!(e.message().contains(needle), "{value}: {e}");
        assert!(e.hint().unwrap().contains(hint), "{value}: {e}");
        assert!(
            !e.to_string().contains("s3cret"),
            "never echoes a password: {e}"
        );
    }
}

// ---- HTTPS at the edge (issue 9) ----

#[test]
fn edge_tls_keys_parse_and_round_trip() {
    let c = parse(BASE).unwrap();
    let staging = c.environment("staging").unwrap();
    assert_eq!(staging.tls, None);
    assert_eq!(staging.http_redirect, None);
    assert_eq!(c.acme, Acme::default());
    assert_eq!(c.acme.directory, LETS_ENCRYPT);
    assert_eq!(c.acme.renew_before, Duration::from_secs(30 * 86_400));

    let text = with(
        "environments.staging",
        "hosts = [\"tasks.example.com\", \"www.tasks.example.com\"]\ntls = \"acme\"\nhttp_redirect = \"127.0.0.1:8080\"",
    ) + "\n[environments.production]\nlisten = \"127.0.0.1:8443\"\nhosts = [\"*.example.org\"]\ntls = { cert = \"certs/site.pem\", key = \"certs/site.key\" }\n\n[acme]\ndirectory = \"https://127.0.0.1:14000/dir\"\nemail = \"ops@example.com\"\nca_bundle = \"pebble.minica.pem\"\nrenew_before = \"10d\"\n";
    let c = parse(&text).unwrap();
    let staging = c.environment("staging").unwrap();
    assert_eq!(staging.tls, Some(Tls::Acme));
    assert_eq!(
        staging.http_redirect,
        Some("127.0.0.1:8080".parse().unwrap())
    );
    assert_eq!(staging.hosts.len(), 2);
    assert_eq!(
        c.environment("production").unwrap().tls,
        Some(Tls::Files {
            cert: "certs/site.pem".into(),
            key: "certs/site.key".into()
        })
    );
    assert_eq!(c.acme.directory, "https://127.0.0.1:14000/dir");
    assert_eq!(c.acme.email.as_deref(), Some("ops@example.com"));
    assert_eq!(
        c.acme.ca_bundle.as_deref(),
        Some(Path::new("pebble.minica.pem"))
    );
    assert_eq!(c.acme.renew_before, Duration::from_secs(10 * 86_400));
    // The committed snapshot keeps them.
    let json = serde_json::to_string(&c).unwrap();
    let back: Config = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
}

#[test]
fn bad_edge_tls_values_are_refused_naming_the_field_and_the_fix() {
    let env = |lines: &str| with("environments.staging", lines);
    let acme = |lines: &str| format!("{BASE}\n[acme]\n{lines}\n");
    // (config, field, what the message says, what the hint says, line of the error)
    let cases: Vec<(String, &str, &str, &str, &str)> = vec![
        (
            env("tls = \"acme\""),
            "[environments.staging] tls",
            "has no hosts",
            "hosts = [",
            "tls = \"acme\"",
        ),
        (
            env("hosts = [\"*.example.com\"]\ntls = \"acme\""),
            "[environments.staging] hosts",
            "wildcard",
            "list each name",
            "hosts = [\"*.example.com\"]",
        ),
        (
            env("hosts = [\"a.example.com\"]\ntls = \"acme\"\nhttp_redirect = \"127.0.0.1:8001\""),
            "[environments.staging] http_redirect",
            "also the listen address",
            "its own port",
            "http_redirect = \"127.0.0.1:8001\"",
        ),
        (
            env("hosts = [\"a.example.com\"]\nhttp_redirect = \"127.0.0.1:8080\""),
            "[environments.staging] http_redirect",
            "serves no TLS",
            "tls = \"acme\"",
            "http_redirect = \"127.0.0.1:8080\"",
        ),
        (
            env("tls = \"letsencrypt\""),
            "[environments.staging] tls",
            "not a way to get a certificate",
            "tls = \"acme\"",
            "tls = \"letsencrypt\"",
        ),
        (
            env("tls = true"),
            "[environments.staging] tls",
            "not a way to get a certificate",
            "tls = \"acme\"",
            "tls = true",
        ),
        (
            env("tls = { cert = \"site.pem\" }"),
            "[environments.staging] tls",
            "no key",
            "key = ",
            "tls = { cert = \"site.pem\" }",
        ),
        (
            env("tls = { key = \"site.key\" }"),
            "[environments.staging] tls",
            "no cert",
            "cert = ",
            "tls = { key = \"site.key\" }",
        ),
        (
            env("tls = { cert = \"site.pem\", key = \"site.key\", chain = \"ca.pem\" }"),
            "[environments.staging] tls",
            "unknown key `chain`",
            "cert",
            "tls = { cert = \"site.pem\", key = \"site.key\", chain = \"ca.pem\" }",
        ),
        (
            env("tls = { cert = \"\", key = \"site.key\" }"),
            "[environments.staging] tls",
            "empty",
            "path",
            "tls = { cert = \"\", key = \"site.key\" }",
        ),
        (
            env("http_redirect = \"80\""),
            "[environments.staging] http_redirect",
            "not an IP:PORT",
            "127.0.0.1:8001",
            "http_redirect = \"80\"",
        ),
        (
            acme("directory = \"http://127.0.0.1:14000/dir\""),
            "[acme] directory",
            "not an https URL",
            "https://acme-v02",
            "directory = \"http://127.0.0.1:14000/dir\"",
        ),
        (
            acme("email = \"ops\""),
            "[acme] email",
            "not an email address",
            "ops@example.com",
            "email = \"ops\"",
        ),
        (
            acme("renew_before = \"30\""),
            "[acme] renew_before",
            "unit is missing",
            "\"10s\"",
            "renew_before = \"30\"",
        ),
        (
            acme("renew_before = \"0d\""),
            "[acme] renew_before",
            "0",
            "more than 0",
            "renew_before = \"0d\"",
        ),
        (
            acme("ca_bundle = \"\""),
            "[acme] ca_bundle",
            "empty",
            "PEM",
            "ca_bundle = \"\"",
        ),
        (
            acme("directroy = \"https://x.example/dir\""),
            "[acme] directroy",
            "unknown",
            "directory",
            "directroy = \"https://x.example/dir\"",
        ),
    ];
    for (text, field, says, hint, line) in &cases {
        let e = err(text);
        assert_eq!(e.field(), Some(*field), "{text}\n→ {e}");
        assert!(e.message().contains(says), "{text}\n→ {e}");
        let h = e.hint().unwrap_or_else(|| panic!("no hint: {e}"));
        assert!(h.contains(hint), "{text}\n→ {e}");
        let at = text.lines().position(|l| l == *line).unwrap() + 1;
        assert_eq!(e.location().unwrap().line, at, "{text}\n→ {e}");
    }
    // An http_redirect on another environment's listen address.
    let text =
        env("hosts = [\"a.example.com\"]\ntls = \"acme\"\nhttp_redirect = \"127.0.0.1:8002\"")
            + "\n[environments.production]\nlisten = \"127.0.0.1:8002\"\n";
    let e = err(&text);
    assert_eq!(
        e.field(),
        Some("[environments.staging] http_redirect"),
        "{e}"
    );
    assert!(e.message().contains("`production`"), "{e}");
    // A wildcard is fine with files.
    parse(&env(
        "hosts = [\"*.example.com\"]\ntls = { cert = \"c.pem\", key = \"k.pem\" }",
    ))
    .unwrap();
}
