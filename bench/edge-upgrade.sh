#!/usr/bin/env bash
# Failed requests while the edge is upgraded 10 times under load, side by side with nginx's
# graceful reload (`nginx -s reload`) and binary upgrade (USR2, then QUIT to the old master),
# in one run.
#
#   bench/edge-upgrade.sh     # RUNS=3 UPGRADES=10 EVERY=0.8 CONNS=32 FRESH=8 BASE_PORT=18190
#
# Needs: wrk, nginx, python3, curl (installed with apt-get when missing).
# Upstream: nginx (1 worker) answering `return 200 "ok\n"` on BASE_PORT.
# (a) the machine edge (`cutover proxy --edge-dir`, release build, a directory of its own) with
#     one route on BASE_PORT+1; an upgrade is `cutover edge upgrade` (a new process takes the
#     listening sockets over by fd passing, the old one drains and exits).
# (b) nginx (worker_processes auto, upstream keepalive 64) proxying on BASE_PORT+2; an upgrade
#     is `nginx -s reload` (new workers, old ones finish gracefully).
# (c) the same nginx, upgraded by its binary upgrade: USR2 to the master (a new master and
#     workers on the inherited sockets), then QUIT to the old master.
# Each run and target: two wrk at once for UPGRADES*EVERY+2 seconds, one on kept-alive
# connections (-cCONNS), one opening a connection per request (-cFRESH, Connection: close),
# while UPGRADES upgrades happen EVERY seconds. Failed = socket errors (connect, read, write,
# timeout) + non-2xx answers, as wrk counts them. Medians over RUNS.
source "$(dirname "$0")/lib.sh"

RUNS="${RUNS:-3}"
UPGRADES="${UPGRADES:-10}"
EVERY="${EVERY:-0.8}"
CONNS="${CONNS:-32}"
FRESH="${FRESH:-8}"
BASE_PORT="${BASE_PORT:-18190}"
UP_PORT=$BASE_PORT
CUT_PORT=$((BASE_PORT + 1))
NGX_PORT=$((BASE_PORT + 2))

need wrk
need nginx nginx
need python3
need curl
build_release
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

WORK="$(mktemp -d /tmp/cutover-bench-upgrade.XXXXXX)"
export CUTOVER_EDGE_DIR="$WORK/edge"
PIDS=()
cleanup() {
    local p
    "$CUTOVER" edge status --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' 2>/dev/null \
        | xargs -r kill 2>/dev/null || true
    for f in "$WORK"/ngx/nginx.pid "$WORK"/ngx/nginx.pid.oldbin; do
        [ -f "$f" ] && kill -QUIT "$(cat "$f")" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    [ "${KEEP:-}" = 1 ] || rm -rf "$WORK"
    rm -rf "${BIN_SNAP:-/nonexistent}"
}
trap cleanup EXIT

mkdir -p "$WORK/up" "$WORK/ngx" "$WORK/edge"
common="pid PID; error_log ERR warn; events { worker_connections 4096; }"
cat >"$WORK/up/nginx.conf" <<CONF
worker_processes 1; daemon off; ${common//PID/$WORK/up/nginx.pid}
CONF
sed -i "s#ERR#$WORK/up/error.log#" "$WORK/up/nginx.conf"
cat >>"$WORK/up/nginx.conf" <<CONF
http {
    access_log off;
    client_body_temp_path $WORK/up/body; proxy_temp_path $WORK/up/proxy;
    fastcgi_temp_path $WORK/up/fcgi; uwsgi_temp_path $WORK/up/uwsgi; scgi_temp_path $WORK/up/scgi;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$UP_PORT; location / { return 200 "ok\n"; } }
}
CONF
# The proxying nginx runs as a daemon (its binary upgrade needs a master that re-executes).
cat >"$WORK/ngx/nginx.conf" <<CONF
worker_processes auto; pid $WORK/ngx/nginx.pid; error_log $WORK/ngx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/ngx/body; proxy_temp_path $WORK/ngx/proxy;
    fastcgi_temp_path $WORK/ngx/fcgi; uwsgi_temp_path $WORK/ngx/uwsgi; scgi_temp_path $WORK/ngx/scgi;
    keepalive_requests 1000000;
    upstream app { server 127.0.0.1:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGX_PORT;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
CONF

"$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf" &
PIDS+=($!)
"$NGINX" -p "$WORK/ngx" -c "$WORK/ngx/nginx.conf"
"$CUTOVER" proxy --edge-dir "$WORK/edge" --detach >/dev/null
reply=$(python3 "$BENCH_DIR/proxy_admin.py" "$WORK/edge" \
    "{\"op\":\"set\",\"route\":{\"owner\":\"$WORK\",\"env\":\"bench\"},\"listen\":\"127.0.0.1:$CUT_PORT\",\"access_log\":\"$WORK/access-bench.log\",\"limits\":{\"drain_timeout_ms\":5000},\"upstreams\":[{\"addr\":\"127.0.0.1:$UP_PORT\",\"weight\":100}]}") \
    || die "admin set failed: $reply"
for port in $UP_PORT $CUT_PORT $NGX_PORT; do
    for _ in $(seq 50); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/")" = 200 ] && break
        sleep 0.1
    done
    [ "$(curl -s "http://127.0.0.1:$port/")" = ok ] || die "127.0.0.1:$port does not answer ok"
done

upgrade() { # target
    case "$1" in
        cutover) "$CUTOVER" edge upgrade 2>>"$WORK/upgrades.log" || echo "upgrade failed" >>"$WORK/upgrades.log" ;;
        reload) "$NGINX" -p "$WORK/ngx" -c "$WORK/ngx/nginx.conf" -s reload ;;
        usr2)
            local old
            old=$(cat "$WORK/ngx/nginx.pid")
            kill -USR2 "$old"
            for _ in $(seq 50); do [ -f "$WORK/ngx/nginx.pid.oldbin" ] && break; sleep 0.02; done
            sleep 0.2
            kill -QUIT "$old"
            for _ in $(seq 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.05; done
            ;;
    esac
}

RESULTS="$WORK/results.txt"
: >"$RESULTS"
SECONDS_LOAD=$(python3 -c "import math; print(math.ceil($UPGRADES * $EVERY) + 2)")
run_one() { # run target port
    local run=$1 target=$2 port=$3
    local ka="$WORK/wrk-$run-$target-keepalive.txt" fr="$WORK/wrk-$run-$target-fresh.txt"
    wrk -t1 -c"$CONNS" -d"${SECONDS_LOAD}s" --latency "http://127.0.0.1:$port/" >"$ka" 2>&1 &
    local w1=$!
    wrk -t1 -c"$FRESH" -d"${SECONDS_LOAD}s" --latency -H 'Connection: close' "http://127.0.0.1:$port/" >"$fr" 2>&1 &
    local w2=$!
    sleep 1
    for _ in $(seq "$UPGRADES"); do
        upgrade "$target"
        sleep "$EVERY"
    done
    wait "$w1" "$w2"
    local s1 s2
    s1=$(python3 "$BENCH_DIR/wrkstat.py" "$ka")
    s2=$(python3 "$BENCH_DIR/wrkstat.py" "$fr")
    echo "$run $target keepalive $s1" >>"$RESULTS"
    echo "$run $target fresh $s2" >>"$RESULTS"
    log "run $run $target: keepalive [rps p50 p99 requests sockerr non2xx] $s1 | fresh $s2"
    sleep 2
}

log "$(machine_summary)"
log "$UPGRADES upgrades every ${EVERY}s under wrk -c$CONNS (kept alive) + wrk -c$FRESH (Connection: close), ${SECONDS_LOAD}s each, $RUNS runs"
for run in $(seq "$RUNS"); do
    run_one "$run" cutover "$CUT_PORT"
    run_one "$run" reload "$NGX_PORT"
    run_one "$run" usr2 "$NGX_PORT"
done
grep -c "edge upgraded" "$WORK/upgrades.log" >/dev/null || die "no cutover upgrade happened: $(cat "$WORK/upgrades.log")"

echo
echo "== edge-upgrade: $(date -u +%Y-%m-%dT%H:%MZ)"
machine_summary
echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'); $UPGRADES upgrades every ${EVERY}s per run; wrk -t1 -c$CONNS kept alive + wrk -t1 -c$FRESH Connection: close, ${SECONDS_LOAD}s; median of $RUNS runs"
echo "cutover upgrades done: $(grep -c 'edge upgraded' "$WORK/upgrades.log") of $((RUNS * UPGRADES)) ($(grep -c 'failed\|error' "$WORK/upgrades.log" || true) failed)"
python3 - "$RESULTS" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
print("%-8s %-10s %10s %10s %10s %10s %10s" % ("target", "load", "requests", "failed", "sockerr", "non2xx", "req/s"))
for target, name in (("cutover", "cutover edge upgrade"), ("reload", "nginx -s reload"), ("usr2", "nginx USR2+QUIT")):
    for load in ("keepalive", "fresh"):
        rs = [r for r in rows if r[1] == target and r[2] == load]
        med = lambda i, f=float: statistics.median(f(r[i]) for r in rs)
        failed = [int(r[7]) + int(r[8]) for r in rs]
        print("%-8s %-10s %10d %10d %10d %10d %10.0f   failed per run: %s  (%s)" % (
            target, load, med(6, int), statistics.median(failed), med(7, int), med(8, int), med(3),
            failed, name))
PY
echo "raw wrk outputs: $WORK (removed unless KEEP=1)"
