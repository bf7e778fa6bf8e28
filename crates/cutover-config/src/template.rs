//! The commented `cutover.toml` that `cutover init` writes.

/// A commented `cutover.toml` for `app_name` that explains every key. Staging listens on
/// 127.0.0.1:8001 and production on 127.0.0.1:8002.
pub fn init_template(app_name: &str) -> String {
    TEMPLATE.replace("{APP}", app_name)
}

const TEMPLATE: &str = r#"# cutover.toml: how cutover builds, runs, checks and releases this app.
# A deploy uses this file as committed in the commit being deployed: commit your changes.
# Durations are strings with a unit: "500ms", "30s", "5m", "1h", "30d", "1m30s".

[app]
# Lowercase letters, digits and `-` (1 to 63 characters).
name = "{APP}"

[build]
# Optional. Run once per commit with `sh -c` in a clean checkout of that commit;
# CUTOVER_VERSION holds the version being built. Leave it out if there is nothing to build.
# command = "make release"
# Required. Paths or globs (relative to the repository root) that make up the artifact;
# directories are taken whole. A pattern that matches nothing fails the build. Symlinks
# (a virtualenv's lib64, libfoo.so) stay symlinks and are never followed; a relative one
# must point inside the bundle.
files = ["serve.py"]

[run]
# Required. The argv of one instance, run inside the unpacked artifact (no shell).
# $NAME and ${NAME} are replaced by what the instance gets: PORT (see port_env),
# APP_VERSION, CUTOVER_APP, CUTOVER_ENV, CUTOVER_RELEASE, CUTOVER_INSTANCE,
# CUTOVER_DATA_DIR and the [env] keys, e.g. ["gunicorn", "-b", "127.0.0.1:${PORT}", "app:app"].
# $$ is a literal $; a $ before anything else stays as is. Secrets are refused here
# (every user of the machine sees a process's arguments): read them from the environment.
command = ["python3", "serve.py"]
# The environment variable that tells the instance which port to listen on.
port_env = "PORT"
# Time between SIGTERM and SIGKILL when an instance is stopped.
stop_timeout = "10s"

[health]
# HTTP path probed on each new instance; it must start with `/`.
path = "/health"
# Expected status code; leave it out to accept any 2xx.
# status = 200
# Optional: the response body must contain this text.
# body_contains = "ok"
# Time between two probes, and the timeout of one probe.
interval = "200ms"
timeout = "2s"
# Consecutive successful probes that make a new instance healthy.
healthy_threshold = 2
# How long a new instance has to become healthy before the deploy fails.
deadline = "30s"
# The monitor window after cutover, while the previous version is kept warm ("0s": none).
monitor = "10s"
# Consecutive failed probes in the monitor window that roll back automatically.
unhealthy_threshold = 3
# "http", or "https" for an app that serves TLS itself. Its certificate is not verified
# unless ca_bundle names the PEM file (relative to this file) of the CA that signs it.
# scheme = "https"
# ca_bundle = "certs/instances-ca.pem"

[env]
# Plain environment variables given to every instance in every environment.
# cutover also sets PORT (see port_env), APP_VERSION, CUTOVER_APP, CUTOVER_ENV, CUTOVER_RELEASE,
# CUTOVER_INSTANCE and CUTOVER_DATA_DIR.
LOG_LEVEL = "info"

[secrets]
# Secrets are never written in this file: each names where its value comes from, resolved
# where the deploy is asked for, and never stored by cutover. Exactly one source each:
# API_TOKEN = { env = "API_TOKEN" }            # an environment variable
# DB_PASSWORD = { file = "secrets/db.txt" }    # a file, relative to this file
# SIGNING_KEY = { command = "pass show app" }  # a command's stdout, run with `sh -c`

[environments.staging]
# Where cutover's edge proxy listens for this environment (IP:PORT).
listen = "127.0.0.1:8001"
# "blue-green": start the new version beside the old and switch when healthy;
# "recreate": stop the old version first.
strategy = "blue-green"
# Number of instances, 1 to 32.
instances = 1

[environments.staging.env]
# Variables for this environment only; they override [env].
LOG_LEVEL = "debug"

[environments.staging.edge]
# What the edge accepts and how long it waits (these are the defaults).
# Request bodies larger than this are answered 413 (units: B, KB, MB, GB, KiB, MiB, GiB).
max_body = "100MB"
# The app has this long to begin its answer, else 504.
upstream_timeout = "60s"
# A kept-alive connection with no request is closed after this long.
idle_timeout = "75s"
# A client has this long to send a whole request head.
header_timeout = "30s"
# At a cut-over, requests and WebSockets on the old version get this long, then are closed.
drain_timeout = "30s"
# Strict-Transport-Security on HTTPS answers (no effect on plain HTTP).
hsts = false

[environments.production]
# Ready to use: `cutover deploy production` (or promote what runs in staging).
listen = "127.0.0.1:8002"
strategy = "blue-green"
instances = 1
# For the public: the names this environment answers to (SNI and Host), HTTPS with a
# certificate by ACME (or tls = { cert = "certs/site.pem", key = "certs/site.key" }), and plain
# HTTP that answers ACME's HTTP-01 and redirects the rest to https://.
# listen = "0.0.0.0:443"
# hosts = ["tasks.example.com"]
# tls = "acme"
# http_redirect = "0.0.0.0:80"

# [acme]
# Where tls = "acme" certificates come from (Let's Encrypt by default), and who the CA may
# warn about them; renewed this long before they expire.
# directory = "https://acme-v02.api.letsencrypt.org/directory"
# email = "ops@example.com"
# renew_before = "30d"
"#;
