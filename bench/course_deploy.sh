#!/usr/bin/env bash
# The course's deploy.sh approach, on processes instead of containers, for comparison:
# stop the running app, start the new one in the background with PORT=..., then poll /health
# with curl every 1 s until it answers 200 (at most 30 tries).
#
#   course_deploy.sh APP_BINARY PORT PIDFILE [poll-first|sleep-first]
#
# poll-first (default): the first curl runs right after the start, which, for a bare process,
# usually wins the race with the app's bind (best case for this approach). sleep-first: waits
# 1 s before the first curl, as scripts written for containers (`docker run -d; sleep 1; curl`)
# do.
set -u
app="$1" port="$2" pidfile="$3" mode="${4:-poll-first}"
if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    # wait (bounded) for the port to be free
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/health" || break
        sleep 0.01
    done
fi
PORT="$port" APP_VERSION=course setsid "$app" >"$pidfile.log" 2>&1 </dev/null &
echo $! >"$pidfile"
[ "$mode" = sleep-first ] && sleep 1
for _ in $(seq 30); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/health"; then
        exit 0
    fi
    sleep 1
done
echo "deploy failed: /health never answered 200" >&2
exit 1
