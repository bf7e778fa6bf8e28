#!/usr/bin/env python3
"""Parses wrk --latency output.

  wrkstat.py FILE          -> one line: rps p50_ms p99_ms requests socket_errors non2xx
  wrkstat.py --json FILE   -> the same as a JSON object
"""
import json
import re
import sys


def to_ms(value):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", value)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def parse(text):
    out = {"rps": float("nan"), "p50_ms": float("nan"), "p99_ms": float("nan"),
           "requests": 0, "socket_errors": 0, "non2xx": 0}
    m = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    if m:
        out["p50_ms"] = to_ms(m.group(1))
    m = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    if m:
        out["p99_ms"] = to_ms(m.group(1))
    m = re.search(r"(\d+) requests in", text)
    if m:
        out["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["socket_errors"] = sum(int(g) for g in m.groups())
        out["socket_errors_detail"] = "connect %s, read %s, write %s, timeout %s" % m.groups()
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    return out


def main():
    args = sys.argv[1:]
    as_json = False
    if args and args[0] == "--json":
        as_json, args = True, args[1:]
    with open(args[0]) as f:
        r = parse(f.read())
    if as_json:
        print(json.dumps(r))
    else:
        print("%.1f %.3f %.3f %d %d %d" % (r["rps"], r["p50_ms"], r["p99_ms"], r["requests"],
                                           r["socket_errors"], r["non2xx"]))


if __name__ == "__main__":
    main()
