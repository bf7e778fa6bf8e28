#!/usr/bin/env bash
# cutover's edge vs nginx terminating TLS in front of the same upstream, with the same
# certificate, in one run.
#
#   bench/tls-vs-nginx.sh            # RUNS=3 DURATION=10s CONNS=64 THREADS=2 BASE_PORT=18280
#
# Certificate: one ECDSA P-256 certificate for localhost (openssl), used by both.
# Upstream: nginx (1 worker) answering `return 200 "ok\n"` on BASE_PORT (plain HTTP).
# (a) `cutover proxy` (release build, the machine edge in a directory of its own) with one TLS
#     route (tls = { cert, key }, no hosts) on BASE_PORT+1, set over its admin socket.
# (b) nginx (worker_processes auto, upstream keepalive 64) on BASE_PORT+2: `listen … ssl`,
#     TLS 1.2 and 1.3, no session cache or tickets (the edge keeps none across connections
#     either: every `close` request is a full handshake on both).
# For each run: wrk -tTHREADS -cCONNS -dDURATION --latency https://localhost:PORT/
#   keepalive: requests per second over kept-alive TLS connections;
#   close:     `Connection: close`, so every request is a new TCP connection and a new TLS
#              handshake: requests per second = new TLS handshakes per second.
# Medians over RUNS; ratio cutover/nginx; CPU time of each proxy per request.
source "$(dirname "$0")/lib.sh"

RUNS="${RUNS:-3}"
DURATION="${DURATION:-10s}"
CONNS="${CONNS:-64}"
THREADS="${THREADS:-2}"
BASE_PORT="${BASE_PORT:-18280}"
UP_PORT=$BASE_PORT
CUT_PORT=$((BASE_PORT + 1))
NGX_PORT=$((BASE_PORT + 2))

need wrk
need nginx nginx
need openssl
need python3
build_release
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

WORK="$(mktemp -d /tmp/cutover-bench-tls.XXXXXX)"
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

mkdir -p "$WORK/up" "$WORK/ngx" "$WORK/cut/edge" "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$WORK/tls/site.key" -out "$WORK/tls/site.crt" -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost" 2>/dev/null || die "openssl could not make the certificate"

start_upstream_nginx "$WORK/up" "$UP_PORT"
start_proxy_nginx "$WORK/ngx" "$UP_PORT" "        listen 127.0.0.1:$NGX_PORT ssl backlog=4096;
        ssl_certificate $WORK/tls/site.crt;
        ssl_certificate_key $WORK/tls/site.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;"
start_edge "$WORK/cut" "127.0.0.1:$CUT_PORT" "$UP_PORT" ",\"tls\":{\"kind\":\"files\",\"cert\":\"$WORK/tls/site.crt\",\"key\":\"$WORK/tls/site.key\"}"

# Every server answers before the clock starts (bounded: 50 x 0.1 s).
for port in $CUT_PORT $NGX_PORT; do
    for _ in $(seq 50); do
        [ "$(curl -s --cacert "$WORK/tls/site.crt" -o /dev/null -w '%{http_code}' "https://localhost:$port/")" = 200 ] && break
        sleep 0.1
    done
    body=$(curl -s --cacert "$WORK/tls/site.crt" "https://localhost:$port/")
    [ "$body" = ok ] || die "https://localhost:$port answered '$body', not ok"
done
NGX_PIDS=("$NGX_MASTER" $(pgrep -P "$NGX_MASTER"))
log "upstream :$UP_PORT, cutover edge :$CUT_PORT (pid $CUT_PID), nginx :$NGX_PORT (pids ${NGX_PIDS[*]})"

RESULTS="$WORK/results.txt"
: >"$RESULTS"

log "$(machine_summary)"
log "wrk -t$THREADS -c$CONNS -d$DURATION --latency over TLS, $RUNS runs; wrk shares the $(nproc) cores with the proxies"
for run in $(seq "$RUNS"); do
    for mode in keepalive close; do
        wrk_one "$RESULTS" "$run" "$mode" cutover "https://localhost:$CUT_PORT/" "$CUT_PID"
        wrk_one "$RESULTS" "$run" "$mode" nginx "https://localhost:$NGX_PORT/" "${NGX_PIDS[@]}"
    done
done
CUT_RSS=$(rss_kb "$CUT_PID")
NGX_RSS=0
for p in "${NGX_PIDS[@]}"; do NGX_RSS=$((NGX_RSS + $(rss_kb "$p"))); done

echo
echo "== tls-vs-nginx: $(date -u +%Y-%m-%dT%H:%MZ)"
machine_summary
echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') with $(openssl version | cut -d' ' -f1-2), wrk -t$THREADS -c$CONNS -d$DURATION --latency, median of $RUNS runs, ECDSA P-256"
python3 "$BENCH_DIR/wrkmedian.py" "$RESULTS" cutover nginx
echo "(close: every request is a new TLS handshake, so its req/s is handshakes/s)"
echo "RSS after the runs: cutover edge ${CUT_RSS} kB; nginx master+workers ${NGX_RSS} kB"
echo "raw wrk outputs: $WORK (removed unless KEEP=1)"
