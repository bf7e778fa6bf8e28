#!/usr/bin/env bash
# Zero downtime under load: 10 deploys, 5 failing deploys and 5 rollbacks in a row while two
# wrk clients hit the edge proxy: one keep-alive, one with `Connection: close` (a fresh TCP
# connection per request). Every request must get a 2xx; no socket errors.
#
#   bench/zero-downtime.sh     # PORT=18201 DEPLOYS=10 FAILS=5 ROLLBACKS=5
#
# Lab repo: the course's tasks-app (examples/tasks-app) with its cutover.toml, edited:
# listen 127.0.0.1:$PORT, health interval 50ms, monitor "1s" (so a new deploy does not
# wait on a monitor window), build = copy of the already built tasks-app binary.
source "$(dirname "$0")/lib.sh"

PORT="${PORT:-18201}"
DEPLOYS="${DEPLOYS:-10}"
FAILS="${FAILS:-5}"
ROLLBACKS="${ROLLBACKS:-5}"
MAX_SECONDS="${MAX_SECONDS:-300}" # hard bound for the load generators

need wrk
need curl
need python3
build_release

WORK="$(mktemp -d /tmp/cutover-bench-zd.XXXXXX)"
# The run's own machine edge, apart from any other edge on this machine.
export CUTOVER_EDGE_DIR="$WORK/edge"
REPO="$WORK/repo"
WRK_PIDS=()
cleanup() {
    local p
    for p in "${WRK_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    [ -d "$REPO" ] && (cd "$REPO" && "$CUTOVER" down >/dev/null 2>&1 || true)
    [ "${KEEP:-}" = 1 ] || rm -rf "$WORK"
    rm -rf "${BIN_SNAP:-/nonexistent}"
}
trap cleanup EXIT
ss -ltn "sport = :$PORT" | grep -q LISTEN && die "port $PORT is taken; set PORT"

make_lab_repo "$REPO" "$PORT" \
    's/^interval = "200ms"/interval = "50ms"/' \
    's/^monitor = .*/monitor = "1s"/'
cd "$REPO"
SHA=$(head_sha)
log "first deploy (builds $SHA, starts the server and the edge proxy)"
"$CUTOVER" deploy staging >"$WORK/deploy-0.log" 2>&1 || die "first deploy failed: $(cat "$WORK/deploy-0.log")"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] || die "not serving"

URL="http://127.0.0.1:$PORT/health"
wrk -t1 -c16 -d"${MAX_SECONDS}s" --latency "$URL" >"$WORK/wrk-keepalive.txt" 2>&1 &
WRK_PIDS+=($!)
wrk -t1 -c8 -d"${MAX_SECONDS}s" --latency -H 'Connection: close' "$URL" >"$WORK/wrk-close.txt" 2>&1 &
WRK_PIDS+=($!)
sleep 2 # steady load before the first step

STEPS="$WORK/steps.txt"
: >"$STEPS"
step() { # step KIND EXPECTED_RC cmd...
    local kind=$1 expected=$2
    shift 2
    local t0 t1 rc=0
    t0=$(now_ms)
    "$@" >>"$WORK/steps.log" 2>&1 || rc=$?
    t1=$(now_ms)
    local live
    live=$(curl -s "$URL" | python3 -c 'import sys,json; print(json.load(sys.stdin).get("version","?")[:12])' 2>/dev/null || echo '?')
    local ms
    ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }')
    echo "$kind $expected $rc $ms" >>"$STEPS"
    log "$kind: exit $rc (expected $expected) in ${ms} ms; /health now reports $live"
}

T_START=$(now_ms)
for i in $(seq "$DEPLOYS"); do
    step deploy 0 "$CUTOVER" deploy staging --version "$SHA" --env "N=$i" --queue
done
for i in $(seq "$FAILS"); do
    step failing-deploy 3 "$CUTOVER" deploy staging --version "$SHA" --env BREAK=1 --env "F=$i" --queue
done
for i in $(seq "$ROLLBACKS"); do
    step rollback 0 "$CUTOVER" rollback staging --queue
done
T_END=$(now_ms)
sleep 2 # steady load after the last step
for p in "${WRK_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
for p in "${WRK_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
WRK_PIDS=()
"$CUTOVER" history staging >"$WORK/history.txt" 2>&1 || true

echo
echo "== zero-downtime: $(date -u +%Y-%m-%dT%H:%MZ)"
machine_summary
python3 - "$STEPS" "$WORK/wrk-keepalive.txt" "$WORK/wrk-close.txt" "$T_START" "$T_END" <<EOF
import sys, statistics
sys.path.insert(0, "$BENCH_DIR")
from wrkstat import parse
steps = [l.split() for l in open(sys.argv[1]) if l.strip()]
print("steps: %.1f s for %d steps" % ((float(sys.argv[5]) - float(sys.argv[4])) / 1000, len(steps)))
ok = True
for kind in ("deploy", "failing-deploy", "rollback"):
    ss = [s for s in steps if s[0] == kind]
    if not ss: continue
    good = sum(1 for s in ss if s[1] == s[2])
    ok &= good == len(ss)
    print("  %-15s %2d runs, %2d with the expected exit code (%s), median %s ms, max %s ms" % (
        kind, len(ss), good, ss[0][1], statistics.median(int(s[3]) for s in ss), max(int(s[3]) for s in ss)))
total = bad = 0
for name, path in (("keep-alive (wrk -t1 -c16)", sys.argv[2]), ("Connection: close (wrk -t1 -c8)", sys.argv[3])):
    r = parse(open(path).read())
    total += r["requests"]; bad += r["non2xx"] + r["socket_errors"]
    print("  %-32s %8d requests, %.0f req/s, p50 %.2f ms, p99 %.2f ms, non-2xx %d, socket errors %d%s" % (
        name, r["requests"], r["rps"], r["p50_ms"], r["p99_ms"], r["non2xx"], r["socket_errors"],
        (" (" + r["socket_errors_detail"] + ")") if r["socket_errors"] else ""))
print("total: %d requests, %d failed (non-2xx + socket errors)" % (total, bad))
print("RESULT: %s" % ("PASS" if ok and bad == 0 and total > 0 else "FAIL"))
EOF
echo "logs: $WORK (removed unless KEEP=1)"
