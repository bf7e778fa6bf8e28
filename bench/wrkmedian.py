#!/usr/bin/env python3
"""Medians of the wrk runs that bench/lib.sh's wrk_one recorded, and cutover/nginx ratios.

  wrkmedian.py RESULTS TARGET...     # e.g. RESULTS direct cutover nginx

Each RESULTS line: run mode target rps p50ms p99ms requests sockerr non2xx cpu_s.
"""
import statistics
import sys


def main():
    results, targets = sys.argv[1], sys.argv[2:]
    rows = [line.split() for line in open(results) if line.strip()]
    modes = [m for m in ("keepalive", "close") if any(r[1] == m for r in rows)]
    med = {}
    for mode in modes:
        for target in targets:
            rs = [r for r in rows if r[1] == mode and r[2] == target]
            if not rs:
                continue
            col = lambda i: statistics.median(float(r[i]) for r in rs)
            tot = lambda i: sum(int(r[i]) for r in rs)
            med[(mode, target)] = dict(
                rps=col(3), p50=col(4), p99=col(5), err=tot(7), non2xx=tot(8),
                cpu_us=statistics.median(float(r[9]) * 1e6 / max(int(r[6]), 1) for r in rs))
    print("%-10s %-8s %10s %9s %9s %8s %8s %12s" % (
        "mode", "target", "req/s", "p50 ms", "p99 ms", "sockerr", "non2xx", "cpu us/req"))
    for (mode, target), m in med.items():
        print("%-10s %-8s %10.0f %9.3f %9.3f %8d %8d %12.1f" % (
            mode, target, m["rps"], m["p50"], m["p99"], m["err"], m["non2xx"], m["cpu_us"]))
    print()
    for mode in modes:
        c, n = med.get((mode, "cutover")), med.get((mode, "nginx"))
        if c and n:
            print("%-10s cutover/nginx: req/s %.2f, p50 %.2f, p99 %.2f, proxy cpu/req %.2f" % (
                mode, c["rps"] / n["rps"], c["p50"] / n["p50"], c["p99"] / n["p99"],
                c["cpu_us"] / n["cpu_us"]))


main()
