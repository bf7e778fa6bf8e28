#!/usr/bin/env bash
# Runs every benchmark in turn (about 8 minutes on 2 cores) and keeps each one's output in
# $OUT_DIR (default /tmp/cutover-bench-results). Builds once, first.
set -uo pipefail
cd "$(dirname "$0")"
OUT_DIR="${OUT_DIR:-/tmp/cutover-bench-results}"
mkdir -p "$OUT_DIR"
source ./lib.sh
set +e
build_release
rm -rf "$BIN_SNAP"
for b in proxy-vs-nginx zero-downtime rollback-time deploy-overhead idle-rss; do
    log "== $b"
    SKIP_BUILD=1 timeout 900 "./$b.sh" >"$OUT_DIR/$b.txt" 2>"$OUT_DIR/$b.log"
    echo "exit $?" >>"$OUT_DIR/$b.txt"
    sed -n '/^== /,$p' "$OUT_DIR/$b.txt"
done
