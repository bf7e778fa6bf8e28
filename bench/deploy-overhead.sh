#!/usr/bin/env bash
# Deploy overhead: wall time of `cutover deploy staging --version <built sha>` for an app that
# is ready at once, side by side with the course's deploy.sh approach (start the binary with
# PORT=... in the background, poll /health with curl every 1 s) on the same app and machine.
#
#   bench/deploy-overhead.sh     # RUNS=10 PORT=18241 (course app on PORT+10)
#
# Lab repo: tasks-app; [health] interval = "20ms", healthy_threshold = 1; monitor stays "10s"
# (it does not hold the CLI: `deploy` returns when the release is live). The artifact is built
# and the server and edge proxy are up before the clock starts (hyperfine --warmup 1).
# Goal: < 0.5 s.
source "$(dirname "$0")/lib.sh"

PORT="${PORT:-18241}"
COURSE_PORT=$((PORT + 10))
RUNS="${RUNS:-10}"

need hyperfine
need curl
need python3
build_release

WORK="$(mktemp -d /tmp/cutover-bench-do.XXXXXX)"
# The run's own machine edge, apart from any other edge on this machine.
export CUTOVER_EDGE_DIR="$WORK/edge"
REPO="$WORK/repo"
cleanup() {
    [ -f "$WORK/course.pid" ] && kill "$(cat "$WORK/course.pid")" 2>/dev/null || true
    [ -d "$REPO" ] && (cd "$REPO" && "$CUTOVER" down >/dev/null 2>&1 || true)
    [ "${KEEP:-}" = 1 ] || rm -rf "$WORK"
    rm -rf "${BIN_SNAP:-/nonexistent}"
}
trap cleanup EXIT
for p in $PORT $COURSE_PORT; do
    ss -ltn "sport = :$p" | grep -q LISTEN && die "port $p is taken; set PORT"
done

make_lab_repo "$REPO" "$PORT" \
    's/^interval = "200ms"/interval = "20ms"/' \
    's/^healthy_threshold = 2/healthy_threshold = 1/'
cd "$REPO"
SHA=$(head_sha)
"$CUTOVER" build >"$WORK/build.log" 2>&1 || die "build failed: $(cat "$WORK/build.log")"

log "hyperfine: cutover deploy staging --version $SHA ($RUNS runs, 1 warm-up) vs course_deploy.sh"
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$WORK/hyperfine.json" \
    -n cutover "$CUTOVER deploy staging --version $SHA" \
    -n course-deploy.sh "$BENCH_DIR/course_deploy.sh $TASKS_BIN $COURSE_PORT $WORK/course.pid poll-first" \
    -n course-sleep-first "$BENCH_DIR/course_deploy.sh $TASKS_BIN $COURSE_PORT $WORK/course.pid sleep-first" \
    >"$WORK/hyperfine.txt" 2>&1 || { cat "$WORK/hyperfine.txt"; die "hyperfine failed"; }
# One more cutover deploy, to read where its time goes from the ledger.
"$CUTOVER" deploy staging --version "$SHA" >/dev/null 2>&1
id=$("$CUTOVER" history staging --json | python3 -c '
import sys, json
d = json.load(sys.stdin)
rs = d["releases"] if isinstance(d, dict) else d
print(max(r["id"] for r in rs))')
"$CUTOVER" show "$id" --json >"$WORK/show.json"

echo
echo "== deploy-overhead: $(date -u +%Y-%m-%dT%H:%MZ)"
machine_summary
echo "hyperfine $(hyperfine --version | cut -d' ' -f2), $RUNS runs each after 1 warm-up"
python3 - "$WORK/hyperfine.json" "$WORK/show.json" <<'EOF'
import sys, json, statistics
from datetime import datetime
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
for name, r in res.items():
    print("  %-18s median %7.1f ms  mean %7.1f  min %7.1f  max %7.1f  (exit codes %s)" % (
        name, r["median"] * 1000, r["mean"] * 1000, r["min"] * 1000, r["max"] * 1000,
        sorted(set(r.get("exit_codes", [0])))))
c = res["cutover"]["median"]
for name in ("course-deploy.sh", "course-sleep-first"):
    k = res[name]["median"]
    print("  ratio %s / cutover: %.2fx" % (name, k / c))
print("  goal < 500 ms: %s" % ("met" if c < 0.5 else "NOT met"))
show = json.load(open(sys.argv[2]))
ts = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
evs = show["events"]
t0 = ts(evs[0]["at"])
print("  where one cutover deploy's time goes (ledger events, ms after 'pending'):")
for e in evs:
    print("    %7.1f  %-10s %s" % ((ts(e["at"]) - t0) * 1000, e["kind"], e["message"][:70]))
EOF
echo "logs: $WORK (removed unless KEEP=1)"
