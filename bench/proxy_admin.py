#!/usr/bin/env python3
"""Sends one admin request to a running machine edge (`cutover proxy --edge-dir DIR`) and
prints the reply line; exits 1 when the edge refused it (a `"reply":"error"` line).

  proxy_admin.py EDGE_DIR '{"op":"set","route":{"owner":"/bench","env":"bench"},"listen":"127.0.0.1:PORT","upstreams":[{"addr":"127.0.0.1:UP","weight":100}]}'

The protocol (one JSON request per line, one reply line each) is defined in
crates/cutover-proxy/src/protocol.rs.

The socket path follows cutover_daemon::socket_path: $XDG_RUNTIME_DIR (if a dir) or /tmp,
then cutover-<uid>-<first 16 hex of sha256(canonical edge dir)>/edge.sock.
Waits up to 5 s for the socket to appear.
"""
import hashlib
import json
import os
import socket
import sys
import time


def socket_path(edge_dir):
    canonical = os.path.realpath(edge_dir)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base or not os.path.isdir(base):
        base = "/tmp"
    return os.path.join(base, "cutover-%d-%s" % (os.getuid(), digest), "edge.sock")


def main():
    edge_dir, request = sys.argv[1], sys.argv[2]
    path = socket_path(edge_dir)
    deadline = time.monotonic() + 5
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(path)
            break
        except OSError as e:
            s.close()
            if time.monotonic() > deadline:
                sys.exit("no admin socket at %s: %s" % (path, e))
            time.sleep(0.1)
    s.sendall(request.encode() + b"\n")
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        reply += chunk
    s.close()
    line = reply.decode().strip()
    print(line)
    try:
        refused = json.loads(line).get("reply") == "error"
    except ValueError:
        refused = True
    if refused:
        sys.exit(1)


if __name__ == "__main__":
    main()
