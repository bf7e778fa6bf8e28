#!/usr/bin/env bash
# Failed requests while the edge is upgraded 10 times under load, side by side with nginx's
# graceful reload (`nginx -s reload`) and binary upgrade (USR2, then QUIT to the old master),
# in one run: plain HTTP, HTTPS (HTTP/1.1 over TLS) and HTTP/2 over TLS.
#
#   bench/edge-upgrade.sh     # RUNS=3 UPGRADES=10 EVERY=0.8 CONNS=32 FRESH=8 BASE_PORT=18190
#                             # H2_CONNS=4 H2_STREAMS=16 H2_REQS=60000 PROTOS="plain https h2"
#
# Needs: wrk, nginx, h2load (nghttp2-client), openssl, python3, curl (installed with apt-get
# when missing).
# Upstream: nginx (1 worker) answering `return 200 "ok\n"` on BASE_PORT (plain HTTP).
# Certificate: one ECDSA P-256 certificate for localhost (openssl), served by both.
# (a) the machine edge (`cutover proxy --edge-dir`, release build, a directory of its own) with
#     two routes: plain HTTP on BASE_PORT+1, TLS (`tls = { cert, key }`, HTTP/2 by ALPN) on
#     BASE_PORT+3; an upgrade is `cutover edge upgrade` (a new process takes the listening
#     sockets over by fd passing, the old one drains and exits).
# (b) nginx (worker_processes auto, upstream keepalive 64) proxying on BASE_PORT+2 (plain) and
#     BASE_PORT+4 (`listen … ssl http2`, TLS 1.2 and 1.3, no session cache or tickets); an
#     upgrade is `nginx -s reload` (new workers, old ones finish gracefully).
# (c) the same nginx, upgraded by its binary upgrade: USR2 to the master (a new master and
#     workers on the inherited sockets), then QUIT to the old master.
# Each run, protocol (PROTOS) and target: two loads at once, from 1 s before the first of
# UPGRADES upgrades (each EVERY seconds after the previous one returned) to EVERY+1 s after the
# last (wrk is stopped by SIGINT and reports then; nginx's binary upgrade takes seconds each,
# as its old master must exit before the next USR2 is taken, so its 10 span longer):
#   plain: wrk -t1 -cCONNS kept alive + wrk -t1 -cFRESH `Connection: close` (http://)
#   https: the same two wrk over https:// (every fresh request is a new TLS handshake)
#   h2:    streams: h2load -cH2_CONNS -mH2_STREAMS -nH2_REQS (few connections, many streams;
#          a run lasts 2-3 s, longer than the 1 s after which the old edge sends its GOAWAY),
#          run again and again (h2load does not reconnect after a GOAWAY: one long h2load
#          would lose its connections at the first upgrade);
#          fresh: h2load -c8 -n8 run again and again (8 new TLS connections, one request each).
# Failed = wrk: socket errors (connect, read, write, timeout) + non-2xx answers, as wrk counts
# them; h2load: its `failed` (its `errored`: no answer, + answers not 2xx/3xx), summed over its
# runs. Lost = the failed requests a client sees: wrk's failed; h2load's failed less the
# requests it never sent because a GOAWAY had come or their connection had ended first (which
# a browser or curl sends on a new connection; but all of h2load fresh's failed: one request
# per connection, so a request not sent is a connection that failed); split by
# bench/h2loadstat.py from h2load's report and --log-file. Medians over RUNS.
source "$(dirname "$0")/lib.sh"

RUNS="${RUNS:-3}"
UPGRADES="${UPGRADES:-10}"
EVERY="${EVERY:-0.8}"
CONNS="${CONNS:-32}"
FRESH="${FRESH:-8}"
H2_CONNS="${H2_CONNS:-4}"
H2_STREAMS="${H2_STREAMS:-16}"
H2_REQS="${H2_REQS:-60000}"
PROTOS="${PROTOS:-plain https h2}"
BASE_PORT="${BASE_PORT:-18190}"
UP_PORT=$BASE_PORT
CUT_PORT=$((BASE_PORT + 1))
NGX_PORT=$((BASE_PORT + 2))
CUT_TLS_PORT=$((BASE_PORT + 3))
NGX_TLS_PORT=$((BASE_PORT + 4))

need wrk
need nginx nginx
need h2load nghttp2-client
need openssl
need python3
need curl
build_release
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

for p in $UP_PORT $CUT_PORT $NGX_PORT $CUT_TLS_PORT $NGX_TLS_PORT; do
    if ss -ltn "sport = :$p" | grep -q LISTEN; then die "port $p is taken; set BASE_PORT"; fi
done

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

mkdir -p "$WORK/up" "$WORK/ngx" "$WORK/edge" "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$WORK/tls/site.key" -out "$WORK/tls/site.crt" -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost" 2>/dev/null || die "openssl could not make the certificate"
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
proxy_location="location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }"
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
        $proxy_location
    }
    server {
        listen 127.0.0.1:$NGX_TLS_PORT ssl http2;
        ssl_certificate $WORK/tls/site.crt;
        ssl_certificate_key $WORK/tls/site.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        $proxy_location
    }
}
CONF

"$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf" &
PIDS+=($!)
"$NGINX" -p "$WORK/ngx" -c "$WORK/ngx/nginx.conf"
"$CUTOVER" proxy --edge-dir "$WORK/edge" --detach >/dev/null
route() { # env listen [extra json]
    echo "{\"op\":\"set\",\"route\":{\"owner\":\"$WORK\",\"env\":\"$1\"},\"listen\":\"$2\",\"access_log\":\"$WORK/access-$1.log\",\"limits\":{\"drain_timeout_ms\":5000},\"upstreams\":[{\"addr\":\"127.0.0.1:$UP_PORT\",\"weight\":100}]${3:-}}"
}
reply=$(python3 "$BENCH_DIR/proxy_admin.py" "$WORK/edge" "$(route bench "127.0.0.1:$CUT_PORT")") \
    || die "admin set failed: $reply"
reply=$(python3 "$BENCH_DIR/proxy_admin.py" "$WORK/edge" "$(route bench-tls "127.0.0.1:$CUT_TLS_PORT" \
    ",\"tls\":{\"kind\":\"files\",\"cert\":\"$WORK/tls/site.crt\",\"key\":\"$WORK/tls/site.key\"}")") \
    || die "admin set (TLS route) failed: $reply"
# Every server answers before the clock starts (bounded: 50 x 0.1 s each); the TLS ones over
# HTTP/2 (ALPN h2) and over HTTP/1.1.
CURL_TLS=(--cacert "$WORK/tls/site.crt")
for url in "http://127.0.0.1:$UP_PORT/" "http://127.0.0.1:$CUT_PORT/" "http://127.0.0.1:$NGX_PORT/" \
    "https://localhost:$CUT_TLS_PORT/" "https://localhost:$NGX_TLS_PORT/"; do
    for _ in $(seq 50); do
        [ "$(curl -s "${CURL_TLS[@]}" -o /dev/null -w '%{http_code}' "$url")" = 200 ] && break
        sleep 0.1
    done
    [ "$(curl -s "${CURL_TLS[@]}" "$url")" = ok ] || die "$url does not answer ok"
done
for port in $CUT_TLS_PORT $NGX_TLS_PORT; do
    v=$(curl -s "${CURL_TLS[@]}" --http2 -o /dev/null -w '%{http_version}' "https://localhost:$port/")
    [ "$v" = 2 ] || die "https://localhost:$port/ answered curl --http2 over HTTP/$v, not HTTP/2"
    v=$(curl -s "${CURL_TLS[@]}" --http1.1 -o /dev/null -w '%{http_version}' "https://localhost:$port/")
    [ "$v" = 1.1 ] || die "https://localhost:$port/ answered curl --http1.1 over HTTP/$v"
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

# h2load_loop OUT STOP ARGS...: h2load ARGS again and again until the file STOP exists (at most
# 10,000 runs and MAX_LOAD seconds; each run bounded by timeout 30 and h2load's -N 5s
# inactivity timeout), every report appended to OUT, the seconds it ran written to OUT.secs;
# the requests that got no answer (status -1 in h2load's --log-file: the time the request was
# sent in µs since the epoch, or 0, -1, its duration in µs) appended to OUT.noanswer.
h2load_loop() {
    local out=$1 stop=$2
    shift 2
    local start_us end_us rc
    start_us=${EPOCHREALTIME/./}
    end_us=$((start_us + MAX_LOAD * 1000000))
    : >"$out"
    : >"$out.noanswer"
    for _ in $(seq 10000); do
        [ ! -e "$stop" ] && [ "${EPOCHREALTIME/./}" -lt "$end_us" ] || break
        rc=0
        rm -f "$out.reqlog"
        timeout 30 h2load -N 5s --log-file="$out.reqlog" "$@" >>"$out" 2>&1 || rc=$?
        [ "$rc" = 0 ] || echo "h2load exited $rc" >>"$out"
        awk -F'\t' '$2 == "-1"' "$out.reqlog" >>"$out.noanswer" 2>/dev/null || true
    done
    rm -f "$out.reqlog"
    python3 -c "print('%.3f' % ((${EPOCHREALTIME/./} - $start_us) / 1e6))" >"$out.secs"
}

RESULTS="$WORK/results.txt"
: >"$RESULTS"
MAX_LOAD=300
# run_one RUN PROTO TARGET PORT: the two loads of PROTO on PORT from 1 s before the first of
# UPGRADES upgrades of TARGET (EVERY seconds apart: after each one returned) until EVERY+1 s
# after the last; one results line per load: "run proto target load requests failed sockerr
# non2xx rps lost unsent unstarted" (bench/h2loadstat.py says what the last three are for
# h2load; wrk: lost = failed).
run_one() {
    local run=$1 proto=$2 target=$3 port=$4
    local base="$WORK/$run-$proto-$target"
    local l1=keepalive l2=fresh w1 w2 url
    local stop="$base.stop"
    case "$proto" in
        plain | https)
            url="http://127.0.0.1:$port/"
            [ "$proto" = https ] && url="https://localhost:$port/"
            # wrk stops at SIGINT and reports then; -d is only a bound.
            wrk -t1 -c"$CONNS" -d"${MAX_LOAD}s" --latency "$url" >"$base-$l1.txt" 2>&1 &
            w1=$!
            wrk -t1 -c"$FRESH" -d"${MAX_LOAD}s" --latency -H 'Connection: close' "$url" >"$base-$l2.txt" 2>&1 &
            w2=$!
            ;;
        h2)
            l1=streams
            h2load_loop "$base-$l1.txt" "$stop" -c"$H2_CONNS" -m"$H2_STREAMS" -n"$H2_REQS" "https://localhost:$port/" &
            w1=$!
            h2load_loop "$base-$l2.txt" "$stop" -c8 -n8 "https://localhost:$port/" &
            w2=$!
            ;;
    esac
    sleep 1
    for _ in $(seq "$UPGRADES"); do
        echo "${EPOCHREALTIME/./}" >>"$base-upgrades.txt"
        upgrade "$target"
        sleep "$EVERY"
    done
    sleep 1
    touch "$stop"
    [ "$proto" = h2 ] || kill -INT "$w1" "$w2" 2>/dev/null || true
    wait "$w1" "$w2" || true
    local load f s secs
    for load in $l1 $l2; do
        f="$base-$load.txt"
        if [ "$proto" = h2 ]; then
            secs=$(cat "$f.secs")
            read -r rps req failed errored non2xx unanswered unsent unstarted runs broken \
                < <(python3 "$BENCH_DIR/h2loadstat.py" "$f" "$secs")
            # One request per connection (fresh): a request not sent is a connection that
            # failed, so every failure is lost; on shared connections (streams) only those sent.
            lost=$((unanswered + non2xx))
            [ "$load" = fresh ] && lost=$failed
            echo "$run $proto $target $load $req $failed $errored $non2xx $rps $lost $unsent $unstarted" >>"$RESULTS"
            [ "$broken" = 0 ] || log "run $run $proto $target $load: $broken h2load runs exited non-zero (see $f)"
            log "run $run $proto $target $load: $req answered, $failed failed ($non2xx non-2xx; $errored errored: $unanswered sent and unanswered, $unsent never sent after a GOAWAY, $unstarted never started) in $runs h2load runs, ${secs}s, $rps req/s"
        else
            # rps p50 p99 requests sockerr non2xx
            read -r rps _ _ req sockerr non2xx < <(python3 "$BENCH_DIR/wrkstat.py" "$f")
            [ "$req" -gt 0 ] || die "wrk printed no report: $(cat "$f")"
            echo "$run $proto $target $load $req $((sockerr + non2xx)) $sockerr $non2xx $rps $((sockerr + non2xx)) 0 0" >>"$RESULTS"
            s=$(python3 "$BENCH_DIR/wrkstat.py" --json "$f" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("socket_errors_detail", "no socket errors"))')
            log "run $run $proto $target $load: $req requests, $((sockerr + non2xx)) failed ($s; $non2xx non-2xx), $rps req/s"
        fi
    done
    local t
    t=$(awk 'NR == 1 {s = $1} END {printf "%.1f", ($1 - s) / 1e6}' "$base-upgrades.txt")
    echo "$run $proto $target $t" >>"$WORK/spans.txt"
    log "run $run $proto $target: the $UPGRADES upgrades began over ${t}s"
    sleep 2
}

log "$(machine_summary)"
log "$UPGRADES upgrades ${EVERY}s apart under load, $RUNS runs, protocols: $PROTOS"
T0=$SECONDS
for run in $(seq "$RUNS"); do
    for proto in $PROTOS; do
        case "$proto" in
            plain) c=$CUT_PORT n=$NGX_PORT ;;
            https | h2) c=$CUT_TLS_PORT n=$NGX_TLS_PORT ;;
            *) die "PROTOS: unknown protocol '$proto' (plain, https, h2)" ;;
        esac
        run_one "$run" "$proto" cutover "$c"
        run_one "$run" "$proto" reload "$n"
        run_one "$run" "$proto" usr2 "$n"
    done
done
CUT_WINDOWS=$((RUNS * $(wc -w <<<"$PROTOS")))
grep -c "edge upgraded" "$WORK/upgrades.log" >/dev/null || die "no cutover upgrade happened: $(cat "$WORK/upgrades.log")"
# The edges' own logs (every edge of the directory appends to it), for what went wrong.
cp "$WORK/edge"/*.log "$WORK/" 2>/dev/null || true

echo
echo "== edge-upgrade: $(date -u +%Y-%m-%dT%H:%MZ), $((SECONDS - T0)) s of runs"
machine_summary
echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') with $(openssl version | cut -d' ' -f1-2), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(h2load --version | head -1)"
echo "$UPGRADES upgrades per run and target, ${EVERY}s after the previous one returned, under load from 1s before the first to $EVERY+1s after the last; median of $RUNS runs"
python3 - "$WORK/spans.txt" <<'PY'
import sys, collections
spans = collections.defaultdict(list)
for line in open(sys.argv[1]):
    run, proto, target, t = line.split()
    spans[target].append(float(t))
print("first to last upgrade: " + "; ".join("%s %.1f-%.1fs" % (k, min(v), max(v)) for k, v in spans.items()))
PY
echo "plain, https: wrk -t1 -c$CONNS kept alive + wrk -t1 -c$FRESH Connection: close"
echo "h2: h2load -c$H2_CONNS -m$H2_STREAMS -n$H2_REQS again and again (streams) + h2load -c8 -n8 again and again (fresh)"
echo "cutover upgrades done: $(grep -c 'edge upgraded' "$WORK/upgrades.log") of $((CUT_WINDOWS * UPGRADES)) ($(grep -c 'failed\|error' "$WORK/upgrades.log" || true) failed)"
python3 - "$RESULTS" "$PROTOS" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
print("%-6s %-8s %-10s %9s %8s %8s %7s %6s %8s %9s %8s" % (
    "proto", "target", "load", "requests", "failed", "sockerr", "non2xx", "lost", "unsent",
    "unstarted", "req/s"))
names = {"cutover": "cutover edge upgrade", "reload": "nginx -s reload", "usr2": "nginx USR2+QUIT"}
for proto in sys.argv[2].split():
    for target in ("cutover", "reload", "usr2"):
        loads = []
        for r in rows:
            if r[1] == proto and r[2] == target and r[3] not in loads:
                loads.append(r[3])
        for load in loads:
            rs = [r for r in rows if r[1] == proto and r[2] == target and r[3] == load]
            med = lambda i, f=int: statistics.median(f(r[i]) for r in rs)
            print("%-6s %-8s %-10s %9d %8g %8g %7g %6g %8g %9g %8.0f   per run failed %s, lost %s  (%s)" % (
                proto, target, load, med(4), med(5), med(6), med(7), med(9), med(10), med(11),
                med(8, float), "/".join(r[5] for r in rs), "/".join(r[9] for r in rs),
                names[target]))
PY
echo "(medians; sockerr: wrk's socket errors, h2load's errored; lost: wrk's failed, h2load fresh's"
echo " failed, h2load streams' errored requests that had been sent + its non-2xx; unsent, unstarted:"
echo " requests h2load never sent once a GOAWAY had come or its connection had ended, in its failed)"
echo "raw outputs, the edge's log and upgrade times: $WORK (removed unless KEEP=1)"
