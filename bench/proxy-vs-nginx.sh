#!/usr/bin/env bash
# cutover's edge proxy vs nginx as a reverse proxy, in front of the same upstream, in one run.
#
#   bench/proxy-vs-nginx.sh            # RUNS=3 DURATION=10s CONNS=64 THREADS=2 BASE_PORT=18180
#
# Upstream: nginx (1 worker) answering `return 200 "ok\n"` on BASE_PORT.
# (a) `cutover proxy` (release build, the machine edge in a directory of its own) with one
#     route on BASE_PORT+1, set over its admin socket.
# (b) nginx (worker_processes auto, upstream keepalive 64) on BASE_PORT+2 with proxy_pass.
# (c) the upstream directly, as the floor.
# For each run, for keep-alive and for `Connection: close`: wrk -tTHREADS -cCONNS -dDURATION
# --latency against (c), (a), (b) in turn; medians over RUNS; ratio cutover/nginx.
# Also the CPU time each proxy used (utime+stime from /proc, all its processes) per request.
source "$(dirname "$0")/lib.sh"

RUNS="${RUNS:-3}"
DURATION="${DURATION:-10s}"
CONNS="${CONNS:-64}"
THREADS="${THREADS:-2}"
BASE_PORT="${BASE_PORT:-18180}"
UP_PORT=$BASE_PORT
CUT_PORT=$((BASE_PORT + 1))
NGX_PORT=$((BASE_PORT + 2))

need wrk
need nginx nginx
need python3
build_release
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

WORK="$(mktemp -d /tmp/cutover-bench-proxy.XXXXXX)"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    [ "${KEEP:-}" = 1 ] || rm -rf "$WORK"
    rm -rf "${BIN_SNAP:-/nonexistent}"
}
trap cleanup EXIT

for p in $UP_PORT $CUT_PORT $NGX_PORT; do
    if ss -ltn "sport = :$p" | grep -q LISTEN; then die "port $p is taken; set BASE_PORT"; fi
done

common_http='
    access_log off;
    client_body_temp_path TMP/body;
    proxy_temp_path TMP/proxy;
    fastcgi_temp_path TMP/fastcgi;
    uwsgi_temp_path TMP/uwsgi;
    scgi_temp_path TMP/scgi;
    keepalive_requests 1000000;'

mkdir -p "$WORK/up" "$WORK/ngx" "$WORK/cut/state"
cat >"$WORK/up/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
pid $WORK/up/nginx.pid;
error_log $WORK/up/error.log warn;
events { worker_connections 8192; }
http {
    ${common_http//TMP/$WORK/up}
    server {
        listen 127.0.0.1:$UP_PORT reuseport backlog=4096;
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
EOF
cat >"$WORK/ngx/nginx.conf" <<EOF
user root;
worker_processes auto;
daemon off;
pid $WORK/ngx/nginx.pid;
error_log $WORK/ngx/error.log warn;
events { worker_connections 8192; }
http {
    ${common_http//TMP/$WORK/ngx}
    upstream app {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGX_PORT backlog=4096;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # what cutover's proxy adds too
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
    }
}
EOF

"$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf" &
PIDS+=($!)
"$NGINX" -p "$WORK/ngx" -c "$WORK/ngx/nginx.conf" &
NGX_MASTER=$!
PIDS+=($NGX_MASTER)
mkdir -p "$WORK/cut/edge"
"$CUTOVER" proxy --edge-dir "$WORK/cut/edge" 2>"$WORK/cut/proxy.log" &
CUT_PID=$!
PIDS+=($CUT_PID)

reply=$(python3 "$BENCH_DIR/proxy_admin.py" "$WORK/cut/edge" \
    "{\"op\":\"set\",\"route\":{\"owner\":\"$WORK/cut\",\"env\":\"bench\"},\"listen\":\"127.0.0.1:$CUT_PORT\",\"access_log\":\"$WORK/cut/access-bench.log\",\"upstreams\":[{\"addr\":\"127.0.0.1:$UP_PORT\",\"weight\":100}]}") \
    || die "admin set failed: $reply"
log "cutover proxy admin set: $reply"

# Every server answers before the clock starts (bounded: 50 x 0.1 s).
for port in $UP_PORT $CUT_PORT $NGX_PORT; do
    for _ in $(seq 50); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/")" = 200 ] && break
        sleep 0.1
    done
    body=$(curl -s "http://127.0.0.1:$port/")
    [ "$body" = ok ] || die "127.0.0.1:$port answered '$body', not ok"
done
NGX_PIDS=("$NGX_MASTER" $(pgrep -P "$NGX_MASTER"))
UP_PIDS=("${PIDS[0]}" $(pgrep -P "${PIDS[0]}"))
log "upstream :$UP_PORT, cutover proxy :$CUT_PORT (pid $CUT_PID), nginx proxy :$NGX_PORT (pids ${NGX_PIDS[*]})"

CLK_TCK=$(getconf CLK_TCK)
RESULTS="$WORK/results.txt"
: >"$RESULTS"
run_one() { # run mode target port pids...
    local run=$1 mode=$2 target=$3 port=$4
    shift 4
    local hdr=()
    [ "$mode" = close ] && hdr=(-H 'Connection: close')
    local out="$WORK/wrk-$run-$mode-$target.txt"
    local before after
    before=$(cpu_ticks "$@")
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "${hdr[@]}" "http://127.0.0.1:$port/" >"$out" 2>&1
    after=$(cpu_ticks "$@")
    local stat cpu_s
    stat=$(python3 "$BENCH_DIR/wrkstat.py" "$out")
    cpu_s=$(python3 -c "print('%.2f' % (($after - $before) / $CLK_TCK))")
    echo "$run $mode $target $stat $cpu_s" >>"$RESULTS"
    log "run $run $mode $target: rps p50ms p99ms requests sockerr non2xx proxy_cpu_s = $stat $cpu_s"
    sleep 1
}

log "$(machine_summary)"
log "wrk -t$THREADS -c$CONNS -d$DURATION --latency, $RUNS runs; wrk shares the $(nproc) cores with the proxies"
for run in $(seq "$RUNS"); do
    for mode in keepalive close; do
        run_one "$run" "$mode" direct "$UP_PORT" "${UP_PIDS[@]}"
        run_one "$run" "$mode" cutover "$CUT_PORT" "$CUT_PID"
        run_one "$run" "$mode" nginx "$NGX_PORT" "${NGX_PIDS[@]}"
    done
done
CUT_RSS=$(rss_kb "$CUT_PID")
CUT_HWM=$(awk '/^VmHWM:/ {print $2}' "/proc/$CUT_PID/status")
NGX_RSS=0
for p in "${NGX_PIDS[@]}"; do NGX_RSS=$((NGX_RSS + $(rss_kb "$p"))); done

echo
echo "== proxy-vs-nginx: $(date -u +%Y-%m-%dT%H:%MZ)"
machine_summary
echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'), wrk -t$THREADS -c$CONNS -d$DURATION --latency, median of $RUNS runs"
python3 - "$RESULTS" <<'EOF'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
med = {}
for mode in ("keepalive", "close"):
    for target in ("direct", "cutover", "nginx"):
        rs = [r for r in rows if r[1] == mode and r[2] == target]
        col = lambda i, f=float: statistics.median(f(r[i]) for r in rs)
        tot = lambda i: sum(int(r[i]) for r in rs)
        reqs = col(6)
        med[(mode, target)] = dict(rps=col(3), p50=col(4), p99=col(5), err=tot(7), non2xx=tot(8),
                                   cpu_us=statistics.median(float(r[9]) * 1e6 / max(int(r[6]), 1) for r in rs))
print("%-10s %-8s %10s %9s %9s %8s %8s %12s" % ("mode", "target", "req/s", "p50 ms", "p99 ms",
                                                "sockerr", "non2xx", "cpu us/req"))
for (mode, target), m in med.items():
    print("%-10s %-8s %10.0f %9.3f %9.3f %8d %8d %12.1f" % (mode, target, m["rps"], m["p50"], m["p99"],
                                                            m["err"], m["non2xx"], m["cpu_us"]))
print()
for mode in ("keepalive", "close"):
    c, n = med[(mode, "cutover")], med[(mode, "nginx")]
    print("%-10s cutover/nginx: req/s %.2f, p50 %.2f, p99 %.2f, proxy cpu/req %.2f" % (
        mode, c["rps"] / n["rps"], c["p50"] / n["p50"], c["p99"] / n["p99"], c["cpu_us"] / n["cpu_us"]))
print("(cpu us/req of 'direct' is the upstream nginx's own cost)")
EOF
echo "RSS after the runs: cutover proxy ${CUT_RSS} kB (peak ${CUT_HWM} kB); nginx proxy master+workers ${NGX_RSS} kB"
echo "raw wrk outputs: $WORK (removed unless KEEP=1)"
