#!/usr/bin/env bash
# Merge-to-staging: a push webhook for a new commit on main, signed right, to the first
# /health answer of the new version through staging's edge proxy. Median of RUNS (default 10)
# deliveries, each for a new commit, after one warm-up delivery (which starts the edge proxy).
#
#   bench/merge-to-staging.sh     # RUNS=10 PORT=18261 (staging PORT, production PORT+1,
#                                 # webhook PORT+2)
#   FETCH=1 bench/merge-to-staging.sh   # the server's repository is a clone of a "forge" (a
#                                 # bare repository); each merge is pushed to the forge from
#                                 # another clone, so the server must fetch the commit
#                                 # (`[pipeline] remote = "forge"`) before its run
#
# Lab repo: the course's tasks-app with examples/tasks-app/cutover.toml as it is (health probes
# every 200 ms, 2 passes in a row), plus two trivial checks (`run = "true"`, `test` needs
# `lint`), `[webhook]` with its secret from the server's environment, and production gated
# (`approval = "manual"`, `requires = ["staging"]`) so that every run ends parked at the gate.
# The build command copies a prebuilt tasks-app (make_lab_repo), so it measures cutover, not
# rustc. `monitor` is cut to 2 s only so that the runs end sooner; it starts after staging is
# live and does not enter the measurement. Each delivery waits for the previous run to end.
#
# The clock: a Python driver computes the HMAC, sends the delivery (t0) and polls GET /health
# through the proxy every 5 ms until it answers 200 with the new sha (t1). Wall = t1 - t0.
# Cutover's own overhead = wall - checks - build - app start-to-healthy, where
#   checks = the sum of the checks' duration_ms (`cutover pipeline show RUN --json`; they run
#            one after the other here),
#   build  = the build command's own time (`sh -c "<[build] command>"` timed alone, median of
#            RUNS; the run's events carry no timestamps, so it cannot be read from the run),
#   app    = `starting` -> `live` in `cutover show RELEASE --json` (process spawn, the app's
#            start, and the probes at the configured 200 ms interval until 2 passes in a row:
#            generous to cutover, which also owns the spawn and the probe cadence).
# What remains is cutover's: webhook verification, the run's bookkeeping, the clean checkout
# for the checks, packing and hashing the artifact, the release's setup, the proxy switch and
# the first request through it.
source "$(dirname "$0")/lib.sh"

PORT="${PORT:-18261}"
RUNS="${RUNS:-10}"

need python3
need git
build_release

WORK="$(mktemp -d /tmp/cutover-bench-mts.XXXXXX)"
# The run's own machine edge, apart from any other edge on this machine.
export CUTOVER_EDGE_DIR="$WORK/edge"
REPO="$WORK/repo"
cleanup() {
    [ -d "$REPO" ] && (cd "$REPO" && "$CUTOVER" down >/dev/null 2>&1 || true)
    [ "${KEEP:-}" = 1 ] || rm -rf "$WORK"
    rm -rf "${BIN_SNAP:-/nonexistent}"
}
trap cleanup EXIT
for p in $PORT $((PORT + 1)) $((PORT + 2)); do
    ss -ltn "sport = :$p" | grep -q LISTEN && die "port $p is taken; set PORT"
done

make_lab_repo "$REPO" "$PORT" 's/^monitor = "10s"/monitor = "2s"/'
cd "$REPO"
git branch -M main
BUILD_CMD=$(python3 -c 'import tomllib,sys; print(tomllib.load(open("cutover.toml","rb"))["build"]["command"])')
cat >>cutover.toml <<EOF
approval = "manual"
requires = ["staging"]

[pipeline]
branch = "main"
$([ "${FETCH:-}" = 1 ] && echo 'remote = "forge"')
[[pipeline.check]]
name = "lint"
run = "true"
[[pipeline.check]]
name = "test"
run = "true"
needs = ["lint"]

[webhook]
secret = { env = "CUTOVER_WEBHOOK_SECRET" }
listen = "127.0.0.1:$((PORT + 2))"
EOF
# The appended keys must land in [environments.production] (the file's last table).
python3 -c 'import tomllib; c = tomllib.load(open("cutover.toml","rb")); p = c["environments"]["production"]; assert p["approval"] == "manual" and p["requires"] == ["staging"], p'
git add -A
git -c user.email=bench@localhost -c user.name=bench commit -qm "pipeline, checks, webhook"
DEV=""
if [ "${FETCH:-}" = 1 ]; then
    git clone -q --bare . "$WORK/forge.git"
    git remote add forge "$WORK/forge.git"
    git fetch -q forge
    git clone -q "$WORK/forge.git" "$WORK/dev"
    DEV="$WORK/dev"
    log "FETCH=1: merges are pushed to $WORK/forge.git from $DEV; the server's clone fetches them"
fi

SECRET="bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# The first command starts the server, which resolves the webhook secret in its environment.
CUTOVER_WEBHOOK_SECRET="$SECRET" "$CUTOVER" status >/dev/null 2>"$WORK/first.log" || die "$(cat "$WORK/first.log")"

log "merge-to-staging: 1 warm-up + $RUNS webhook deliveries"
python3 - "$CUTOVER" "$PORT" "$((PORT + 2))" "$SECRET" "$RUNS" "$BUILD_CMD" "$WORK" "$DEV" >"$WORK/result.txt" <<'EOF'
import hashlib, hmac, http.client, json, os, statistics, subprocess, sys, time
from datetime import datetime

cutover, port, hook, secret, runs, build_cmd, work, dev = sys.argv[1:]
port, hook, runs = int(port), int(hook), int(runs)

def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout

def cut(*args):
    return json.loads(sh(cutover, *args))

def commit(i):
    # In the server's repository, or (FETCH=1) in another clone, pushed to the forge.
    where = dev or "."
    with open(os.path.join(where, "notes.txt"), "a") as f:
        f.write(f"merge {i}\n")
    sh("git", "add", "-A", cwd=where)
    sh("git", "-c", "user.email=bench@localhost", "-c", "user.name=bench", "commit", "-qm", f"merge {i}", cwd=where)
    if dev:
        sh("git", "push", "-q", "origin", "HEAD:main", cwd=where)
    return sh("git", "rev-parse", "HEAD", cwd=where).strip()

def health_version():
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", "/health")
        r = c.getresponse()
        body = r.read()
        c.close()
        if r.status == 200:
            return json.loads(body).get("version")
    except Exception:
        return None

def deliver(sha, i):
    body = json.dumps({"ref": "refs/heads/main", "before": "0" * 40, "after": sha,
                       "repository": {"full_name": "course/tasks-app"},
                       "pusher": {"name": "bench"}}).encode()
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    c = http.client.HTTPConnection("127.0.0.1", hook, timeout=10)
    c.request("POST", "/hooks/push", body, {
        "X-GitHub-Event": "push", "X-GitHub-Delivery": f"bench-{os.getpid()}-{i}",
        "X-Hub-Signature-256": sig, "Content-Type": "application/json"})
    r = c.getresponse()
    answer = r.read()
    c.close()
    if r.status != 202:
        sys.exit(f"delivery {i}: {r.status} {answer!r}")

def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

def wait_run_end(run_id, limit=120):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            v = cut("pipeline", "show", str(run_id), "--json")
            if v["run"]["state"] != "running":
                return v
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.2)
    sys.exit(f"run {run_id} did not end within {limit} s")

rows = []
for i in range(runs + 1):
    sha = commit(i)
    sent = time.time()
    t0 = time.perf_counter()
    deliver(sha, i)
    deadline = t0 + 60
    while health_version() != sha:
        if time.perf_counter() > deadline:
            sys.exit(f"delivery {i}: staging did not serve {sha} within 60 s")
        time.sleep(0.005)
    wall = (time.perf_counter() - t0) * 1000
    seen = time.time()
    run = wait_run_end(i + 1)
    if run["run"]["sha"] != sha:
        sys.exit(f"run {i + 1} is for {run['run']['sha']}, not {sha}")
    checks = sum(c["duration_ms"] for c in run["checks"])
    staging = [r for r in cut("history", "staging", "--json")["releases"] if r["version"] == sha]
    show = cut("show", str(staging[0]["id"]), "--json")
    at = {}
    for e in show["events"]:
        at.setdefault(e["kind"], ts(e["at"]))
    app = (at["live"] - at["starting"]) * 1000
    run_to_pending = (at["pending"] - ts(run["run"]["started_at"])) * 1000
    if i > 0:
        rows.append(dict(wall=wall, checks=checks, app=app, run_to_pending=run_to_pending,
                         pending_to_starting=(at["starting"] - at["pending"]) * 1000,
                         sent_to_run=(ts(run["run"]["started_at"]) - sent) * 1000,
                         live_to_seen=(seen - at["live"]) * 1000))
    print(f"delivery {i}{' (warm-up)' if i == 0 else ''}: wall {wall:.1f} ms, checks {checks} ms, "
          f"starting->live {app:.1f} ms, run start->pending {run_to_pending:.1f} ms", file=sys.stderr)

# The build command's own time, alone, in a scratch copy of the repo.
scratch = os.path.join(work, "build-alone")
sh("git", "clone", "-q", ".", scratch)
builds = []
for _ in range(runs):
    t = time.perf_counter()
    subprocess.run(["sh", "-c", build_cmd], cwd=scratch, check=True)
    builds.append((time.perf_counter() - t) * 1000)
build = statistics.median(builds)

med = lambda k: statistics.median(r[k] for r in rows)
overheads = [r["wall"] - r["checks"] - build - r["app"] for r in rows]
wall = med("wall")
over = statistics.median(overheads)
print(f"  wall, delivery sent -> first /health 200 of the new version via the proxy ({runs} runs):")
print(f"    median {wall:.1f} ms  min {min(r['wall'] for r in rows):.1f}  max {max(r['wall'] for r in rows):.1f}")
print(f"  subtracted (medians): checks {med('checks'):.1f} ms (2 x `true`), build command {build:.1f} ms, "
      f"app starting->live {med('app'):.1f} ms")
print(f"  cutover's own overhead: median {over:.1f} ms = {100 * over / wall:.0f}% of the wall time"
      f" (min {min(overheads):.1f}, max {max(overheads):.1f})")
print(f"  of which (medians): run start -> release pending {med('run_to_pending'):.1f} ms"
      f" (checkout + checks + build + pack), pending -> starting {med('pending_to_starting'):.1f} ms,")
print(f"    delivery sent -> run started {med('sent_to_run'):.1f} ms, live -> first answer seen"
      f" {med('live_to_seen'):.1f} ms (ledger timestamps have ms resolution; 5 ms polling)")
EOF

echo
echo "== merge-to-staging: $(date -u +%Y-%m-%dT%H:%MZ)"
machine_summary
cat "$WORK/result.txt"
echo "logs: $WORK (removed unless KEEP=1)"
