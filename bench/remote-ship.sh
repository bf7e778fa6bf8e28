#!/usr/bin/env bash
# Shipping an already-built 50 MB bundle to a remote cutover server, side by side with rsync of
# the same tree over the same link.
#
#   bench/remote-ship.sh                 # RUNS=3, the link as fast as veth goes
#   RATE=100mbit bench/remote-ship.sh    # the link shaped with tc (tbf) on the way out
#
# The "other machine" is a network namespace with a veth pair (10.77.0.1 here, 10.77.0.2
# there), made and removed by this script (needs root and `ip netns`). There, a
# `cutover server --listen 10.77.0.2:19871` on a fresh state dir per run, and an rsync daemon.
# Here, a repository whose bundle is the tasks-app (4.5 MB) and data/ (48 files of 1 MiB of
# random bytes): 52.5 MB in 49 blobs, built once (`cutover build`) before anything is timed.
#
# Per run: (1) `cutover deploy production --version V1` to the fresh server: every blob
# travels; (2) `cutover deploy production --version V2`, where V2 changed one 1 MiB file: one
# blob travels; (3) `rsync -a` of V1's tree into an empty module; (4) `rsync -a` of V2's tree
# over it. For cutover, "ship" is the time the CLI reports for the upload
# (`shipped … in X s`: which blobs are missing, the uploads, each verified on arrival, and the
# manifest), "deploy" the whole command (ship + start + health check + cut-over), wall clock.
# rsync's is its wall clock. Medians of RUNS.
source "$(dirname "$0")/lib.sh"

RUNS="${RUNS:-3}"
RATE="${RATE:-}"
NS=cutover-bench-ship
HOST_IF=cbship0
PEER_IF=cbship1
HERE=10.77.0.1
THERE=10.77.0.2
API_PORT=19871
EDGE_PORT=18301
RSYNC_PORT=18730

[ "$(id -u)" = 0 ] || die "needs root (ip netns)"
need rsync
need ip iproute2
need python3
build_release

WORK="$(mktemp -d /tmp/cutover-bench-ship.XXXXXX)"
SERVER_PID=""
RSYNC_PID=""
stop_server() {
    if [ -n "$SERVER_PID" ]; then
        "$CUTOVER" --state-dir "$WORK/server" down >/dev/null 2>&1 || true
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
cleanup() {
    stop_server
    if [ -n "$RSYNC_PID" ]; then
        kill "$RSYNC_PID" 2>/dev/null || true
        wait "$RSYNC_PID" 2>/dev/null || true
    fi
    [ -d "$WORK/repo" ] && (cd "$WORK/repo" && "$CUTOVER" down >/dev/null 2>&1 || true)
    ip netns del "$NS" 2>/dev/null || true
    ip link del "$HOST_IF" 2>/dev/null || true
    [ "${KEEP:-}" = 1 ] || rm -rf "$WORK" 2>/dev/null || true
    rm -rf "${BIN_SNAP:-/nonexistent}"
}
trap cleanup EXIT

log "a machine: namespace $NS at $THERE${RATE:+, the link shaped to $RATE}"
ip netns del "$NS" 2>/dev/null || true
ip link del "$HOST_IF" 2>/dev/null || true
ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name "$PEER_IF"
ip link set "$PEER_IF" netns "$NS"
ip addr add "$HERE/30" dev "$HOST_IF"
ip link set "$HOST_IF" up
ip netns exec "$NS" ip addr add "$THERE/30" dev "$PEER_IF"
ip netns exec "$NS" ip link set "$PEER_IF" up
ip netns exec "$NS" ip link set lo up
if [ -n "$RATE" ]; then
    tc qdisc add dev "$HOST_IF" root tbf rate "$RATE" burst 256kb latency 200ms
    ip netns exec "$NS" tc qdisc add dev "$PEER_IF" root tbf rate "$RATE" burst 256kb latency 200ms
fi

# rsync's side: a writable module.
mkdir -p "$WORK/rsync-target"
cat >"$WORK/rsyncd.conf" <<EOF
use chroot = no
[bundle]
path = $WORK/rsync-target
read only = no
uid = root
gid = root
EOF
ip netns exec "$NS" rsync --daemon --no-detach --config="$WORK/rsyncd.conf" --address="$THERE" \
    --port="$RSYNC_PORT" --log-file="$WORK/rsyncd.log" &
RSYNC_PID=$!

# The repository, V1 and V2, built here once.
REPO="$WORK/repo"
mkdir -p "$REPO/data"
cp "$TASKS_BIN" "$REPO/tasks-app"
python3 - "$REPO/data" <<'EOF'
import os, sys
for i in range(48):
    with open(os.path.join(sys.argv[1], f"{i:02}.bin"), "wb") as f:
        f.write(os.urandom(1 << 20))
EOF
cat >"$REPO/cutover.toml" <<EOF
[app]
name = "ship"

[build]
files = ["tasks-app", "data"]

[run]
command = ["./tasks-app"]

[health]
path = "/health"
interval = "100ms"

[environments.production]
server = "https://$THERE:$API_PORT"
listen = "$THERE:$EDGE_PORT"
EOF
export XDG_CONFIG_HOME="$WORK/config" NO_COLOR=1 CUTOVER_EDGE_DIR="$WORK/edge-here"
cd "$REPO"
git init -q -b main
git add -A
git -c user.name=bench -c user.email=bench@example.com commit -q -m v1
V1=$(git rev-parse HEAD)
python3 -c "import os; open('data/07.bin','wb').write(os.urandom(1<<20))"
git -c user.name=bench -c user.email=bench@example.com commit -qam "v2: one file changed"
V2=$(git rev-parse HEAD)
log "building $V1 and $V2 here (not timed)"
"$CUTOVER" build "$V1" >/dev/null 2>&1 || die "cutover build $V1 failed"
"$CUTOVER" build "$V2" >/dev/null 2>&1 || die "cutover build $V2 failed"
mkdir -p "$WORK/tree1" "$WORK/tree2"
git archive "$V1" tasks-app data | tar -x -C "$WORK/tree1"
git archive "$V2" tasks-app data | tar -x -C "$WORK/tree2"
BYTES=$(du -sb "$WORK/tree1" | cut -f1)
log "bundle: $BYTES bytes in $(find "$WORK/tree1" -type f | wc -l) files"

now() { python3 -c 'import time; print(time.monotonic())'; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }

start_server() {
    rm -rf "$WORK/server" "$WORK/edge-there"
    CUTOVER_EDGE_DIR="$WORK/edge-there" ip netns exec "$NS" "$CUTOVER" --state-dir "$WORK/server" \
        server --listen "$THERE:$API_PORT" >"$WORK/server.out" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        grep -q "HTTPS API on" "$WORK/server.out" 2>/dev/null && break
        sleep 0.1
    done
    grep -q "HTTPS API on" "$WORK/server.out" || die "the server did not start: $(cat "$WORK/server.out")"
    CUTOVER_SERVER_FINGERPRINT=$("$CUTOVER" --state-dir "$WORK/server" server info --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["fingerprint"])')
    CUTOVER_TOKEN=$("$CUTOVER" --state-dir "$WORK/server" token create bench --role deploy)
    export CUTOVER_SERVER_FINGERPRINT CUTOVER_TOKEN
}

# deploy VERSION LABEL: prints "<ship seconds> <deploy seconds> <blobs sent>"
deploy() {
    local t0 t1 out
    t0=$(now)
    out=$("$CUTOVER" deploy production --version "$1" 2>&1) || die "deploy $2 failed: $out"
    t1=$(now)
    local ship sent
    ship=$(sed -n 's/.*shipped .* in \([0-9.]*\) s$/\1/p' <<<"$out")
    sent=$(sed -n 's/.*: \([0-9]* of [0-9]*\) blobs.*/\1/p' <<<"$out" | tr ' ' '_')
    echo "$ship $(elapsed "$t0" "$t1") $sent"
}

sync_tree() {
    local t0 t1
    t0=$(now)
    rsync -a --delete "$1/" "rsync://$THERE:$RSYNC_PORT/bundle/" || die "rsync failed"
    t1=$(now)
    elapsed "$t0" "$t1"
}

RESULTS="$WORK/results"
: >"$RESULTS"
for run in $(seq "$RUNS"); do
    start_server
    read -r ship1 dep1 sent1 < <(deploy "$V1" first)
    read -r ship2 dep2 sent2 < <(deploy "$V2" "one file changed")
    stop_server
    rm -rf "$WORK/rsync-target"/* "$WORK/rsync-target"/.[!.]* 2>/dev/null || true
    rs1=$(sync_tree "$WORK/tree1")
    rs2=$(sync_tree "$WORK/tree2")
    log "run $run: cutover ship $ship1 s ($sent1 blobs), deploy $dep1 s; one file: ship $ship2 s ($sent2), deploy $dep2 s; rsync $rs1 s, one file $rs2 s"
    echo "$ship1 $dep1 $ship2 $dep2 $rs1 $rs2" >>"$RESULTS"
done

python3 - "$RESULTS" "$BYTES" "${RATE:-unshaped veth}" <<'EOF'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
cols = list(zip(*rows))
med = [statistics.median(c) for c in cols]
mb = int(sys.argv[2]) / 1e6
print(f"\nremote ship of a {mb:.1f} MB bundle, link: {sys.argv[3]}, median of {len(rows)} runs")
print(f"{'':34} {'cutover ship':>13} {'cutover deploy':>15} {'rsync':>8} {'ship/rsync':>11}")
print(f"{'first time (everything travels)':34} {med[0]:>12.3f}s {med[1]:>14.3f}s {med[4]:>7.3f}s {med[0]/med[4]:>10.2f}x")
print(f"{'one 1 MiB file changed':34} {med[2]:>12.3f}s {med[3]:>14.3f}s {med[5]:>7.3f}s {med[2]/med[5]:>10.2f}x")
EOF
