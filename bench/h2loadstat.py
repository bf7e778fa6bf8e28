#!/usr/bin/env python3
"""Sums the h2load reports of one file (a loop appends one report per h2load run) and splits
h2load's failures by what became of each request.

  h2loadstat.py FILE SECONDS
    -> one line: rps answered failed errored non2xx unanswered unsent unstarted runs broken

From each report's lines
  requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
  status codes: N 2xx, N 3xx, N 4xx, N 5xx
it sums:
  answered  2xx+3xx+4xx+5xx: requests that got a response
  failed    h2load's own count: errored + answers that are not 2xx/3xx
  errored   h2load's count of requests that got no answer, for any reason
  non2xx    failed - errored
and splits errored with FILE.noanswer (the --log-file lines of the requests h2load closed
without an answer, status -1: the time the request was sent, in µs since the epoch, or 0 when
it never was):
  unanswered  requests sent that got no answer: closed without one after they were sent (reset,
              refused by a GOAWAY's last stream id, the connection closed), plus those still in
              flight when their connection ended (started - done)
  unsent      requests h2load queued on a connection that had received a GOAWAY: nghttp2 never
              sends them (time 0 in the log), and h2load counts them errored
  unstarted   total - started: requests h2load never started because a GOAWAY had come (it
              starts no request on that connection then, and opens no other: h2load 1.52
              reconnects only after an HTTP/1.1 `Connection: close`) or their connection had
              ended or failed to connect
errored = unanswered + unsent + unstarted (said on stderr when not). rps = answered / SECONDS. runs counts the reports;
broken the h2load runs that exited non-zero (a line `h2load exited N` the loop wrote).
"""
import re
import sys


def main():
    path, seconds = sys.argv[1], float(sys.argv[2])
    text = open(path, errors="replace").read()
    answered = failed = errored = runs = in_flight = unstarted = 0
    for m in re.finditer(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout", text, re.M):
        total, started, done = int(m.group(1)), int(m.group(2)), int(m.group(3))
        runs += 1
        failed += int(m.group(5))
        errored += int(m.group(6))
        in_flight += started - done
        unstarted += total - started
    for m in re.finditer(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M):
        answered += sum(int(g) for g in m.groups())
    broken = len(re.findall(r"^h2load exited \d+", text, re.M))
    closed_sent = closed_unsent = 0
    try:
        for line in open(path + ".noanswer"):
            fields = line.split("\t")
            if len(fields) >= 2 and fields[1].strip() == "-1":
                if int(fields[0]) > 0:
                    closed_sent += 1
                else:
                    closed_unsent += 1
    except FileNotFoundError:
        pass
    unanswered = closed_sent + in_flight
    if unanswered + closed_unsent + unstarted != errored:
        print("h2loadstat: %s: errored %d is not unanswered %d + unsent %d + unstarted %d: "
              "h2load's output is not what this script reads" % (
                  path, errored, unanswered, closed_unsent, unstarted), file=sys.stderr)
    print("%.1f %d %d %d %d %d %d %d %d %d" % (
        answered / seconds if seconds else float("nan"), answered, failed, errored,
        failed - errored, unanswered, closed_unsent, unstarted, runs, broken))


if __name__ == "__main__":
    main()
