# Shared helpers for the bench/*.sh scripts. Source it; do not run it.
#
# Every script: installs what it needs if missing, builds the release binaries, sends traffic
# to 127.0.0.1 only, bounds every loop in count and time, and cleans up on exit.

set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
CUTOVER="${CUTOVER:-$ROOT/target/release/cutover}"
TASKS_BIN="${TASKS_BIN:-$ROOT/target/release/tasks-app}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# need CMD [DEBIAN_PACKAGE]: installs the package when the command is missing.
APT_UPDATED=""
need() {
    local cmd="$1" pkg="${2:-$1}"
    command -v "$cmd" >/dev/null 2>&1 && return 0
    log "installing $pkg (for $cmd)"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    if [ -z "$APT_UPDATED" ]; then
        $sudo apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || die "could not install $pkg"
}

# Builds the binaries under measurement (release profile). SKIP_BUILD=1 skips it.
build_release() {
    if [ "${SKIP_BUILD:-}" = 1 ]; then snapshot_binaries; return 0; fi
    log "cargo build --release -p cutover -p tasks-app (may wait on the shared cargo lock)"
    (cd "$ROOT" && cargo build --release -q -p cutover -p tasks-app)
    [ -x "$CUTOVER" ] || die "no $CUTOVER"
    [ -x "$TASKS_BIN" ] || die "no $TASKS_BIN"
    snapshot_binaries
}

# Copies the binaries under measurement aside, so that a concurrent `cargo build` in the shared
# target dir cannot swap them mid-run. The scripts remove $BIN_SNAP on exit.
snapshot_binaries() {
    BIN_SNAP="$(mktemp -d /tmp/cutover-bench-bin.XXXXXX)"
    BUILD_GIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$( [ -n "$(git -C "$ROOT" status --porcelain -uno 2>/dev/null)" ] && echo ' + uncommitted changes' || true)"
    cp "$CUTOVER" "$BIN_SNAP/cutover"
    cp "$TASKS_BIN" "$BIN_SNAP/tasks-app"
    CUTOVER="$BIN_SNAP/cutover"
    TASKS_BIN="$BIN_SNAP/tasks-app"
}

# make_lab_repo DIR LISTEN_PORT [sed expressions...]: a standalone git repo holding the course's
# tasks-app with a cutover.toml derived from examples/tasks-app/cutover.toml. The build command
# copies the tasks-app binary built above, so a build takes milliseconds and measures cutover,
# not rustc. Extra sed expressions edit the config (e.g. 's/^monitor = .*/monitor = "0s"/').
make_lab_repo() {
    local dir="$1" port="$2"
    shift 2
    rm -rf "$dir"
    mkdir -p "$dir"
    cp -r "$ROOT/examples/tasks-app/src" "$dir/"
    printf '[package]\nname="tasks-app"\nversion="0.1.0"\nedition="2021"\n[workspace]\n' >"$dir/Cargo.toml"
    printf 'target/\n' >"$dir/.gitignore"
    local exprs=(-e "s#^command = \"cargo build --release -p tasks-app\"#command = \"mkdir -p target/release \&\& cp $TASKS_BIN target/release/tasks-app\"#"
        -e "s#^listen = \"127.0.0.1:8001\"#listen = \"127.0.0.1:$port\"#"
        -e "s#^listen = \"127.0.0.1:8002\"#listen = \"127.0.0.1:$((port + 1))\"#")
    local e
    for e in "$@"; do exprs+=(-e "$e"); done
    sed "${exprs[@]}" "$ROOT/examples/tasks-app/cutover.toml" >"$dir/cutover.toml"
    grep -q "127.0.0.1:$port" "$dir/cutover.toml" || die "listen port edit failed"
    (cd "$dir" && git init -q && git add -A && git -c user.email=bench@localhost -c user.name=bench commit -qm init)
}

# The full sha of HEAD in the current directory.
head_sha() { git rev-parse HEAD; }

# median of numbers on stdin (one per line).
median() {
    python3 -c '
import sys, statistics
xs = [float(x) for x in sys.stdin.read().split()]
print(("%.6g" % statistics.median(xs)) if xs else "nan")'
}

# ms_of "1.23ms" / "850.00us" / "1.02s" -> milliseconds.
ms_of() {
    python3 -c '
import sys, re
v = sys.argv[1]
m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", v)
if not m: print("nan"); sys.exit()
x, u = float(m.group(1)), m.group(2)
print("%.4f" % (x * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[u]))' "$1"
}

# now_ms: wall clock in milliseconds (bash's $EPOCHREALTIME: no process start in the timing).
now_ms() { local t=${EPOCHREALTIME/,/.}; echo "${t%.*}${t#*.}" | sed -E 's/^([0-9]+)([0-9]{3})$/\1.\2/'; }

# rss_kb PID: VmRSS in kB.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo nan; }

# cpu_ticks PID...: utime+stime of the given processes (clock ticks, all threads).
cpu_ticks() {
    local total=0 p t
    for p in "$@"; do
        t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}

machine_summary() {
    echo "build: $("$CUTOVER" --version 2>/dev/null) (release) of git ${BUILD_GIT:-?} as the script started; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'),"\
        "$(free -h | awk '/^Mem:/ {print $2}') RAM, kernel $(uname -r), $(rustc --version 2>/dev/null || echo 'rustc ?')"
}

# cutover_binary: with CUTOVER given by the caller (PREBUILT, saved before sourcing this file)
# that binary, else a release build; either way copied aside to $BIN_SNAP (removed on exit by
# the script), so that a concurrent build cannot swap it mid-run.
cutover_binary() {
    if [ -n "${PREBUILT:-}" ]; then
        [ -x "$CUTOVER" ] || die "no $CUTOVER"
    else
        log "cargo build --release -p cutover"
        (cd "$ROOT" && cargo build --release -q -p cutover)
    fi
    BIN_SNAP="$(mktemp -d /tmp/cutover-bench-bin.XXXXXX)"
    cp "$CUTOVER" "$BIN_SNAP/cutover"
    CUTOVER="$BIN_SNAP/cutover"
}

# start_registry ADDR DIR: Debian's docker-registry listening on ADDR, its storage, config and
# log under DIR; sets REG_PID (the script kills it on exit).
start_registry() {
    local addr="$1" dir="$2"
    mkdir -p "$dir/storage"
    printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n' \
        "$dir/storage" "$addr" >"$dir/registry.yml"
    /usr/bin/docker-registry serve "$dir/registry.yml" 2>"$dir/registry.log" &
    REG_PID=$!
    for _ in $(seq 300); do curl -fs -o /dev/null "http://$addr/v2/" && break; sleep 0.05; done
    curl -fs -o /dev/null "http://$addr/v2/" || die "docker-registry did not come up: $(cat "$dir/registry.log")"
}

# static_app_repo DIR: the course's tasks-app compiled static (it runs FROM scratch) as DIR/app,
# with a Dockerfile that copies it and a .dockerignore that sends nothing else.
static_app_repo() {
    local dir="$1"
    mkdir -p "$dir"
    log "compiling the static tasks-app"
    rustc -O -C target-feature=+crt-static --target x86_64-unknown-linux-gnu --edition 2021 \
        "$ROOT/examples/tasks-app/src/main.rs" -o "$dir/app"
    printf 'FROM scratch\nCOPY app /tasks-app\nENV HOST=0.0.0.0 PORT=8000\nEXPOSE 8000\nENTRYPOINT ["/tasks-app"]\n' >"$dir/Dockerfile"
    printf '*\n!app\n' >"$dir/.dockerignore"
}

# free_local_port: a TCP port free on 127.0.0.1 now.
free_local_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The top of every bench nginx's config (foreground, as root, its pid and error log in DIR),
# with WORKERS worker processes: "$(nginx_head DIR WORKERS)".
nginx_head() {
    local dir="$1" workers="$2"
    printf '%s\n' "user root;" "worker_processes $workers;" "daemon off;" \
        "pid $dir/nginx.pid;" "error_log $dir/error.log warn;" \
        "events { worker_connections 8192; }"
}

# The http{} settings every bench nginx shares (no access log, temp paths in DIR, long
# keep-alive), for a config written with `cat <<EOF`: "$(nginx_common_http DIR)".
nginx_common_http() {
    local dir="$1"
    printf '%s\n' "    access_log off;" \
        "    client_body_temp_path $dir/body;" \
        "    proxy_temp_path $dir/proxy;" \
        "    fastcgi_temp_path $dir/fastcgi;" \
        "    uwsgi_temp_path $dir/uwsgi;" \
        "    scgi_temp_path $dir/scgi;" \
        "    keepalive_requests 1000000;"
}

# start_upstream_nginx DIR PORT: nginx (1 worker) answering `return 200 "ok\n"` on
# 127.0.0.1:PORT, the upstream the proxy benches share; appends its pid to PIDS and sets
# UP_MASTER.
start_upstream_nginx() {
    local dir="$1" port="$2"
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<NGX
$(nginx_head "$dir" 1)
http {
$(nginx_common_http "$dir")
    server {
        listen 127.0.0.1:$port reuseport backlog=4096;
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
NGX
    "${NGINX:-nginx}" -p "$dir" -c "$dir/nginx.conf" &
    UP_MASTER=$!
    PIDS+=("$UP_MASTER")
}

# wrk_one RESULTS RUN MODE TARGET URL PID...: one wrk run (THREADS, CONNS, DURATION;
# `Connection: close` for MODE close) against URL, with the CPU time PID... used; appends
# "RUN MODE TARGET rps p50ms p99ms requests sockerr non2xx cpu_s" to RESULTS.
wrk_one() {
    local results=$1 run=$2 mode=$3 target=$4 url=$5
    shift 5
    local hdr=()
    [ "$mode" = close ] && hdr=(-H 'Connection: close')
    local out
    out="$(dirname "$results")/wrk-$run-$mode-$target.txt"
    local before after stat cpu_s
    before=$(cpu_ticks "$@")
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "${hdr[@]}" "$url" >"$out" 2>&1
    after=$(cpu_ticks "$@")
    stat=$(python3 "$BENCH_DIR/wrkstat.py" "$out")
    cpu_s=$(python3 -c "print('%.2f' % (($after - $before) / $(getconf CLK_TCK)))")
    echo "$run $mode $target $stat $cpu_s" >>"$results"
    log "run $run $mode $target: rps p50ms p99ms requests sockerr non2xx proxy_cpu_s = $stat $cpu_s"
    sleep 1
}

# start_proxy_nginx DIR UP_PORT SERVER_LINES: nginx (worker_processes auto, upstream keepalive
# 64) proxying to 127.0.0.1:UP_PORT with the headers cutover's edge adds too; SERVER_LINES are
# the server's `listen` and any TLS lines. Appends its pid to PIDS and sets NGX_MASTER.
start_proxy_nginx() {
    local dir="$1" up_port="$2" server_lines="$3"
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<NGX
$(nginx_head "$dir" auto)
http {
$(nginx_common_http "$dir")
    upstream app {
        server 127.0.0.1:$up_port;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
$server_lines
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
    }
}
NGX
    "${NGINX:-nginx}" -p "$dir" -c "$dir/nginx.conf" &
    NGX_MASTER=$!
    PIDS+=("$NGX_MASTER")
}

# start_edge DIR LISTEN UP_PORT [EXTRA_JSON]: `cutover proxy` (the machine edge in DIR/edge)
# with one route on LISTEN to 127.0.0.1:UP_PORT (EXTRA_JSON: more route fields, e.g. its tls).
# Appends its pid to PIDS and sets CUT_PID.
start_edge() {
    local dir="$1" listen="$2" up_port="$3" extra="${4:-}"
    mkdir -p "$dir/edge"
    "$CUTOVER" proxy --edge-dir "$dir/edge" 2>"$dir/proxy.log" &
    CUT_PID=$!
    PIDS+=("$CUT_PID")
    local reply
    reply=$(python3 "$BENCH_DIR/proxy_admin.py" "$dir/edge" \
        "{\"op\":\"set\",\"route\":{\"owner\":\"$dir\",\"env\":\"bench\"},\"listen\":\"$listen\",\"access_log\":\"$dir/access-bench.log\",\"upstreams\":[{\"addr\":\"127.0.0.1:$up_port\",\"weight\":100}]$extra}") \
        || die "admin set failed: $reply"
    log "cutover edge admin set: $reply"
}
