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

mkdir -p "$WORK/up" "$WORK/ngx" "$WORK/cut/state"
start_upstream_nginx "$WORK/up" "$UP_PORT"
start_proxy_nginx "$WORK/ngx" "$UP_PORT" "        listen 127.0.0.1:$NGX_PORT backlog=4096;"
start_edge "$WORK/cut" "127.0.0.1:$CUT_PORT" "$UP_PORT"

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
UP_PIDS=("$UP_MASTER" $(pgrep -P "$UP_MASTER"))
log "upstream :$UP_PORT, cutover proxy :$CUT_PORT (pid $CUT_PID), nginx proxy :$NGX_PORT (pids ${NGX_PIDS[*]})"

RESULTS="$WORK/results.txt"
: >"$RESULTS"

log "$(machine_summary)"
log "wrk -t$THREADS -c$CONNS -d$DURATION --latency, $RUNS runs; wrk shares the $(nproc) cores with the proxies"
for run in $(seq "$RUNS"); do
    for mode in keepalive close; do
        wrk_one "$RESULTS" "$run" "$mode" direct "http://127.0.0.1:$UP_PORT/" "${UP_PIDS[@]}"
        wrk_one "$RESULTS" "$run" "$mode" cutover "http://127.0.0.1:$CUT_PORT/" "$CUT_PID"
        wrk_one "$RESULTS" "$run" "$mode" nginx "http://127.0.0.1:$NGX_PORT/" "${NGX_PIDS[@]}"
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
python3 "$BENCH_DIR/wrkmedian.py" "$RESULTS" direct cutover nginx
echo "(cpu us/req of 'direct' is the upstream nginx's own cost)"
echo "RSS after the runs: cutover proxy ${CUT_RSS} kB (peak ${CUT_HWM} kB); nginx proxy master+workers ${NGX_RSS} kB"
echo "raw wrk outputs: $WORK (removed unless KEEP=1)"
