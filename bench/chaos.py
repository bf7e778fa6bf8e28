#!/usr/bin/env python3
"""Chaos: crash cutover at random, N times, and check that it recovers without a human.

  python3 bench/chaos.py                      # 100 trials
  python3 bench/chaos.py --quick              # 10 trials (about 2 minutes)
  SEED=1234 python3 bench/chaos.py --trials 1 # replays the trial that printed seed=1234
  python3 bench/chaos.py --seed 1234 --trials 1 --keep   # same, and keeps its state dir

Each trial runs in a fresh git repository and state dir of its own (the course's tasks-app,
a free port, short health intervals and a 2 s monitor window) on the process runtime, with a
small load generator GETting /health through the environment's edge proxy (127.0.0.1 only;
every failure is recorded with its time). It starts one action:

  deploy     deploy v2 over a live v1
  failing    deploy v2 with --env BREAK=1 (its health check fails; v1 must keep serving)
  rollback   v1 then v2 live, `cutover rollback` (inside v2's monitor window: a switch to the
             warm standby; or after it: fresh instances — the trial's seed picks)
  monitor    deploy v2, then the kill lands inside its monitor window

and at a random moment SIGKILLs one of:

  server           the `cutover server` (.cutover/server.pid)
  proxy            the machine edge (edge.pid in the trial's CUTOVER_EDGE_DIR)
  new-supervisor   the supervisor of the instance the action brings up (the release being
                   deployed; the rollback target's instance; the monitored release's)
  live-supervisor  the supervisor of the instance the edge routes to at that moment
  live-instance    that instance's process itself

One second after the kill it runs `cutover status --json` (which starts a new server if the
old one is gone: it reconciles) and then lets the server's own watcher act. A trial is clean
when all three hold:

  serve  within 5 s of the kill, and from then on, every request through the edge succeeds
         (the gap = the longest run of failed requests from the action's start on; it is
         reported per kind of kill, a proxy or only-live-instance kill has one);
  state  no release is left pending/starting/verifying (`history --json`), something is live,
         the version `status --json` calls live is the APP_VERSION /health reports, and status
         lists a running instance of it in the role "serving" (so what answers is supervised);
  next   the next deploy (v3) exits 0 and the edge serves v3.

After each trial: `cutover down`, then every process whose command line or working directory
is inside the trial's directory and that still runs (cutover's own processes get 5 s to exit)
is SIGKILLed and reported as leaked (with --strict, a leak makes the trial unclean). Exit code 0 only if every trial was
clean. Standard library only. Every wait has a timeout; every loop ends.

A seed fixes a trial's choices (action, target, moment, rollback flavour); the timing of the
processes themselves is not replayable, so a replay reproduces the scenario, not the
interleaving. For a race that a random moment rarely hits, `--at EVENT` kills right after the
ledger records an event of that kind (e.g. `--action deploy --kill server --at live`: after
the ledger says the new release is live, before the edge was switched).

Every trial's record goes to <work dir>/results.jsonl (or --out); an unclean trial also leaves
evidence-<seed>/ there (server and edge logs, `cutover show` of each release, status, the
instances' state files). The work dir is under $TMPDIR: `TMPDIR=/dev/shm` keeps disk latency
(fsync stalls on a busy disk) out of the results.
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)

ACTIONS = ("deploy", "failing", "rollback", "monitor")
KILLS = ("server", "proxy", "new-supervisor", "live-supervisor", "live-instance")
TRANSIENT = ("pending", "starting", "verifying")

MONITOR_S = 2.0  # the monitor window of every release in the lab
# The kill lands at a uniform moment in [0, WINDOW] seconds after the action starts (for
# "monitor": after its deploy returned, inside the window).
WINDOW = {"deploy": 0.8, "failing": 0.8, "rollback": 0.6, "monitor": MONITOR_S * 0.9}
TARGET_WAIT_S = 2.0  # how long to wait for a target that does not exist yet
SERVE_WITHIN_S = 5.0  # check "serve": every request succeeds from kill + this on
OBSERVE_S = 6.0  # load keeps running at least this long after the kill
COMMAND_TIMEOUT_S = 60.0
TRIAL_LOAD_LIMIT_S = 120.0  # hard bound of a load thread
LINGER_S = 5.0  # after `cutover down`, how long a trial's processes get to exit by themselves

CONFIG = """[app]
name = "chaos"

[build]
command = "cp {tasks_app} tasks-app"
files = ["tasks-app"]

[run]
command = ["./tasks-app"]
stop_timeout = "2s"

[health]
path = "/health"
body_contains = "ok"
interval = "100ms"
timeout = "1s"
healthy_threshold = 2
deadline = "5s"
unhealthy_threshold = 3
monitor = "{monitor}ms"

[environments.staging]
listen = "127.0.0.1:{port}"
strategy = "blue-green"
"""


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes


def run(cmd, cwd, timeout=COMMAND_TIMEOUT_S, env=None):
    """Runs a command; (exit code, stdout, stderr). Exit code None: killed after `timeout`."""
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace")
        err = (e.stderr or b"").decode(errors="replace")
        return None, out, err + "\n[chaos: killed after %.0f s]" % timeout


def proc_info(pid):
    """(cmdline, cwd, is_zombie) of a pid, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    try:
        cwd = os.readlink("/proc/%d/cwd" % pid)
    except OSError:
        cwd = ""
    zombie = stat.rsplit(")", 1)[-1].strip().startswith("Z")
    return cmdline, cwd, zombie


def owned_by(pid, root):
    """Whether pid is a live (non-zombie) process of the trial under `root`."""
    info = proc_info(pid)
    if info is None or info[2]:
        return False
    cmdline, cwd, _ = info
    return root in cmdline or cwd == root or cwd.startswith(root + "/")


def processes_under(root):
    """Every live process whose command line or working directory is inside `root`."""
    out = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        if owned_by(int(name), root):
            out.append(int(name))
    return out


def kind_of(cmdline):
    """What a cutover process is, from its command line."""
    for word, kind in ((" server ", "server"), (" proxy ", "proxy"), (" supervise ", "supervisor")):
        if word in " %s " % cmdline:
            return kind
    return "instance"


def kill_pid(pid):
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except OSError:
        return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# HTTP through the edge


def get_health(port, timeout=2.0):
    """(ok, version or error text)."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", "/health", headers={"Connection": "close"})
        r = c.getresponse()
        body = r.read().decode(errors="replace")
        c.close()
    except (OSError, http.client.HTTPException) as e:
        return False, "%s: %s" % (type(e).__name__, e)
    if r.status != 200:
        return False, "%d %s" % (r.status, body[:80])
    try:
        doc = json.loads(body)
    except ValueError:
        return False, "200 not JSON: %s" % body[:80]
    if doc.get("status") != "ok":
        return False, "200 %s" % body[:80]
    return True, doc.get("version", "?")


class Load:
    """A few threads GETting /health through the edge in a bounded loop."""

    def __init__(self, port, threads=3):
        self.port = port
        self.stop_event = threading.Event()
        self.samples = []  # (t_start, t_end, ok, version-or-error), monotonic seconds
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()

    def loop(self):
        deadline = time.monotonic() + TRIAL_LOAD_LIMIT_S
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            t0 = time.monotonic()
            ok, what = get_health(self.port)
            t1 = time.monotonic()
            with self.lock:
                self.samples.append((t0, t1, ok, what))
            self.stop_event.wait(0.01)

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(5)

    def snapshot(self):
        with self.lock:
            return sorted(self.samples)


def longest_gap(samples, since):
    """The longest run of failed requests started at or after `since` (merged over threads,
    by start time): (duration s, start, end, count). The run lasts from the first failed
    request's start to the start of the next successful one (or the last sample)."""
    best = (0.0, None, None, 0)
    run_start, count = None, 0
    last = None
    for t0, _t1, ok, _ in samples:
        if t0 < since:
            continue
        last = t0
        if not ok:
            if run_start is None:
                run_start, count = t0, 0
            count += 1
        elif run_start is not None:
            if t0 - run_start > best[0]:
                best = (t0 - run_start, run_start, t0, count)
            run_start = None
    if run_start is not None and last is not None and last - run_start >= best[0]:
        best = (last - run_start, run_start, last, count)
    return best


# ---------------------------------------------------------------------------------------------
# One trial


class Lab:
    """A trial's repository, state dir and port."""

    def __init__(self, root, cutover, tasks_app):
        self.root = root
        self.repo = os.path.join(root, "repo")
        self.state = os.path.join(self.repo, ".cutover")
        self.cutover = cutover
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("CUTOVER_STATE_DIR", "GIT_DIR", "GIT_WORK_TREE")}
        self.env["NO_COLOR"] = "1"
        # The trial's own machine edge, apart from every other edge on the machine.
        self.edge = os.path.join(root, "edge")
        self.env["CUTOVER_EDGE_DIR"] = self.edge
        os.makedirs(self.repo)
        with open(os.path.join(self.repo, "cutover.toml"), "w") as f:
            f.write(CONFIG.format(tasks_app=tasks_app, monitor=int(MONITOR_S * 1000),
                                  port=self.port))
        self.git("init", "-q", "-b", "main")
        self.versions = []
        for n in (1, 2, 3):
            with open(os.path.join(self.repo, "notes.txt"), "a") as f:
                f.write("v%d\n" % n)
            self.git("add", "-A")
            self.git("commit", "-q", "-m", "v%d" % n)
            self.versions.append(self.git("rev-parse", "HEAD"))

    def git(self, *args):
        cmd = ["git", "-c", "user.name=chaos", "-c", "user.email=chaos@localhost",
               "-c", "commit.gpgsign=false", *args]
        code, out, err = run(cmd, self.repo, 30, self.env)
        if code != 0:
            raise RuntimeError("git %s failed: %s" % (" ".join(args), err.strip()))
        return out.strip()

    def cli(self, *args, timeout=COMMAND_TIMEOUT_S):
        return run([self.cutover, *args], self.repo, timeout, self.env)

    def spawn(self, *args):
        return subprocess.Popen([self.cutover, *args], cwd=self.repo, env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def read(self, *parts):
        try:
            with open(os.path.join(self.state, *parts)) as f:
                return f.read()
        except OSError:
            return None

    def read_edge(self, name):
        try:
            with open(os.path.join(self.edge, name)) as f:
                return f.read()
        except OSError:
            return None

    def pid_file(self, *parts):
        text = self.read(*parts)
        try:
            return int(text.strip()) if text else None
        except ValueError:
            return None

    def instances(self):
        """The supervisors' state files (instances/<id>.json)."""
        out = []
        d = os.path.join(self.state, "instances")
        try:
            names = os.listdir(d)
        except OSError:
            return out
        for name in names:
            if not name.endswith(".json"):
                continue
            text = self.read("instances", name)
            try:
                out.append(json.loads(text))
            except (TypeError, ValueError):
                pass
        return out

    def routed(self):
        """The upstream addresses the edge's routes file sends staging traffic to:
        `routes[].upstreams[]` with a weight above 0 (or an older edge's flat `upstreams` list)."""
        text = self.read_edge("routes.json")
        try:
            doc = json.loads(text)
        except (TypeError, ValueError):
            return []
        if "routes" in doc:
            return [u["addr"] for r in doc.get("routes") or [] for u in r.get("upstreams", [])
                    if u.get("weight", 1) > 0 and r.get("route", {}).get("env") == "staging"]
        return doc.get("upstreams", [])

    def status(self):
        code, out, err = self.cli("status", "--json", timeout=30)
        doc = None
        if code == 0:
            try:
                doc = json.loads(out)
            except ValueError:
                pass
        staging = None
        for e in (doc or {}).get("environments", []):
            if e.get("name") == "staging":
                staging = e
        return code, staging, err

    def history(self):
        code, out, err = self.cli("history", "staging", "--json", timeout=30)
        if code != 0:
            return None, err
        try:
            return json.loads(out).get("releases", []), err
        except ValueError:
            return None, out

    def release_ids(self):
        releases, _ = self.history()
        return {r["id"] for r in releases or []}


def last_event(lab):
    """The id of the newest event in the ledger (0 if none or unreadable)."""
    try:
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(lab.state, "ledger.db"), uri=True,
                             timeout=5)
        try:
            return db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def said(stderr):
    """What a failed cutover command said: its `error:` line, then the end of its output."""
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    tail = stderr.strip()[-300:]
    return "%s\n%s" % (lines[-1], tail) if lines and lines[-1] not in tail else tail


def gist(stderr):
    """The `error:` line of a cutover command, without ids, pids, ports and versions, so that
    failures with the same cause fall into one category."""
    lines = [line for line in stderr.splitlines() if "error:" in line]
    text = lines[-1].rsplit("error:", 1)[1].strip() if lines else stderr.strip()[-120:]
    text = re.sub(r"[0-9a-f]{12,40}", "<sha>", text)
    text = re.sub(r"staging-r[0-9]+-[0-9]+-[0-9a-f]{4}", "<instance>", text)
    text = re.sub(r"127\.0\.0\.1:[0-9]+", "<addr>", text)
    text = re.sub(r"[0-9]+", "N", text)
    return text[:200]


def short(v):
    return (v or "?")[:8]


class Trial:
    def __init__(self, seed, opts, work_root, cutover, tasks_app):
        self.seed = seed
        self.opts = opts
        rng = random.Random(seed)
        # Drawn in a fixed order, so a seed always means the same scenario.
        self.action = rng.choice(ACTIONS)
        self.kill = rng.choice(KILLS)
        self.delay = rng.uniform(0, 1)
        self.warm = rng.random() < 0.5
        if opts.action:
            self.action = opts.action
        if opts.kill:
            self.kill = opts.kill
        self.delay *= WINDOW[self.action]
        self.root = os.path.join(work_root, "seed-%d" % seed)
        self.cutover = cutover
        self.tasks_app = tasks_app
        self.failures = []  # (check, category, detail)
        self.phase = "setup"
        self.notes = []
        self.record = {"seed": seed, "action": self.action, "kill": self.kill,
                       "delay_ms": round(self.delay * 1000),
                       "rollback": ("warm" if self.warm else "cold")
                       if self.action == "rollback" else None}

    def fail(self, check, category, detail):
        self.failures.append((check, category, detail))

    def describe(self):
        extra = " (%s standby)" % self.record["rollback"] if self.action == "rollback" else ""
        when = ("at the first %r event" % self.opts.at if self.opts.at
                else "at +%d ms" % self.record["delay_ms"])
        return "action=%s%s kill=%s %s" % (self.action, extra, self.kill, when)

    # -- the scenario ------------------------------------------------------------------------

    def setup(self, lab):
        v1, v2, _ = lab.versions
        for v in lab.versions:
            code, _, err = lab.cli("build", v)
            if code != 0:
                raise RuntimeError("build %s: exit %s: %s" % (short(v), code, said(err)))
        code, _, err = lab.cli("deploy", "staging", "--version", v1)
        if code != 0:
            raise RuntimeError("deploy v1: exit %s: %s" % (code, said(err)))
        if self.action == "rollback":
            code, _, err = lab.cli("deploy", "staging", "--version", v2)
            if code != 0:
                raise RuntimeError("deploy v2: exit %s: %s" % (code, said(err)))
            if not self.warm:
                # Wait for v2's window to close: v1's standby stops, the rollback starts fresh.
                deadline = time.monotonic() + MONITOR_S + 10
                while time.monotonic() < deadline:
                    rs, _ = lab.history()
                    if rs and rs[0].get("known_good"):
                        break
                    time.sleep(0.1)
                else:
                    raise RuntimeError("v2's monitor window did not close")
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and any(
                        i.get("version") == v1 for i in lab.instances()):
                    time.sleep(0.05)
        ok, what = get_health(lab.port)
        expect = v2 if self.action == "rollback" else v1
        if not ok or what != expect:
            raise RuntimeError("before the action the edge answers %s, not %s" % (what, short(expect)))

    def start_action(self, lab):
        """Starts the action; returns (Popen or None, expected exit code, t_action)."""
        v1, v2, _ = lab.versions
        if self.action == "deploy":
            return lab.spawn("deploy", "staging", "--version", v2), 0, time.monotonic()
        if self.action == "failing":
            return (lab.spawn("deploy", "staging", "--version", v2, "--env", "BREAK=1"), 3,
                    time.monotonic())
        if self.action == "rollback":
            return lab.spawn("rollback", "staging"), 0, time.monotonic()
        # monitor: the deploy returns once v2 is live; the window runs from then on.
        code, _, err = lab.cli("deploy", "staging", "--version", v2)
        self.record["action_exit"] = code
        if code != 0:
            raise RuntimeError("deploy v2 (monitor): exit %s: %s" % (code, said(err)))
        return None, 0, time.monotonic()

    def is_new(self, lab, inst, base_ids):
        v1, v2, _ = lab.versions
        if self.action in ("deploy", "failing"):
            return inst.get("release") not in base_ids
        if self.action == "rollback":
            return inst.get("version") == v1
        return inst.get("version") == v2  # monitor: the monitored release's instance

    def find_target(self, lab, base_ids):
        """(pid, what) of the process to kill now, or (None, why not)."""
        if self.kill == "server":
            pid = lab.pid_file("server.pid")
            return (pid, "server") if pid else (None, "no server.pid")
        if self.kill == "proxy":
            text = lab.read_edge("edge.pid")
            pid = int(text.strip()) if text and text.strip().isdigit() else None
            return (pid, "edge") if pid else (None, "no edge.pid in the edge dir")
        insts = lab.instances()
        if self.kill == "new-supervisor":
            new = [i for i in insts if self.is_new(lab, i, base_ids)
                   and i.get("state") in ("running", "starting", "restarting")]
            if not new:
                return None, "no instance of the new release"
            i = max(new, key=lambda i: i.get("started_at", ""))
            return i.get("supervisor_pid"), "supervisor of %s (release %s, %s)" % (
                i["id"], i.get("release"), short(i.get("version")))
        routed = lab.routed()
        live = [i for i in insts if i.get("address") in routed]
        if not live:
            return None, "no instance at the routed address(es) %s" % routed
        i = live[0]
        if self.kill == "live-supervisor":
            return i.get("supervisor_pid"), "supervisor of %s (release %s, %s)" % (
                i["id"], i.get("release"), short(i.get("version")))
        if i.get("pid"):
            return i["pid"], "process of %s (release %s, %s)" % (
                i["id"], i.get("release"), short(i.get("version")))
        return None, "live instance %s has no process (state %s)" % (i["id"], i.get("state"))

    def strike(self, lab, base_ids, t_action, base_event):
        """Waits for the random moment (or, with --at, for the ledger event), finds the target
        and SIGKILLs it. Returns t_kill."""
        if self.opts.at:
            self.wait_event(lab, base_event, t_action)
        else:
            time.sleep(max(0.0, t_action + self.delay - time.monotonic()))
        deadline = time.monotonic() + TARGET_WAIT_S
        while True:
            pid, what = self.find_target(lab, base_ids)
            if pid and owned_by(pid, self.root):
                t_kill = time.monotonic()
                kill_pid(pid)
                self.record["killed"] = "%s (pid %d)" % (what, pid)
                self.record["kill_after_ms"] = round((t_kill - t_action) * 1000)
                return t_kill
            if pid:
                what = "%s: pid %d is not a live process of this trial" % (what, pid)
            if time.monotonic() > deadline:
                self.record["killed"] = None
                self.record["missed"] = what
                self.notes.append("no kill: %s" % what)
                return time.monotonic()
            time.sleep(0.01)

    def wait_event(self, lab, base_event, t_action):
        """Polls the ledger (read-only) until an event of kind --at newer than `base_event` is
        written; bounded. The window between a ledger write and the next step is short, so
        this is a poll in a tight loop."""
        deadline = time.monotonic() + 15
        try:
            db = sqlite3.connect("file:%s?mode=ro" % os.path.join(lab.state, "ledger.db"),
                                 uri=True, timeout=1)
        except sqlite3.Error as e:
            self.notes.append("--at: cannot open the ledger: %s" % e)
            return
        try:
            while time.monotonic() < deadline:
                try:
                    row = db.execute("SELECT id, release_id FROM events WHERE id > ? AND kind = ?"
                                     " ORDER BY id LIMIT 1", (base_event, self.opts.at)).fetchone()
                except sqlite3.Error:
                    row = None
                if row:
                    self.record["at_event"] = "%s of release %d, +%d ms" % (
                        self.opts.at, row[1], round((time.monotonic() - t_action) * 1000))
                    return
                time.sleep(0.0002)
            self.notes.append("--at: no %r event within 15 s; killing anyway" % self.opts.at)
        finally:
            db.close()

    # -- the checks --------------------------------------------------------------------------

    def check_serve(self, samples, t_action, t_kill, t_end):
        gap = longest_gap([s for s in samples if s[0] < t_end], t_action)
        self.record["gap_ms"] = round(gap[0] * 1000)
        if gap[1] is not None:
            self.record["gap_from_kill_ms"] = [round((gap[1] - t_kill) * 1000),
                                               round((gap[2] - t_kill) * 1000)]
            self.record["gap_requests"] = gap[3]
        fails = [s for s in samples if not s[2] and t_action <= s[0] < t_end]
        self.record["failed_requests"] = len(fails)
        self.record["requests"] = len([s for s in samples if t_action <= s[0] < t_end])
        self.record["failures"] = [["%+.3f" % (s[0] - t_kill), s[3]] for s in fails[:20]]
        late = [s for s in samples if s[0] >= t_kill + SERVE_WITHIN_S and s[0] < t_end]
        bad = [s for s in late if not s[2]]
        if not late:
            self.fail("serve", "no requests observed after kill+5s", "")
        elif bad:
            self.fail("serve", "requests fail after kill+5s",
                      "%d of %d requests after kill+5 s failed, first at %+.2f s: %s" % (
                          len(bad), len(late), bad[0][0] - t_kill, bad[0][3]))
        served = sorted({s[3] for s in late if s[2]})
        self.record["served_after"] = [short(v) for v in served]

    def check_state(self, lab):
        # The ledger settles: nothing pending/starting/verifying (bounded wait).
        deadline = time.monotonic() + 10
        releases = None
        while time.monotonic() < deadline:
            releases, err = lab.history()
            if releases is not None and not any(r["state"] in TRANSIENT for r in releases):
                break
            time.sleep(0.25)
        self.record["history"] = [[r["id"], r["kind"], short(r["version"]), r["state"],
                                   (r.get("reason") or "")[:160]] for r in releases or []]
        if releases is None:
            self.fail("state", "history --json failed", err.strip()[-300:])
            return
        stuck = [r for r in releases if r["state"] in TRANSIENT]
        for r in stuck:
            self.fail("state", "release stuck in %s" % r["state"],
                      "release %d (%s, %s) still %s 10 s after the trial settled" % (
                          r["id"], r["kind"], short(r["version"]), r["state"]))
        lives = [r for r in releases if r["state"] == "live"]
        if len(lives) != 1:
            self.fail("state", "%d live releases in history" % len(lives),
                      "live: %s" % [r["id"] for r in lives])
        # status --json agrees with the port (a few tries: an automatic rollback may be on
        # its way).
        mismatch = None
        for attempt in range(6):
            code, env, err = lab.status()
            if code != 0 or env is None:
                mismatch = ("status --json failed", "exit %s: %s" % (code, said(err)))
            elif not env.get("live"):
                mismatch = ("status: nothing live", "status --json has no live release")
            else:
                live = env["live"]
                answers = [get_health(lab.port) for _ in range(3)]
                versions = {a[1] for a in answers if a[0]}
                errors = [a[1] for a in answers if not a[0]]
                if errors or versions != {live["version"]}:
                    serving = [(i["id"], i["release"], short(i["version"]), i["role"], i["state"])
                               for i in env.get("instances", [])]
                    mismatch = ("status disagrees with the port",
                                "status: live release %s (%s); port: %s; status instances: %s" % (
                                    live["release"], short(live["version"]),
                                    [short(v) for v in versions] + errors, serving))
                elif not any(i.get("role") == "serving" and i.get("version") == live["version"]
                             and i.get("state") == "running" for i in env.get("instances", [])):
                    # The port answers, but no instance cutover knows of does: an unsupervised
                    # process serves (nobody restarts it, and no deploy will stop it).
                    mismatch = ("status lists no serving instance of the live release",
                                "status: live release %s (%s), instances %s; the port answers %s "
                                "from a process no supervisor watches" % (
                                    live["release"], short(live["version"]),
                                    [(i["id"], short(i["version"]), i["role"], i["state"])
                                     for i in env.get("instances", [])],
                                    [short(v) for v in versions]))
                else:
                    mismatch = None
                    self.record["live_after"] = "release %s (%s)" % (live["release"],
                                                                      short(live["version"]))
            if mismatch is None:
                break
            time.sleep(1)
        if mismatch:
            self.fail("state", *mismatch)

    def check_next(self, lab, load):
        v3 = lab.versions[2]
        t0 = time.monotonic()
        code, _, err = lab.cli("deploy", "staging", "--version", v3, "--queue")
        self.record["next_exit"] = code
        if code != 0:
            self.fail("next", "next deploy exit %s: %s" % (code, gist(err)), said(err))
            return t0
        deadline = time.monotonic() + 5
        what = None
        while time.monotonic() < deadline:
            ok, what = get_health(lab.port)
            if ok and what == v3:
                break
            time.sleep(0.05)
        else:
            self.fail("next", "edge does not serve v3 after the next deploy",
                      "after exit 0 the edge answers %s" % short(what))
        dropped = [s for s in load.snapshot() if s[0] >= t0 and not s[2]]
        if dropped:
            self.notes.append("the next deploy dropped %d request(s): %s" % (
                len(dropped), dropped[0][3]))
        return t0

    # -- driver ------------------------------------------------------------------------------

    def run(self):
        os.makedirs(self.root)
        lab = None
        load = None
        proc = None
        t_start = time.monotonic()
        try:
            lab = Lab(self.root, self.cutover, self.tasks_app)
            self.record["versions"] = [short(v) for v in lab.versions]
            self.setup(lab)
            base_ids = lab.release_ids()
            base_event = last_event(lab)
            load = Load(lab.port)
            load.start()
            time.sleep(0.3)
            proc, expected, t_action = self.start_action(lab)
            self.phase = "kill"
            t_kill = self.strike(lab, base_ids, t_action, base_event)
            # One second after the kill, a person-less `status` (it starts a server if needed).
            time.sleep(max(0.0, t_kill + 1.0 - time.monotonic()))
            code, env, err = lab.status()
            self.record["status_exit"] = code
            self.record["status_started_server"] = "started the server" in err
            if proc is not None:
                try:
                    out, perr = proc.communicate(timeout=COMMAND_TIMEOUT_S)
                    self.record["action_exit"] = proc.returncode
                    self.record["action_said"] = perr.decode(errors="replace").strip()[-300:]
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
                    self.record["action_exit"] = None
                    self.notes.append("the action did not finish within %d s" % COMMAND_TIMEOUT_S)
            self.record["action_expected"] = expected
            # Observe: at least OBSERVE_S after the kill.
            time.sleep(max(0.0, t_kill + OBSERVE_S - time.monotonic()))
            t_checks = time.monotonic()
            self.check_state(lab)
            self.record["server_log"] = [
                line for line in (lab.read("logs", "server.log") or "").splitlines()
                if not line.startswith("cutover server ")][-15:]
            t_next = self.check_next(lab, load)
            load.stop()
            self.check_serve(load.snapshot(), t_action, t_kill, t_next)
            self.record["checks_after_kill_ms"] = round((t_checks - t_kill) * 1000)
        except Exception as e:  # noqa: BLE001 - a harness error is a trial failure, shown
            if self.phase == "setup":
                # Before any kill: nothing about recovery was tested (a void trial).
                self.fail("setup", "failed before the kill: %s" % gist(str(e)),
                          "%s: %s" % (type(e).__name__, e))
            else:
                self.fail("harness", "harness error", "%s: %s" % (type(e).__name__, e))
        finally:
            if load is not None:
                load.stop()
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
            self.cleanup(lab)
        if self.opts.strict and self.record.get("leaked"):
            self.fail("leak", "processes outlived `cutover down`",
                      "; ".join(self.record["leaked"]))
        self.record["seconds"] = round(time.monotonic() - t_start, 1)
        self.record["clean"] = not self.failures
        self.record["unclean"] = [[c, cat, d] for c, cat, d in self.failures]
        self.record["notes"] = self.notes
        return self.record

    def cleanup(self, lab):
        if lab is not None:
            self.keep_evidence(lab)
            if os.path.isdir(lab.state):
                code, _, err = lab.cli("down", timeout=30)
                if code != 0:
                    self.notes.append("cutover down: exit %s: %s" % (code, err.strip()[-200:]))
        # `cutover down` may return before the server's process is gone: give cutover's own
        # processes (server, proxies, supervisors, which stop their instances) a bounded moment
        # to exit by themselves, then SIGKILL what is left and call it leaked. An instance with
        # no supervisor left will not exit by itself: it is not waited for.
        deadline = time.monotonic() + LINGER_S
        pids = processes_under(self.root)
        def may_exit(pid):
            # cutover's own processes, and any process on its way out (its command line is
            # already gone while its cwd is still readable for a moment).
            cmdline = (proc_info(pid) or ("",))[0].strip()
            return not cmdline or kind_of(cmdline) != "instance"
        while time.monotonic() < deadline and any(may_exit(p) for p in pids):
            time.sleep(0.25)
            pids = processes_under(self.root)
        found = {}
        for _ in range(3):
            if not pids:
                break
            for pid in pids:
                info = proc_info(pid)
                # A process on its way out (no command line, no cwd) is not a leak; one that
                # still had a cwd after the whole linger is.
                if info and not info[2] and (info[0].strip() or info[1]) and pid not in found:
                    found[pid] = "%s pid %d: %s (cwd %s)" % (
                        kind_of(info[0]), pid, info[0].strip()[:120], info[1])
                kill_pid(pid)
            time.sleep(0.2)
            pids = processes_under(self.root)
        leaked = list(found.values())
        if leaked:
            self.record["leaked"] = leaked
            self.notes.append("%d process(es) left after `cutover down`: %s" % (
                len(leaked), "; ".join(leaked)))
        if not self.opts.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def keep_evidence(self, lab):
        """For an unclean trial: the server log, the edge log and the timeline, beside the
        results (the trial's own directory goes unless --keep)."""
        if not self.failures or not os.path.isdir(lab.state):
            return
        dest = os.path.join(os.path.dirname(self.root), "evidence-%d" % self.seed)
        os.makedirs(dest, exist_ok=True)
        for src in (os.path.join(lab.state, "logs", "server.log"),
                    os.path.join(lab.edge, "edge.log")):
            if os.path.exists(src):
                shutil.copy(src, os.path.join(dest, os.path.basename(src)))
        instance_logs = os.path.join(lab.state, "logs", "staging")
        if os.path.isdir(instance_logs):
            shutil.copytree(instance_logs, os.path.join(dest, "instance-logs"), dirs_exist_ok=True)
        ids = sorted({h[0] for h in self.record.get("history", [])})
        for rid in ids:
            code, out, _ = lab.cli("show", str(rid), timeout=20)
            if code == 0:
                with open(os.path.join(dest, "release-%d.txt" % rid), "w") as f:
                    f.write(out)
        code, out, _ = lab.cli("status", timeout=20)
        with open(os.path.join(dest, "status.txt"), "w") as f:
            f.write(out)
        with open(os.path.join(dest, "instances.json"), "w") as f:
            json.dump(lab.instances(), f, indent=1)
        self.record["evidence"] = dest


# ---------------------------------------------------------------------------------------------
# Main


def build(opts):
    cutover = opts.cutover or os.path.join(ROOT, "target", "debug", "cutover")
    tasks = opts.tasks_app or os.path.join(ROOT, "target", "debug", "tasks-app")
    if not opts.no_build and not os.environ.get("SKIP_BUILD"):
        log("cargo build -p cutover -p tasks-app (debug)")
        code, _, err = run(["cargo", "build", "-q", "-p", "cutover", "-p", "tasks-app"], ROOT,
                           timeout=1800)
        if code != 0:
            sys.exit("error: cargo build failed:\n" + err[-2000:])
    for p in (cutover, tasks):
        if not os.access(p, os.X_OK):
            sys.exit("error: no executable %s\nhint: build it, or pass --cutover/--tasks-app" % p)
    # Snapshot: a concurrent `cargo build` must not swap the binaries under a running trial.
    snap = tempfile.mkdtemp(prefix="cutover-chaos-bin.")
    shutil.copy(cutover, os.path.join(snap, "cutover"))
    shutil.copy(tasks, os.path.join(snap, "tasks-app"))
    return snap, os.path.join(snap, "cutover"), os.path.join(snap, "tasks-app")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else None


def table(records, key, values):
    lines = ["%-16s %6s %6s %5s %7s %8s %8s %8s %6s" % (
        key, "trials", "clean", "void", "missed", "gap-med", "gap-p90", "gap-max", "leaks")]
    for v in values:
        rs = [r for r in records if r.get(key) == v]
        if not rs:
            continue
        gaps = [r["gap_ms"] for r in rs if "gap_ms" in r]
        lines.append("%-16s %6d %6d %5d %7d %8s %8s %8s %6d" % (
            v, len(rs), sum(1 for r in rs if r["clean"]),
            sum(1 for r in rs if any(u[0] == "setup" for u in r["unclean"])),
            sum(1 for r in rs if r.get("missed")),
            "%d" % statistics.median(gaps) if gaps else "-",
            "%d" % pct(gaps, 0.9) if gaps else "-",
            "%d" % max(gaps) if gaps else "-",
            sum(1 for r in rs if r.get("leaked"))))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="see the top of bench/chaos.py for what a trial does")
    ap.add_argument("--trials", type=int, help="number of trials (default 100; --quick: 10)")
    ap.add_argument("--quick", action="store_true", help="10 trials (CI-sized)")
    ap.add_argument("--seed", type=int, help="the first trial's seed (default: $SEED or random); "
                    "trial i uses seed+i, so --seed S --trials 1 replays the trial with seed S")
    ap.add_argument("--action", choices=ACTIONS, help="only this action")
    ap.add_argument("--kill", choices=KILLS, help="only this kind of kill")
    ap.add_argument("--at", metavar="EVENT",
                    help="kill right after the ledger records an event of this kind (e.g. live, "
                    "superseded, verifying, rolled-back) instead of at a random moment")
    ap.add_argument("--cutover", help="the cutover binary (default target/debug/cutover)")
    ap.add_argument("--tasks-app", help="the tasks-app binary (default target/debug/tasks-app)")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build (or SKIP_BUILD=1)")
    ap.add_argument("--strict", action="store_true",
                    help="a trial that leaves processes running after `cutover down` is unclean")
    ap.add_argument("--keep", action="store_true", help="keep every trial's repo and state dir")
    ap.add_argument("--out", help="results as JSON lines (default: <work dir>/results.jsonl)")
    opts = ap.parse_args()
    trials = opts.trials if opts.trials is not None else (10 if opts.quick else 100)
    if trials < 1:
        ap.error("--trials must be at least 1")
    seed = opts.seed
    if seed is None and os.environ.get("SEED"):
        try:
            seed = int(os.environ["SEED"])
        except ValueError:
            ap.error("SEED=%r is not an integer" % os.environ["SEED"])
    if seed is None:
        seed = random.SystemRandom().randrange(1, 2 ** 31)

    snap, cutover, tasks_app = build(opts)
    work = tempfile.mkdtemp(prefix="cutover-chaos.")
    out_path = opts.out or os.path.join(work, "results.jsonl")
    code, version, _ = run([cutover, "--version"], work, 10)
    git_rev = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], ROOT, 10)[1].strip()
    log("chaos: %d trial(s), seeds %d..%d, %s (git %s), work dir %s" % (
        trials, seed, seed + trials - 1, version.strip(), git_rev, work))
    records = []
    t0 = time.monotonic()
    try:
        with open(out_path, "a") as out:
            for i in range(trials):
                trial = Trial(seed + i, opts, work, cutover, tasks_app)
                log("[%d/%d] seed=%d %s" % (i + 1, trials, trial.seed, trial.describe()))
                r = trial.run()
                records.append(r)
                out.write(json.dumps(r) + "\n")
                out.flush()
                verdict = "clean" if r["clean"] else "UNCLEAN: " + "; ".join(
                    "%s: %s" % (c, cat) for c, cat, _ in r["unclean"])
                log("      %s — killed %s; gap %s ms; action exit %s (expected %s); %.1f s%s" % (
                    verdict, r.get("killed") or "nothing (%s)" % r.get("missed"),
                    r.get("gap_ms", "-"), r.get("action_exit"), r.get("action_expected"),
                    r["seconds"], "".join("\n      note: " + n for n in r["notes"])))
                for c, cat, d in r["unclean"]:
                    log("      %s: %s" % (c, d))
    except KeyboardInterrupt:
        log("interrupted; reporting the %d finished trial(s)" % len(records))
    finally:
        shutil.rmtree(snap, ignore_errors=True)

    log("\n== chaos: %d trials in %.0f s, first seed %d" % (len(records), time.monotonic() - t0, seed))
    log("gap = the longest run of failed requests through the edge from the action's start (ms); "
        "void = setup failed before the kill; missed = the target did not exist; leaks = trials "
        "with processes left after `cutover down`\n")
    log(table(records, "kill", KILLS) + "\n")
    log(table(records, "action", ACTIONS) + "\n")
    by_cat = {}
    for r in records:
        for c, cat, d in r["unclean"]:
            by_cat.setdefault("%s: %s" % (c, cat), []).append(r)
    if by_cat:
        log("unclean trials by what failed (replay: SEED=<seed> python3 bench/chaos.py --trials 1):")
        for cat, rs in sorted(by_cat.items(), key=lambda kv: -len(kv[1])):
            log("  %-50s %3d  seeds %s" % (cat, len(rs), " ".join(
                "%d(%s/%s)" % (r["seed"], r["action"], r["kill"]) for r in rs)))
    leaks = {}
    for r in records:
        for kind in sorted({line.split(" ", 1)[0] for line in r.get("leaked", [])}):
            leaks.setdefault(kind, []).append(r)
    if leaks:
        log("processes left after `cutover down` (cutover's own given %.0f s to exit; the harness "
            "SIGKILLed them):" % LINGER_S)
        for kind, rs in sorted(leaks.items()):
            log("  %-12s in %3d trial(s): %s" % (kind, len(rs), " ".join(
                "%d(%s/%s)" % (r["seed"], r["action"], r["kill"]) for r in rs)))
    clean = sum(1 for r in records if r["clean"])
    log("\n%d of %d trials clean; results: %s" % (clean, len(records), out_path))
    sys.exit(0 if records and clean == len(records) and len(records) == trials else 1)


if __name__ == "__main__":
    main()
