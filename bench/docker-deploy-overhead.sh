#!/usr/bin/env bash
# The Docker runtime, measured on the machine's engine with a real registry (Debian's
# docker-registry on a free 127.0.0.1 port) and the course's tasks-app image FROM scratch:
#
#  1. deploy overhead: wall time of `cutover deploy staging --version <published sha>` minus the
#     container's own start-to-healthy time (`docker run -d --init -p 127.0.0.1:P:8000 <image>`
#     then curl /health every 10 ms until 200), medians of RUNS;
#  2. side by side, the course's approach: a shell script that stops the old container, does
#     `docker run -d` and polls /health with curl every 1 s (as deploy.sh does), median of RUNS;
#  3. rollback time inside the monitor window on Docker: from the `cutover rollback` command's
#     start to the first response from the old version (bench/rollback_probe.py), median of RUNS;
#  4. failed requests under wrk load across 10 deploys + 5 failing deploys (BREAK=1) + 5
#     rollbacks on Docker.
#
#   bench/docker-deploy-overhead.sh      # RUNS=10 PORT=18281 (course container on PORT+10,
#                                        # container-alone runs on PORT+11)
#
# Lab repo: the static tasks-app (rustc -C target-feature=+crt-static) committed as a file and a
# Dockerfile that COPYs it; [health] interval 20ms, healthy_threshold 1; monitor 30s (it does not
# hold the CLI). The image is built and published, the server and the edge proxy are up and one
# warm-up deploy is done before the clock starts. Every container and image it creates carries
# the lab's unique app name and is removed on exit.
source "$(dirname "$0")/lib.sh"

PORT="${PORT:-18281}"
COURSE_PORT=$((PORT + 10))
ALONE_PORT=$((PORT + 11))
RUNS="${RUNS:-10}"

need curl
need python3
need wrk
need docker docker.io
[ -x /usr/bin/docker-registry ] || need docker-registry
docker version >/dev/null 2>&1 || die "no Docker engine answers (docker version failed)"
build_release

WORK="$(mktemp -d /tmp/cutover-bench-dock.XXXXXX)"
# The run's own machine edge, apart from any other edge on this machine.
export CUTOVER_EDGE_DIR="$WORK/edge"
REPO="$WORK/repo"
APP="bench-docker-$$"
REG_PID=""
WRK_PID=""
cleanup() {
    set +e
    [ -n "$WRK_PID" ] && kill "$WRK_PID" 2>/dev/null
    [ -d "$REPO" ] && (cd "$REPO" && "$CUTOVER" down >/dev/null 2>&1)
    docker rm -f "$APP-course" "$APP-alone" >/dev/null 2>&1
    for id in $(docker ps -aq --filter "label=cutover.app=$APP"); do docker rm -f -v "$id" >/dev/null 2>&1; done
    docker images --digests --format '{{.Repository}} {{.Tag}} {{.Digest}}' | while read -r repo tag digest; do
        case "$repo" in */"$APP") ;; *) continue ;; esac
        [ "$tag" != "<none>" ] && docker rmi "$repo:$tag" >/dev/null 2>&1
        [ "$digest" != "<none>" ] && docker rmi "$repo@$digest" >/dev/null 2>&1
    done
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
    [ "${KEEP:-}" = 1 ] || rm -rf "$WORK"
    rm -rf "${BIN_SNAP:-/nonexistent}"
}
trap cleanup EXIT
for p in $PORT $COURSE_PORT $ALONE_PORT; do
    ss -ltn "sport = :$p" | grep -q LISTEN && die "port $p is taken; set PORT"
done

# ---- the registry
REGISTRY="127.0.0.1:$(free_local_port)"
start_registry "$REGISTRY" "$WORK/registry"

# ---- the lab repo: static tasks-app + Dockerfile FROM scratch
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
deadline = "30s"
monitor = "30s"

[environments.staging]
runtime = "docker"
listen = "127.0.0.1:$PORT"
TOML
cd "$REPO"
git init -q && git add -A && git -c user.email=bench@localhost -c user.name=bench commit -qm v1
V1=$(head_sha)
echo v2 >VERSION && git add VERSION && git -c user.email=bench@localhost -c user.name=bench commit -qm v2
V2=$(head_sha)
"$CUTOVER" publish "$V1" >"$WORK/publish.log" 2>&1 || die "publish v1: $(cat "$WORK/publish.log")"
"$CUTOVER" publish "$V2" >>"$WORK/publish.log" 2>&1 || die "publish v2: $(cat "$WORK/publish.log")"
DIGEST=$(grep "^$REGISTRY/$APP:$V1 " "$WORK/publish.log" | awk '{print $2}')
[ -n "$DIGEST" ] || die "no digest for v1 in $(cat "$WORK/publish.log")"
IMAGE="$REGISTRY/$APP@$DIGEST"
URL="http://127.0.0.1:$PORT/health"
"$CUTOVER" deploy staging --version "$V1" --env RUN=warmup >"$WORK/deploy.log" 2>&1 || die "warm-up deploy: $(cat "$WORK/deploy.log")"

ms_since() { python3 -c "import sys; print('%.1f' % ($(now_ms) - float(sys.argv[1])))" "$1"; }

# ---- 1. cutover deploy wall time
log "1. cutover deploy staging --version <sha> x $RUNS"
: >"$WORK/deploy.ms"
for i in $(seq "$RUNS"); do
    v=$V2; [ $((i % 2)) = 0 ] && v=$V1
    t0=$(now_ms)
    "$CUTOVER" deploy staging --version "$v" --env "RUN=$i" >>"$WORK/deploy.log" 2>&1 || die "deploy $i failed: $(tail "$WORK/deploy.log")"
    ms_since "$t0" >>"$WORK/deploy.ms"
done

# ---- the container alone: docker run -d, then curl /health every 10 ms
log "   the container alone: docker run + /health every 10 ms x $RUNS"
: >"$WORK/alone.ms"
for i in $(seq "$RUNS"); do
    docker rm -f "$APP-alone" >/dev/null 2>&1 || true
    t0=$(now_ms)
    docker run -d --init --name "$APP-alone" --label "cutover.app=$APP" -p "127.0.0.1:$ALONE_PORT:8000" "$IMAGE" >/dev/null
    ok=""
    for _ in $(seq 3000); do
        if curl -fs -o /dev/null "http://127.0.0.1:$ALONE_PORT/health"; then ok=1; break; fi
        sleep 0.01
    done
    [ -n "$ok" ] || die "the container alone never became healthy"
    ms_since "$t0" >>"$WORK/alone.ms"
done
docker rm -f "$APP-alone" >/dev/null 2>&1 || true

# ---- 2. the course's approach: stop old, docker run -d, curl /health every 1 s
log "2. course approach (docker run, curl every 1 s) x $RUNS"
cat >"$WORK/course_docker_deploy.sh" <<'SH'
#!/usr/bin/env bash
# deploy.sh, the course's way: replace the container, poll /health every second, 30 tries.
name="$1" port="$2" image="$3"
docker rm -f "$name" >/dev/null 2>&1 || true
docker run -d --name "$name" --label "cutover.app=$4" -p "127.0.0.1:$port:8000" "$image" >/dev/null || exit 1
for _ in $(seq 30); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/health" && exit 0
    sleep 1
done
echo "deploy failed" >&2; exit 1
SH
chmod +x "$WORK/course_docker_deploy.sh"
: >"$WORK/course.ms"
for i in $(seq "$RUNS"); do
    t0=$(now_ms)
    "$WORK/course_docker_deploy.sh" "$APP-course" "$COURSE_PORT" "$IMAGE" "$APP" 2>/dev/null || die "course deploy $i failed"
    ms_since "$t0" >>"$WORK/course.ms"
done
docker rm -f "$APP-course" >/dev/null 2>&1 || true

# ---- 3. rollback time inside the monitor window
log "3. rollback inside the monitor window x $RUNS"
: >"$WORK/rollback.jsonl"
for i in $(seq "$RUNS"); do
    "$CUTOVER" deploy staging --version "$V1" --env "RB=$i" --queue >>"$WORK/deploy.log" 2>&1 || die "deploy v1 failed"
    "$CUTOVER" deploy staging --version "$V2" --env "RB=$i" --queue >>"$WORK/deploy.log" 2>&1 || die "deploy v2 failed"
    python3 "$BENCH_DIR/rollback_probe.py" "$URL" "$V1" "$V2" -- "$CUTOVER" rollback staging >>"$WORK/rollback.jsonl"
done

# ---- 4. wrk load across 10 deploys + 5 failing deploys + 5 rollbacks
log "4. wrk under 10 deploys + 5 failing deploys + 5 rollbacks"
wrk -t2 -c16 -d600s --latency "$URL" >"$WORK/wrk.txt" 2>&1 &
WRK=$!
WRK_PID=$WRK
sleep 1
codes=""
for i in $(seq 10); do
    v=$V2; [ $((i % 2)) = 0 ] && v=$V1
    rc=0; "$CUTOVER" deploy staging --version "$v" --env "LOAD=$i" --queue >>"$WORK/load.log" 2>&1 || rc=$?; codes="$codes d$i=$rc"
done
for i in $(seq 5); do
    rc=0; "$CUTOVER" deploy staging --version "$V2" --env BREAK=1 --env "LOADB=$i" --queue >>"$WORK/load.log" 2>&1 || rc=$?; codes="$codes b$i=$rc"
done
for i in $(seq 5); do
    "$CUTOVER" deploy staging --version "$V2" --env "LOADR=$i" --queue >>"$WORK/load.log" 2>&1 || true
    rc=0; "$CUTOVER" rollback staging --queue >>"$WORK/load.log" 2>&1 || rc=$?; codes="$codes r$i=$rc"
done
sleep 1
kill -INT "$WRK"; wait "$WRK" || true; WRK_PID=""

echo
echo "== docker-deploy-overhead: $(date -u +%Y-%m-%dT%H:%MZ)"
machine_summary
echo "engine: Docker $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})'), registry docker-registry on $REGISTRY, image FROM scratch $(docker image inspect -f '{{.Size}}' "$IMAGE") bytes"
python3 - "$WORK" <<'PY'
import sys, json, statistics, os
w = sys.argv[1]
rd = lambda f: [float(x) for x in open(os.path.join(w, f)).read().split()]
dep, alone, course = rd("deploy.ms"), rd("alone.ms"), rd("course.ms")
m = statistics.median
row = lambda n, xs: print("  %-58s median %7.1f ms  min %7.1f  max %7.1f" % (n, m(xs), min(xs), max(xs)))
row("`cutover deploy staging --version <sha>` wall time", dep)
row("container alone: docker run -d --init -> /health 200 (10 ms poll)", alone)
print("  => cutover's deploy overhead on Docker (median - median): %.1f ms" % (m(dep) - m(alone)))
row("course approach: docker rm -f; docker run -d; curl /health every 1 s", course)
rs = [json.loads(l) for l in open(os.path.join(w, "rollback.jsonl")) if l.strip()]
ok = [r for r in rs if r.get("rc") == 0 and r.get("first_old_ms") is not None]
if ok:
    row("rollback in the monitor window: command start -> first old response", [r["first_old_ms"] for r in ok])
print("  rollbacks: %d runs, %d exit 0 and seen by the poller; poller errors %d over %d requests" % (
    len(rs), len(ok), sum(r["errors"] for r in rs), sum(r["requests"] for r in rs)))
PY
echo "  wrk -t2 -c16 through the edge proxy, exit codes:$codes"
python3 "$BENCH_DIR/wrkstat.py" --json "$WORK/wrk.txt"
echo "logs: $WORK (removed unless KEEP=1)"
