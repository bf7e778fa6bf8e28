#!/usr/bin/env bash
# The swarm runtime under steady load, side by side with Swarm's own updates, in one run on the
# machine's one-node Swarm and one image (the static tasks-app FROM scratch, one digest; the
# version a replica reports is its APP_VERSION):
#
#  A. cutover, `runtime = "swarm"`, with instances = 1 and with instances = 3: 10 deploys, 5
#     failing deploys (the app exits at start: HOST=256.0.0.1) and 5 rollbacks (each after a
#     deploy), failed requests counted by bench/steady_load.py (4 threads, a fresh connection
#     per request) through cutover's edge, exit codes kept; then RUNS rollbacks inside the
#     monitor window timed by bench/rollback_probe.py (command start -> first old response);
#  B. `docker service update --update-order start-first`, one replica: the same 10 + 5 + 5
#     (rollbacks with `docker service rollback`), `--update-failure-action rollback`;
#  C. `docker stack deploy --detach=false` of a compose file with the same service: the same
#     10 + 5 + 5 (a rollback is a deploy of the previous file: a stack has no rollback).
#
# Swarm's routing mesh needs IPVS; where the kernel has none (`Could not get ipvs family
# information` in the engine's log) B and C publish the port in host mode, which allows one
# task per node on a port: then start-first cannot place the new task beside the old one
# (`no suitable node (host-mode port already in use on 1 node)`), and B and C are run with
# stop-first too, and with one replica only. The script says which it ran.
#
#   bench/swarm-updates.sh     # PORT=18361 (edge one), PORT+1 (edge three), PORT+10 (B),
#                              # PORT+11 (C); RUNS=5 DEPLOYS=10 FAILS=5 ROLLBACKS=5;
#                              # CUTOVER=… skips the release build
PREBUILT="${CUTOVER:-}"
source "$(dirname "$0")/lib.sh"

PORT="${PORT:-18361}"
RUNS="${RUNS:-5}"
DEPLOYS="${DEPLOYS:-10}"
FAILS="${FAILS:-5}"
ROLLBACKS="${ROLLBACKS:-5}"
UPD_TIMEOUT="${UPD_TIMEOUT:-60}" # a Swarm update that has not converged by then is stuck
UPD_PORT=$((PORT + 10))
STACK_PORT=$((PORT + 11))
need curl
need python3
[ -x /usr/bin/docker-registry ] || need docker-registry
[ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] || die "the engine is no Swarm manager: docker swarm init --advertise-addr 127.0.0.1"
cutover_binary

WORK="$(mktemp -d /tmp/cutover-bench-swu.XXXXXX)"
REPO="$WORK/repo"
APP="bench-swu-$$"
SVC="$APP-upd"
STACK="$APP-stack"
REG_PID=""
LOAD_PID=""
cleanup() {
    set +e
    [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null
    [ -d "$REPO" ] && (cd "$REPO" && timeout 60 "$CUTOVER" down >/dev/null 2>&1)
    docker service rm "$SVC" >/dev/null 2>&1
    docker stack rm "$STACK" >/dev/null 2>&1
    for s in $(docker service ls -q --filter "label=cutover.app=$APP"); do docker service rm "$s" >/dev/null 2>&1; done
    sleep 3
    for id in $(docker secret ls -q --filter "label=cutover.app=$APP"); do docker secret rm "$id" >/dev/null 2>&1; done
    docker images --digests --format '{{.Repository}} {{.Tag}} {{.Digest}}' | while read -r repo tag digest; do
        case "$repo" in */"$APP") ;; *) continue ;; esac
        [ "$tag" != "<none>" ] && docker rmi "$repo:$tag" >/dev/null 2>&1
        [ "$digest" != "<none>" ] && docker rmi "$repo@$digest" >/dev/null 2>&1
    done
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
    [ "${KEEP:-}" = 1 ] || rm -rf "$WORK"
    rm -rf "$BIN_SNAP"
}
trap cleanup EXIT
for p in $PORT $((PORT + 1)) $UPD_PORT $STACK_PORT; do
    ss -ltn "sport = :$p" | grep -q LISTEN && die "port $p is taken; set PORT"
done

# ---- the registry
REGISTRY="127.0.0.1:$(free_local_port)"
start_registry "$REGISTRY" "$WORK/registry"

# ---- the lab repo: static tasks-app + Dockerfile FROM scratch, two environments on swarm
static_app_repo "$REPO"
cat >"$REPO/cutover.toml" <<TOML
[app]
name = "$APP"

[build]
dockerfile = "Dockerfile"

[registry]
url = "$REGISTRY"
repository = "$APP"

[run]
port = 8000
stop_timeout = "10s"

[health]
path = "/health"
body_contains = "ok"
interval = "20ms"
timeout = "2s"
healthy_threshold = 1
unhealthy_threshold = 3
deadline = "20s"
monitor = "30s"

[environments.one]
runtime = "swarm"
instances = 1
listen = "127.0.0.1:$PORT"

[environments.three]
runtime = "swarm"
instances = 3
listen = "127.0.0.1:$((PORT + 1))"
TOML
cd "$REPO"
git_commit() { git -c user.email=bench@localhost -c user.name=bench commit -qm "$1"; }
git init -q && git add -A && git_commit v1
V1=$(head_sha)
echo v2 >VERSION && git add VERSION && git_commit v2
V2=$(head_sha)
"$CUTOVER" publish "$V1" >"$WORK/publish.log" 2>&1 || die "publish v1: $(cat "$WORK/publish.log")"
"$CUTOVER" publish "$V2" >>"$WORK/publish.log" 2>&1 || die "publish v2: $(cat "$WORK/publish.log")"
DIGEST=$(grep "^$REGISTRY/$APP:$V1 " "$WORK/publish.log" | awk '{print $2}')
[ -n "$DIGEST" ] || die "no digest for v1 in $(cat "$WORK/publish.log")"
IMAGE="$REGISTRY/$APP@$DIGEST"

load_start() { # load_start URL NAME
    python3 "$BENCH_DIR/steady_load.py" "$1" "$WORK/load-$2.json" --threads 4 --max-seconds 900 &
    LOAD_PID=$!
    sleep 1
}
load_stop() { sleep 1; kill -INT "$LOAD_PID"; wait "$LOAD_PID" || true; LOAD_PID=""; }
ms_since() { python3 -c "import sys; print('%.1f' % ($(now_ms) - float(sys.argv[1])))" "$1"; }

# ---- A. cutover, instances 1 and 3
for env in one three; do
    [ "$env" = one ] && url="http://127.0.0.1:$PORT/health" || url="http://127.0.0.1:$((PORT + 1))/health"
    log "A. cutover, environment $env: warm-up deploy"
    "$CUTOVER" deploy "$env" --version "$V1" --env RUN=warmup >"$WORK/cutover-$env.log" 2>&1 || die "warm-up deploy of $env: $(tail "$WORK/cutover-$env.log")"
    load_start "$url" "cutover-$env"
    codes=""
    log "A. cutover $env: 10 deploys, 5 failing deploys, 5 rollbacks under load"
    for i in $(seq "$DEPLOYS"); do
        v=$V2; [ $((i % 2)) = 0 ] && v=$V1
        rc=0; "$CUTOVER" deploy "$env" --version "$v" --env "LOAD=$i" --queue >>"$WORK/cutover-$env.log" 2>&1 || rc=$?; codes="$codes d$i=$rc"
    done
    for i in $(seq "$FAILS"); do
        rc=0; "$CUTOVER" deploy "$env" --version "$V2" --env HOST=256.0.0.1 --env "LOADB=$i" --queue >>"$WORK/cutover-$env.log" 2>&1 || rc=$?; codes="$codes b$i=$rc"
    done
    for i in $(seq "$ROLLBACKS"); do
        "$CUTOVER" deploy "$env" --version "$V2" --env "LOADR=$i" --queue >>"$WORK/cutover-$env.log" 2>&1 || true
        rc=0; "$CUTOVER" rollback "$env" --queue >>"$WORK/cutover-$env.log" 2>&1 || rc=$?; codes="$codes r$i=$rc"
    done
    load_stop
    echo "$codes" >"$WORK/codes-cutover-$env"
    log "A. cutover $env: $RUNS rollbacks inside the monitor window, timed"
    : >"$WORK/rollback-cutover-$env.jsonl"
    for i in $(seq "$RUNS"); do
        "$CUTOVER" deploy "$env" --version "$V1" --env "RB=$i" --queue >>"$WORK/cutover-$env.log" 2>&1 || die "deploy v1 failed"
        "$CUTOVER" deploy "$env" --version "$V2" --env "RB=$i" --queue >>"$WORK/cutover-$env.log" 2>&1 || die "deploy v2 failed"
        python3 "$BENCH_DIR/rollback_probe.py" "$url" "$V1" "$V2" -- "$CUTOVER" rollback "$env" >>"$WORK/rollback-cutover-$env.jsonl"
    done
    "$CUTOVER" down >/dev/null 2>&1 || true
    "$CUTOVER" status >/dev/null 2>&1 || true
done
(cd "$REPO" && "$CUTOVER" down >/dev/null 2>&1) || true

# ---- the anchors' publishing: the routing mesh if the kernel has IPVS, else host mode
if [ -e /proc/net/ip_vs ]; then
    MESH=1; PUBLISH_MODE=ingress
else
    MESH=0; PUBLISH_MODE=host
fi
url_upd="http://127.0.0.1:$UPD_PORT/health"
url_stack="http://127.0.0.1:$STACK_PORT/health"
wait_serving() { # wait_serving URL VERSION
    for _ in $(seq 300); do curl -fs "$1" 2>/dev/null | grep -q "\"$2\"" && return 0; sleep 0.1; done
    die "$1 never served $2"
}

# ---- B. docker service update
anchor_update() { # anchor_update ORDER: one run of B; codes in codes-upd-ORDER
    local order="$1" i rc codes="" t
    docker service rm "$SVC" >/dev/null 2>&1 && sleep 3
    docker service create -d --name "$SVC" --replicas 1 --label "cutover.app=$APP" \
        --publish "mode=$PUBLISH_MODE,published=$UPD_PORT,target=8000" \
        --init --stop-grace-period 10s \
        --update-order "$order" --update-failure-action rollback --update-monitor 2s \
        --rollback-order "$order" --restart-condition on-failure --restart-delay 500ms \
        --env APP_VERSION=v1 "$IMAGE" >/dev/null
    wait_serving "$url_upd" v1
    load_start "$url_upd" "upd-$order"
    for i in $(seq "$DEPLOYS"); do
        v=v2; [ $((i % 2)) = 0 ] && v=v1
        rc=0; timeout "$UPD_TIMEOUT" docker service update -q --env-add "APP_VERSION=$v" --env-add "LOAD=$i" "$SVC" >>"$WORK/upd-$order.log" 2>&1 || rc=$?; codes="$codes d$i=$rc"
        [ "$rc" = 124 ] && break
    done
    if [ "$rc" != 124 ]; then
        for i in $(seq "$FAILS"); do
            rc=0; timeout "$UPD_TIMEOUT" docker service update -q --env-add HOST=256.0.0.1 --env-add "LOADB=$i" "$SVC" >>"$WORK/upd-$order.log" 2>&1 || rc=$?; codes="$codes b$i=$rc"
        done
        for i in $(seq "$ROLLBACKS"); do
            timeout "$UPD_TIMEOUT" docker service update -q --env-add APP_VERSION=v2 --env-add "LOADR=$i" "$SVC" >>"$WORK/upd-$order.log" 2>&1 || true
            rc=0; timeout "$UPD_TIMEOUT" docker service rollback -q "$SVC" >>"$WORK/upd-$order.log" 2>&1 || rc=$?; codes="$codes r$i=$rc"
        done
    fi
    load_stop
    echo "$codes" >"$WORK/codes-upd-$order"
    if [ "$rc" != 124 ]; then
        : >"$WORK/rollback-upd-$order.jsonl"
        for i in $(seq "$RUNS"); do
            timeout "$UPD_TIMEOUT" docker service update -q --env-add APP_VERSION=v1 --env-add "RB=$i" "$SVC" >>"$WORK/upd-$order.log" 2>&1
            timeout "$UPD_TIMEOUT" docker service update -q --env-add APP_VERSION=v2 --env-add "RB=$i" "$SVC" >>"$WORK/upd-$order.log" 2>&1
            wait_serving "$url_upd" v2
            python3 "$BENCH_DIR/rollback_probe.py" "$url_upd" '"v1"' '"v2"' -- timeout 60 docker service rollback -q "$SVC" >>"$WORK/rollback-upd-$order.jsonl"
        done
    fi
    docker service rm "$SVC" >/dev/null 2>&1
}

# ---- C. docker stack deploy
stack_file() { # stack_file ORDER VERSION EXTRA_ENV_LINE
    cat <<YML
version: "3.8"
services:
  web:
    image: $IMAGE
    init: true
    stop_grace_period: 10s
    environment:
      APP_VERSION: "$2"
$3
    ports:
      - target: 8000
        published: $STACK_PORT
        mode: $PUBLISH_MODE
    labels:
      cutover.app: "$APP"
    deploy:
      replicas: 1
      labels:
        cutover.app: "$APP"
      restart_policy:
        condition: on-failure
        delay: 500ms
      update_config:
        order: $1
        failure_action: rollback
        monitor: 2s
      rollback_config:
        order: $1
YML
}
anchor_stack() { # anchor_stack ORDER
    local order="$1" i rc codes="" v
    docker stack rm "$STACK" >/dev/null 2>&1 && sleep 5
    stack_file "$order" v1 "      RUN: \"0\"" >"$WORK/stack.yml"
    timeout "$UPD_TIMEOUT" docker stack deploy --detach=false -q -c "$WORK/stack.yml" "$STACK" >>"$WORK/stack-$order.log" 2>&1 || true
    wait_serving "$url_stack" v1
    load_start "$url_stack" "stack-$order"
    for i in $(seq "$DEPLOYS"); do
        v=v2; [ $((i % 2)) = 0 ] && v=v1
        stack_file "$order" "$v" "      LOAD: \"$i\"" >"$WORK/stack.yml"
        rc=0; timeout "$UPD_TIMEOUT" docker stack deploy --detach=false -q -c "$WORK/stack.yml" "$STACK" >>"$WORK/stack-$order.log" 2>&1 || rc=$?; codes="$codes d$i=$rc"
        [ "$rc" = 124 ] && break
    done
    if [ "$rc" != 124 ]; then
        for i in $(seq "$FAILS"); do
            stack_file "$order" v1 "      LOADB: \"$i\"
      HOST: 256.0.0.1" >"$WORK/stack.yml"
            rc=0; timeout "$UPD_TIMEOUT" docker stack deploy --detach=false -q -c "$WORK/stack.yml" "$STACK" >>"$WORK/stack-$order.log" 2>&1 || rc=$?; codes="$codes b$i=$rc"
        done
        for i in $(seq "$ROLLBACKS"); do
            stack_file "$order" v2 "      LOADR: \"$i\"" >"$WORK/stack.yml"
            timeout "$UPD_TIMEOUT" docker stack deploy --detach=false -q -c "$WORK/stack.yml" "$STACK" >>"$WORK/stack-$order.log" 2>&1 || true
            stack_file "$order" v1 "      LOADR: \"$i\"" >"$WORK/stack.yml"
            rc=0; timeout "$UPD_TIMEOUT" docker stack deploy --detach=false -q -c "$WORK/stack.yml" "$STACK" >>"$WORK/stack-$order.log" 2>&1 || rc=$?; codes="$codes r$i=$rc"
        done
    fi
    load_stop
    echo "$codes" >"$WORK/codes-stack-$order"
    if [ "$rc" != 124 ]; then
        : >"$WORK/rollback-stack-$order.jsonl"
        for i in $(seq "$RUNS"); do
            stack_file "$order" v2 "      RB: \"$i\"" >"$WORK/stack.yml"
            timeout "$UPD_TIMEOUT" docker stack deploy --detach=false -q -c "$WORK/stack.yml" "$STACK" >>"$WORK/stack-$order.log" 2>&1
            wait_serving "$url_stack" v2
            stack_file "$order" v1 "      RB: \"$i\"" >"$WORK/stack-old.yml"
            python3 "$BENCH_DIR/rollback_probe.py" "$url_stack" '"v1"' '"v2"' -- timeout 60 docker stack deploy --detach=false -q -c "$WORK/stack-old.yml" "$STACK" >>"$WORK/rollback-stack-$order.jsonl"
        done
    fi
    docker stack rm "$STACK" >/dev/null 2>&1
    sleep 5
}

ORDERS="start-first"
[ "$MESH" = 0 ] && ORDERS="start-first stop-first"
for order in $ORDERS; do
    log "B. docker service update --update-order $order (publish mode $PUBLISH_MODE)"
    anchor_update "$order"
    log "C. docker stack deploy --detach=false, update order $order"
    anchor_stack "$order"
done

echo
echo "== swarm-updates: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "build: $("$CUTOVER" --version) ($( [ -n "$PREBUILT" ] && echo "$PREBUILT" || echo "release build") of git $(git -C "$ROOT" rev-parse --short HEAD)); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -h | awk '/^Mem:/ {print $2}') RAM, kernel $(uname -r)"
echo "engine: Docker $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})'), a Swarm of one node; image FROM scratch $IMAGE"
[ "$MESH" = 0 ] && echo "routing mesh: unavailable (no IPVS in this kernel: /proc/net/ip_vs absent); Swarm's own updates publish in host mode, one replica"
python3 - "$WORK" "$ORDERS" <<'PY'
import sys, json, os, statistics
w, orders = sys.argv[1], sys.argv[2].split()
def load(name):
    p = os.path.join(w, "load-%s.json" % name)
    return json.load(open(p)) if os.path.exists(p) else None
def rollbacks(name):
    p = os.path.join(w, "rollback-%s.jsonl" % name)
    if not os.path.exists(p): return None
    rs = [json.loads(l) for l in open(p) if l.strip()]
    ok = [r["first_old_ms"] for r in rs if r.get("rc") == 0 and r.get("first_old_ms") is not None]
    late = [r for r in rs if r.get("first_old_ms") is None]
    txt = "median %.0f ms (min %.0f, max %.0f) of %d runs" % (statistics.median(ok), min(ok), max(ok), len(ok)) if ok else ""
    if late:
        txt += ("; " if txt else "") + "%d run(s) saw no old response within the probe's 10 s (the command took %s ms)" % (
            len(late), ", ".join("%.0f" % r["command_ms"] for r in late))
    return txt + "; exit codes %s" % [r.get("rc") for r in rs]
rows = [("cutover, instances = 1", "cutover-one"), ("cutover, instances = 3", "cutover-three")]
for o in orders:
    rows += [("docker service update --update-order %s, 1 replica" % o, "upd-" + o),
             ("docker stack deploy --detach=false, order %s, 1 replica" % o, "stack-" + o)]
for title, name in rows:
    s = load(name)
    codes = open(os.path.join(w, "codes-" + name)).read().strip() if os.path.exists(os.path.join(w, "codes-" + name)) else "?"
    print("%s:" % title)
    if s:
        print("  load: %d requests in %.0f s, %d failed (%.2f%%), slowest %.0f ms; first failures: %s" % (
            s["requests"], s["seconds"], s["failed"], 100.0 * s["failed"] / max(1, s["requests"]), s["slowest_ms"],
            sorted({f["what"] for f in s["failures"]})[:3]))
    print("  exit codes: %s" % codes)
    r = rollbacks(name)
    if r: print("  rollback, command start -> first old response: %s" % r)
PY
echo "logs: $WORK (removed unless KEEP=1)"
