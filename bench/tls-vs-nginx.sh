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

common_http='
    access_log off;
    client_body_temp_path TMP/body;
    proxy_temp_path TMP/proxy;
    fastcgi_temp_path TMP/fastcgi;
    uwsgi_temp_path TMP/uwsgi;
    scgi_temp_path TMP/scgi;
    keepalive_requests 1000000;'

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
        listen 127.0.0.1:$NGX_PORT ssl backlog=4096;
        ssl_certificate $WORK/tls/site.crt;
        ssl_certificate_key $WORK/tls/site.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # what cutover's edge adds too
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
"$CUTOVER" proxy --edge-dir "$WORK/cut/edge" 2>"$WORK/cut/proxy.log" &
CUT_PID=$!
PIDS+=($CUT_PID)

reply=$(python3 "$BENCH_DIR/proxy_admin.py" "$WORK/cut/edge" \
    "{\"op\":\"set\",\"route\":{\"owner\":\"$WORK/cut\",\"env\":\"bench\"},\"listen\":\"127.0.0.1:$CUT_PORT\",\"access_log\":\"$WORK/cut/access-bench.log\",\"upstreams\":[{\"addr\":\"127.0.0.1:$UP_PORT\",\"weight\":100}],\"tls\":{\"kind\":\"files\",\"cert\":\"$WORK/tls/site.crt\",\"key\":\"$WORK/tls/site.key\"}}") \
    || die "admin set failed: $reply"
log "cutover edge admin set: $reply"

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
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "${hdr[@]}" "https://localhost:$port/" >"$out" 2>&1
    after=$(cpu_ticks "$@")
    local stat cpu_s
    stat=$(python3 "$BENCH_DIR/wrkstat.py" "$out")
    cpu_s=$(python3 -c "print('%.2f' % (($after - $before) / $CLK_TCK))")
    echo "$run $mode $target $stat $cpu_s" >>"$RESULTS"
    log "run $run $mode $target: rps p50ms p99ms requests sockerr non2xx proxy_cpu_s = $stat $cpu_s"
    sleep 1
}

log "$(machine_summary)"
log "wrk -t$THREADS -c$CONNS -d$DURATION --latency over TLS, $RUNS runs; wrk shares the $(nproc) cores with the proxies"
for run in $(seq "$RUNS"); do
    for mode in keepalive close; do
        run_one "$run" "$mode" cutover "$CUT_PORT" "$CUT_PID"
        run_one "$run" "$mode" nginx "$NGX_PORT" "${NGX_PIDS[@]}"
    done
done
CUT_RSS=$(rss_kb "$CUT_PID")
NGX_RSS=0
for p in "${NGX_PIDS[@]}"; do NGX_RSS=$((NGX_RSS + $(rss_kb "$p"))); done

echo
echo "== tls-vs-nginx: $(date -u +%Y-%m-%dT%H:%MZ)"
machine_summary
echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') with $(openssl version | cut -d' ' -f1-2), wrk -t$THREADS -c$CONNS -d$DURATION --latency, median of $RUNS runs, ECDSA P-256"
python3 - "$RESULTS" <<'EOF'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
med = {}
for mode in ("keepalive", "close"):
    for target in ("cutover", "nginx"):
        rs = [r for r in rows if r[1] == mode and r[2] == target]
        col = lambda i, f=float: statistics.median(f(r[i]) for r in rs)
        tot = lambda i: sum(int(r[i]) for r in rs)
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
print("(close: every request is a new TLS handshake, so its req/s is handshakes/s)")
EOF
echo "RSS after the runs: cutover edge ${CUT_RSS} kB; nginx master+workers ${NGX_RSS} kB"
echo "raw wrk outputs: $WORK (removed unless KEEP=1)"
