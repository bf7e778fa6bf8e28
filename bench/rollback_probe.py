#!/usr/bin/env python3
"""Times one `cutover rollback` as a client sees it.

  rollback_probe.py URL OLD_VERSION NEW_VERSION -- cutover rollback staging

A poller thread sends GET URL in a tight loop (a fresh connection per request, so that no
proxy-side keep-alive state hides anything; each request takes ~0.1-0.3 ms here) and records
the first response whose body names OLD_VERSION. Once the poller has seen NEW_VERSION, the
main thread notes t0 and runs the command; the result is the time from t0 to the first old
response. Prints one JSON line. Bounded: gives up after 10 s.
"""
import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.parse


def main():
    url, old, new = sys.argv[1], sys.argv[2], sys.argv[3]
    cmd = sys.argv[sys.argv.index("--") + 1:]
    u = urllib.parse.urlsplit(url)
    state = {"seen_new": threading.Event(), "first_old": None, "requests": 0, "errors": 0,
             "other": 0, "stop": False}

    def poll():
        deadline = time.monotonic() + 10
        while not state["stop"] and time.monotonic() < deadline:
            try:
                c = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
                c.request("GET", u.path, headers={"Connection": "close"})
                r = c.getresponse()
                body = r.read().decode(errors="replace")
                t = time.time()
                c.close()
            except OSError:
                state["errors"] += 1
                continue
            state["requests"] += 1
            if r.status != 200:
                state["errors"] += 1
            elif new in body:
                state["seen_new"].set()
            elif old in body:
                if state["seen_new"].is_set() and state["first_old"] is None:
                    state["first_old"] = t
                    return
            else:
                state["other"] += 1

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    if not state["seen_new"].wait(5):
        print(json.dumps({"error": "the new version never answered"}))
        sys.exit(1)
    t0 = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t_cmd = time.time()
    th.join(10)
    state["stop"] = True
    first = state["first_old"]
    print(json.dumps({
        "rc": proc.returncode,
        "command_ms": round((t_cmd - t0) * 1000, 2),
        "first_old_ms": round((first - t0) * 1000, 2) if first else None,
        "t0": t0,
        "requests": state["requests"],
        "errors": state["errors"],
        "other": state["other"],
        "stderr": proc.stderr.decode(errors="replace")[-500:] if proc.returncode else "",
    }))


if __name__ == "__main__":
    main()
