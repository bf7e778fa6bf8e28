#!/usr/bin/env bash
# Rollback time inside the monitor window: deploy v1, deploy v2, then `cutover rollback staging`
# while a poller hits /health through the edge proxy; time from the command's start to the first
# response from v1. Also the server-side switch from the ledger: the rollback release's
# `pending` event -> its `live` event (`cutover show ID --json`, ms timestamps).
#
#   bench/rollback-time.sh      # RUNS=10 PORT=18221
#
# Lab repo: tasks-app, monitor = "30s" (v1 stays warm while v2 is live), health interval 20ms.
# v1 and v2 are two commits (APP_VERSION = the commit sha, which /health reports).
# Goal: < 50 ms.
source "$(dirname "$0")/lib.sh"

PORT="${PORT:-18221}"
RUNS="${RUNS:-10}"

need curl
need python3
build_release

WORK="$(mktemp -d /tmp/cutover-bench-rb.XXXXXX)"
# The run's own machine edge, apart from any other edge on this machine.
export CUTOVER_EDGE_DIR="$WORK/edge"
REPO="$WORK/repo"
cleanup() {
    [ -d "$REPO" ] && (cd "$REPO" && "$CUTOVER" down >/dev/null 2>&1 || true)
    [ "${KEEP:-}" = 1 ] || rm -rf "$WORK"
    rm -rf "${BIN_SNAP:-/nonexistent}"
}
trap cleanup EXIT
ss -ltn "sport = :$PORT" | grep -q LISTEN && die "port $PORT is taken; set PORT"

make_lab_repo "$REPO" "$PORT" \
    's/^interval = "200ms"/interval = "20ms"/' \
    's/^monitor = .*/monitor = "30s"/'
cd "$REPO"
V1=$(head_sha)
echo v2 >VERSION
git add VERSION && git -c user.email=bench@localhost -c user.name=bench commit -qm v2
V2=$(head_sha)
"$CUTOVER" build "$V1" >"$WORK/build.log" 2>&1 || die "build v1: $(cat "$WORK/build.log")"
"$CUTOVER" build "$V2" >>"$WORK/build.log" 2>&1 || die "build v2: $(cat "$WORK/build.log")"
URL="http://127.0.0.1:$PORT/health"

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
for i in $(seq "$RUNS"); do
    "$CUTOVER" deploy staging --version "$V1" --env "RUN=$i" --queue >>"$WORK/deploy.log" 2>&1 || die "deploy v1 failed"
    "$CUTOVER" deploy staging --version "$V2" --env "RUN=$i" --queue >>"$WORK/deploy.log" 2>&1 || die "deploy v2 failed"
    probe=$(python3 "$BENCH_DIR/rollback_probe.py" "$URL" "$V1" "$V2" -- "$CUTOVER" rollback staging)
    id=$("$CUTOVER" history staging --json | python3 -c '
import sys, json
d = json.load(sys.stdin)
rs = d["releases"] if isinstance(d, dict) else d
print(max(r["id"] for r in rs))')
    "$CUTOVER" show "$id" --json >"$WORK/show-$id.json"
    python3 - "$WORK/show-$id.json" "$probe" >>"$RESULTS" <<'EOF'
import sys, json
from datetime import datetime
show, probe = json.load(open(sys.argv[1])), json.loads(sys.argv[2])
ts = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
ev = {}
for e in show["events"]:
    ev.setdefault(e["kind"], ts(e["at"]))
probe["release"] = show["release"]["id"]
probe["kind"] = show["release"]["kind"]
probe["server_ms"] = round((ev["live"] - ev["pending"]) * 1000, 1) if "live" in ev and "pending" in ev else None
t0 = probe["t0"]
probe["pending_after_ms"] = round((ev["pending"] - t0) * 1000, 1) if "pending" in ev else None
probe["live_after_ms"] = round((ev["live"] - t0) * 1000, 1) if "live" in ev else None
probe["warm"] = any("warm" in e["message"] for e in show["events"])
print(json.dumps(probe))
EOF
    log "run $i: $(tail -1 "$RESULTS")"
done

echo
echo "== rollback-time: $(date -u +%Y-%m-%dT%H:%MZ)"
machine_summary
python3 - "$RESULTS" <<'EOF'
import sys, json, statistics
rs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = [r for r in rs if r.get("rc") == 0 and r.get("first_old_ms") is not None]
print("%d runs, %d rolled back (exit 0) to v1 and seen by the poller; %d via warm instances" % (
    len(rs), len(ok), sum(1 for r in ok if r["warm"])))
def show(name, xs):
    xs = [x for x in xs if x is not None]
    if xs:
        print("  %-46s median %7.1f ms  min %7.1f  max %7.1f" % (name, statistics.median(xs), min(xs), max(xs)))
show("command start -> first v1 response (client)", [r["first_old_ms"] for r in ok])
show("`cutover rollback` wall time", [r["command_ms"] for r in ok])
show("ledger pending -> live (server side)", [r["server_ms"] for r in ok])
show("command start -> ledger pending (CLI + API)", [r["pending_after_ms"] for r in ok])
show("ledger live -> first v1 response", [r["first_old_ms"] - r["live_after_ms"] for r in ok if r["live_after_ms"] is not None])
print("  per run (ms): client " + " ".join("%.0f" % r["first_old_ms"] for r in ok))
print("  per run (ms): start->pending " + " ".join("%.0f" % r["pending_after_ms"] for r in ok))
print("  poller errors (non-200 or connection): %d over %d requests" % (
    sum(r["errors"] for r in rs), sum(r["requests"] for r in rs)))
m = statistics.median(r["first_old_ms"] for r in ok) if ok else float("inf")
print("goal < 50 ms: %s" % ("met" if m < 50 else "NOT met"))
EOF
echo "logs: $WORK (removed unless KEEP=1)"
