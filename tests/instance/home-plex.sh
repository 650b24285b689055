#!/bin/sh
# The home Plex of the demo and the bootstrap tests: the Plex double on a
# home app-support folder, started and stopped the way bootstrap's
# `control = "command"` expects (start returns once launched; stop returns
# once the process is gone).
#
#   home-plex.sh start|stop CTL_DIR
#
# CTL_DIR/env sets BIN (plex-double), APP (the app-support folder) and ADDR
# (host:port); the pid and Plex's console log live in CTL_DIR too.
set -eu
action=$1
CTL=$2
. "$CTL/env"

case "$action" in
start)
    if [ -f "$CTL/pid" ] && kill -0 "$(cat "$CTL/pid")" 2>/dev/null; then
        exit 0
    fi
    setsid "$BIN" server --app-support "$APP" --listen "$ADDR" </dev/null >>"$CTL/plex.log" 2>&1 &
    echo $! >"$CTL/pid"
    ;;
stop)
    [ -f "$CTL/pid" ] || exit 0
    pid=$(cat "$CTL/pid")
    kill "$pid" 2>/dev/null || true
    i=0
    # Gone, or a zombie nobody reaps: either way it no longer holds the DB.
    while [ -e "/proc/$pid" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]; do
        i=$((i + 1))
        if [ "$i" -gt 400 ]; then
            echo "plex (pid $pid) did not stop" >&2
            exit 1
        fi
        sleep 0.05
    done
    rm -f "$CTL/pid"
    ;;
*)
    echo "usage: home-plex.sh start|stop CTL_DIR" >&2
    exit 2
    ;;
esac
