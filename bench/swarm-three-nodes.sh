#!/usr/bin/env bash
# The swarm runtime beyond one node: a Swarm of three Docker engines on this machine (one
# manager, two workers, each its own dockerd in its own network namespace: bench/swarm_nodes.sh),
# a registry on the bridge they all reach, and a cutover server whose `[docker] host` is the
# manager. Then, under steady load through the edge (bench/steady_load.py, 4 threads, a fresh
# connection per request):
#
#  1. release 1 with `instances = 3`: its replicas spread over the three nodes (status names
#     each instance's node);
#  2. release 2 with a 60 s monitor window: release 1 stays warm, 6 services on 3 nodes;
#  3. mid-window, a worker running a serving instance of release 2 dies as a machine would:
#     SIGKILL to every process of its namespace (dockerd, containerd, shims, the app) and its
#     link down;
#  4. checked: the manager marks the node down, Swarm places a new task elsewhere, cutover
#     counts it as a restart naming the lost node (in `status` and in the ledger's timeline),
#     the monitor window takes it as a crash and rolls back to release 1 (whose standby lost a
#     replica on that node too: so with fresh instances), 3 instances serve again on the nodes
#     left, and the environment kept serving throughout (failed requests counted and shown).
#
#   sudo bench/swarm-three-nodes.sh      # PORT=18341; CUTOVER=target/debug/cutover to skip the
#                                        # release build; KEEP=1 keeps the logs
#
# Exits non-zero if any check fails. Needs root, iproute2, iptables, dockerd, docker-registry.
PREBUILT="${CUTOVER:-}"
source "$(dirname "$0")/lib.sh"
source "$BENCH_DIR/swarm_nodes.sh"

PORT="${PORT:-18341}"
need curl
need python3
need ip iproute2
need iptables
[ -x /usr/bin/docker-registry ] || need docker-registry
cutover_binary

WORK="$(mktemp -d /tmp/cutover-bench-sw3.XXXXXX)"
chmod 755 "$WORK"
REPO="$WORK/repo"
REG_PID=""
LOAD_PID=""
cleanup() {
    set +e
    [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null
    [ -d "$REPO" ] && (cd "$REPO" && timeout 60 "$CUTOVER" down >/dev/null 2>&1)
    swarm_nodes_down
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
    [ "${KEEP:-}" = 1 ] || rm -rf "$WORK"
    rm -rf "$BIN_SNAP"
}
trap cleanup EXIT
ss -ltn "sport = :$PORT" | grep -q LISTEN && die "port $PORT is taken; set PORT"
FAILS=0
check() { # check DESCRIPTION COMMAND...: records a pass or a failure of the run.
    local what="$1"; shift
    if "$@"; then echo "  ok    $what"; else echo "  FAIL  $what"; FAILS=$((FAILS + 1)); fi
}
T_START=$(now_ms)

# ---- the Swarm and the registry on its bridge
REGISTRY="$SW_GW:5$(printf '%03d' $((SW_ID % 1000)))"
log "three engines in network namespaces $SW_PREFIX-n1..n3, registry $REGISTRY"
mkdir -p "$WORK/nodes"
swarm_nodes_up "$WORK/nodes" "$REGISTRY"
start_registry "$REGISTRY" "$WORK/registry"
sw_docker n1 node ls

# ---- the lab repo: static tasks-app, Dockerfile FROM scratch, runtime = "swarm" on the manager
APP="bench-sw3-$$"
static_app_repo "$REPO"
write_config() { # write_config MONITOR
    cat >"$REPO/cutover.toml" <<TOML
[app]
name = "$APP"

[build]
dockerfile = "Dockerfile"

[docker]
host = "unix://$WORK/nodes/n1/docker.sock"

[registry]
url = "$REGISTRY"
repository = "$APP"
insecure = true

[run]
port = 8000
stop_timeout = "2s"

[health]
path = "/health"
body_contains = "ok"
interval = "50ms"
timeout = "2s"
healthy_threshold = 2
unhealthy_threshold = 3
deadline = "60s"
monitor = "$1"

[environments.staging]
runtime = "swarm"
instances = 3
listen = "127.0.0.1:$PORT"
TOML
}
git_commit() { git -c user.email=bench@localhost -c user.name=bench commit -qam "$1"; }
cd "$REPO"
write_config 1s
git init -q && git add -A && git_commit v1
V1=$(head_sha)
URL="http://127.0.0.1:$PORT/health"

# status_json: `cutover status --json`'s staging environment.
status_json() { "$CUTOVER" status --json 2>/dev/null | python3 -c '
import json, sys
for e in json.load(sys.stdin)["environments"]:
    if e["name"] == "staging": print(json.dumps(e))'; }

# ---- 1. release 1, three replicas over three nodes
log "1. deploy release 1 ($V1), instances = 3"
t0=$(now_ms)
"$CUTOVER" deploy staging >"$WORK/deploy-1.log" 2>&1 || die "deploy v1 failed: $(tail -20 "$WORK/deploy-1.log")"
DEPLOY1_MS=$(python3 -c "print('%.0f' % ($(now_ms) - $t0))")
status_json >"$WORK/status-1.json"
echo "release 1 (build, publish to $REGISTRY, 3 services, health checks, cut-over): ${DEPLOY1_MS} ms"
python3 - "$WORK/status-1.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
for i in e["instances"]:
    print("  instance %-28s %-22s node %-9s %s %s" % (i["id"], i["address"], i.get("node"), i["state"], i["role"]))
PY
nodes_of() { python3 -c '
import json, sys
e = json.load(open(sys.argv[1]))
print(len({i.get("node") for i in e["instances"] if i["role"] == "serving" and i["state"] == "running"}))' "$1"; }
check "release 1's 3 replicas run on 3 different nodes (status --json node)" test "$(nodes_of "$WORK/status-1.json")" = 3

# ---- steady load through the edge from here on
python3 "$BENCH_DIR/steady_load.py" "$URL" "$WORK/load.json" --threads 4 --max-seconds 240 &
LOAD_PID=$!
sleep 2

# ---- 2. release 2 with a 60 s monitor window: release 1 stays warm
write_config 60s
echo v2 >VERSION && git add VERSION && git_commit v2
V2=$(head_sha)
log "2. deploy release 2 ($V2), monitor window 60s"
"$CUTOVER" deploy staging >"$WORK/deploy-2.log" 2>&1 || die "deploy v2 failed: $(tail -20 "$WORK/deploy-2.log")"
status_json >"$WORK/status-2.json"
check "release 2's 3 replicas run on 3 different nodes" test "$(nodes_of "$WORK/status-2.json")" = 3
check "release 1 kept warm: 6 services on the manager" test "$(sw_docker n1 service ls -q --filter "label=cutover.app=$APP" | wc -l)" = 6
# The worker to lose: the one running a serving instance of release 2 on n3 (else n2).
read -r VICTIM_NODE VICTIM_ID < <(python3 - "$WORK/status-2.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
serving = {i.get("node"): i["id"] for i in e["instances"] if i["role"] == "serving"}
for n in ("swarm-n3", "swarm-n2"):
    if n in serving:
        print(n, serving[n]); break
PY
)
[ -n "${VICTIM_ID:-}" ] || die "no serving instance on a worker: $(cat "$WORK/status-2.json")"
VICTIM=${VICTIM_NODE#swarm-}
sleep 3

# ---- 3. the worker dies mid-window
log "3. $VICTIM_NODE dies (every process of its namespace killed, link down); it ran $VICTIM_ID"
T_KILL=$(now_ms)
swarm_node_kill "$VICTIM"

# ---- 4. what the manager, cutover and the load see: done when 3 instances serve, all running,
# none on the lost node (release 2's, or release 1's after an automatic rollback).
T_DOWN=""; T_MOVED=""; T_HEALED=""
for _ in $(seq 600); do
    now=$(now_ms)
    if [ -z "$T_DOWN" ] && sw_docker n1 node ls --format '{{.Hostname}} {{.Status}}' | grep -q "^$VICTIM_NODE Down"; then T_DOWN=$now; fi
    st=$(status_json)
    verdict=$(echo "$st" | python3 -c '
import json, sys
e = json.loads(sys.stdin.read() or "{}")
inst = e.get("instances", [])
moved = any(i["id"] == sys.argv[1] and i["state"] == "running" and i.get("node") not in (None, sys.argv[2]) for i in inst)
serving = [i for i in inst if i["role"] == "serving"]
healed = len(serving) == 3 and all(i["state"] == "running" and i.get("node") != sys.argv[2] for i in serving)
print(("moved " if moved else "") + ("healed" if healed else ""))' "$VICTIM_ID" "$VICTIM_NODE")
    if [ -z "$T_MOVED" ] && [[ "$verdict" == moved* ]]; then
        T_MOVED=$now
        "$CUTOVER" status >"$WORK/status-moved.txt" 2>&1 || true
    fi
    if [[ "$verdict" == *healed ]]; then T_HEALED=$now; echo "$st" >"$WORK/status-3.json"; break; fi
    sleep 0.2
done
sleep 2
kill -INT "$LOAD_PID"; wait "$LOAD_PID" || true; LOAD_PID=""
status_json >"$WORK/status-4.json"
"$CUTOVER" status >"$WORK/status-4.txt" 2>&1 || true
"$CUTOVER" history staging --json >"$WORK/history.json" 2>/dev/null || true
R2=$(python3 -c 'import json,sys; h=json.load(open(sys.argv[1])); h=h["releases"] if isinstance(h,dict) else h; print(h[0]["id"])' "$WORK/history.json")
"$CUTOVER" show "$R2" --json >"$WORK/show-2.json" 2>&1 || true

ms() { [ -n "$1" ] && python3 -c "print('%.0f ms' % ($1 - $T_KILL))" || echo "never (in 120 s)"; }
echo
echo "== swarm-three-nodes: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "build: $("$CUTOVER" --version) ($( [ -n "$PREBUILT" ] && echo "$PREBUILT" || echo release)) of git $(git -C "$ROOT" rev-parse --short HEAD)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "engines: 3 x dockerd $(sw_docker n1 version --format '{{.Server.Version}}') in network namespaces (vfs), Swarm dispatcher heartbeat 1s; registry docker-registry on $REGISTRY"
echo "after $VICTIM_NODE died (it ran $VICTIM_ID of release $R2, serving):"
echo "  the manager marked it Down:                          $(ms "$T_DOWN")"
echo "  cutover saw $VICTIM_ID running on another node:  $(ms "$T_MOVED")"
echo "  3 instances serve again, none on the lost node:      $(ms "$T_HEALED")"
python3 - "$WORK/history.json" <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))
h = h["releases"] if isinstance(h, dict) else h
for r in h[:2]:
    print("  release %s: %s%s" % (r["id"], r["state"], (" (" + r["reason"] + ")") if r.get("reason") else ""))
PY
echo "status when cutover saw the instance moved:"
grep -E "instance|live|restart" "$WORK/status-moved.txt" 2>/dev/null | sed 's/^/  /'
echo "status afterwards:"
grep -E "instance|live|restart" "$WORK/status-4.txt" | sed 's/^/  /'
python3 - "$WORK/load.json" "$T_KILL" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); kill = float(sys.argv[2]) / 1000
print("steady load (4 threads, fresh connection each): %d requests in %.0f s, %d failed, slowest %.0f ms; versions %s"
      % (s["requests"], s["seconds"], s["failed"], s["slowest_ms"], s["versions"]))
for f in s["failures"][:10]:
    print("  failure %+.1f s after the loss: %s" % (f["at"] - kill, f["what"]))
PY
# (No event is a failed check below, not the end of the script.)
LOST_EVENT=$(grep -o "lost with its node $VICTIM_NODE[^\"]*" "$WORK/show-2.json" | head -1 || true)
echo "ledger (cutover show $R2): ${LOST_EVENT:-no event naming $VICTIM_NODE}"
check "the manager marked $VICTIM_NODE down" test -n "$T_DOWN"
check "3 instances serve again, none on the lost node" test -n "$T_HEALED"
# Requests already sent to the lost node when it went (on the edge's pooled connections) get no
# answer; the check is that failures stay below 1% and stop within 15 s of the loss.
check "the environment kept serving (under 1% failed, none later than 15 s after the loss)" python3 -c '
import json, sys
s = json.load(open(sys.argv[1])); kill = float(sys.argv[2]) / 1000
sys.exit(not (s["failed"] < 0.01 * s["requests"] and all(f["at"] - kill < 15 for f in s["failures"])))' "$WORK/load.json" "$T_KILL"
check "the ledger records the node loss" test -n "$LOST_EVENT"
check "status showed the node loss" grep -q "lost with its node $VICTIM_NODE" "$WORK/status-moved.txt"
check "staging still serves" test "$(curl -s -o /dev/null -w '%{http_code}' "$URL")" = 200
echo "whole run: $(python3 -c "print('%.0f s' % (($(now_ms) - $T_START) / 1000))"); logs: $WORK (removed unless KEEP=1)"
[ "$FAILS" = 0 ] || die "$FAILS check(s) failed"
