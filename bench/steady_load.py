#!/usr/bin/env python3
"""Steady load with a timeline: every failure is kept with its time, for events that happen
in the middle of a run (a node lost) rather than a total only.

  steady_load.py URL OUT.json [--threads 4] [--max-seconds 300]

Each thread sends GET URL over a fresh connection (timeout 5 s) in a loop until SIGINT/SIGTERM
or --max-seconds, then OUT.json gets: requests, failed, the slowest request, per version counts,
and every failure (time, what). A failure is anything but a 200.
"""
import http.client
import json
import signal
import sys
import threading
import time
import urllib.parse


def main():
    url, out = sys.argv[1], sys.argv[2]
    threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 4
    limit = float(sys.argv[sys.argv.index("--max-seconds") + 1]) if "--max-seconds" in sys.argv else 300
    u = urllib.parse.urlsplit(url)
    stop = threading.Event()
    lock = threading.Lock()
    stats = {"requests": 0, "failed": 0, "slowest_ms": 0.0, "slowest_at": None,
             "versions": {}, "failures": []}

    def run():
        deadline = time.monotonic() + limit
        while not stop.is_set() and time.monotonic() < deadline:
            t0 = time.monotonic()
            what = None
            version = None
            try:
                c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
                c.request("GET", u.path, headers={"Connection": "close"})
                r = c.getresponse()
                body = r.read().decode(errors="replace")
                c.close()
                if r.status != 200:
                    what = "HTTP %d" % r.status
                else:
                    try:
                        version = json.loads(body).get("version")
                    except ValueError:
                        version = "?"
            except (OSError, http.client.HTTPException) as e:
                what = type(e).__name__ + ": " + str(e)
            ms = (time.monotonic() - t0) * 1000
            with lock:
                stats["requests"] += 1
                if ms > stats["slowest_ms"]:
                    stats["slowest_ms"], stats["slowest_at"] = ms, time.time()
                if what:
                    stats["failed"] += 1
                    if len(stats["failures"]) < 200:
                        stats["failures"].append({"at": time.time(), "what": what})
                else:
                    stats["versions"][version] = stats["versions"].get(version, 0) + 1
            if what:
                time.sleep(0.01)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    started = time.time()
    ts = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    while any(t.is_alive() for t in ts):
        time.sleep(0.1)
    stats["seconds"] = round(time.time() - started, 1)
    stats["slowest_ms"] = round(stats["slowest_ms"], 1)
    with open(out, "w") as f:
        json.dump(stats, f)


if __name__ == "__main__":
    main()
