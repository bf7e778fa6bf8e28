#!/usr/bin/env bash
# Idle memory: after a deploy has settled, VmRSS (from /proc/PID/status) of the `cutover server`
# (pid in .cutover/server.pid), the machine edge (edge.pid in $CUTOVER_EDGE_DIR), one instance
# supervisor and the app itself. Also after 10 more deploys and 3 s of proxied load (wrk -t1 -c8), to see
# whether anything grows.
#
#   bench/idle-rss.sh     # PORT=18261 SETTLE=3 (seconds idle before reading)
# Goal: server < 30 MB.
source "$(dirname "$0")/lib.sh"

PORT="${PORT:-18261}"
SETTLE="${SETTLE:-3}"

need curl
need python3
need wrk
build_release

WORK="$(mktemp -d /tmp/cutover-bench-rss.XXXXXX)"
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

# monitor "1s": the window has closed (and the old instance is gone) when we read.
make_lab_repo "$REPO" "$PORT" 's/^monitor = .*/monitor = "1s"/'
cd "$REPO"
SHA=$(head_sha)

measure() { # label
    local server proxy sup app
    server=$(cat .cutover/server.pid)
    proxy=$(cat "$CUTOVER_EDGE_DIR/edge.pid")
    sup=$(pgrep -f "^$CUTOVER supervise --state-dir $REPO/.cutover" | head -1 || true)
    app=$( [ -n "$sup" ] && pgrep -P "$sup" | head -1 || true)
    printf '%-28s server %6s kB | proxy %6s kB | supervisor %6s kB (%d running) | app %6s kB\n' "$1" \
        "$(rss_kb "$server")" "$(rss_kb "$proxy")" "$( [ -n "$sup" ] && rss_kb "$sup" || echo -)" \
        "$(pgrep -fc "^$CUTOVER supervise --state-dir $REPO/.cutover" || true)" "$( [ -n "$app" ] && rss_kb "$app" || echo -)"
    echo "$(rss_kb "$server")" >"$WORK/server-kb-$2"
}

"$CUTOVER" deploy staging >"$WORK/deploy.log" 2>&1 || die "deploy failed: $(cat "$WORK/deploy.log")"
sleep "$SETTLE"
OUT="$WORK/out.txt"
measure "after 1 deploy, idle ${SETTLE}s:" 1 | tee "$OUT"
for i in $(seq 10); do
    "$CUTOVER" deploy staging --version "$SHA" --env "N=$i" --queue >>"$WORK/deploy.log" 2>&1 || die "deploy $i failed"
done
wrk -t1 -c8 -d3s "http://127.0.0.1:$PORT/health" >"$WORK/wrk.txt" 2>&1
REQS=$(python3 "$BENCH_DIR/wrkstat.py" "$WORK/wrk.txt" | cut -d' ' -f4)
sleep "$SETTLE"
measure "after 11 deploys + ${REQS} reqs:" 2 | tee -a "$OUT"

echo
echo "== idle-rss: $(date -u +%Y-%m-%dT%H:%MZ)"
machine_summary
cat "$OUT"
kb=$(cat "$WORK/server-kb-1")
echo "goal server < 30 MB (30720 kB): $( [ "$kb" -lt 30720 ] && echo met || echo 'NOT met') ($kb kB)"
