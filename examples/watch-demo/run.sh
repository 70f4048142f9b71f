#!/usr/bin/env bash
# make watch-demo: the game loop runs under the agent, `hotctl watch` watches a build of libdraw.so,
# the drawing source is edited and rebuilt, and the frames change while the game keeps running.
# Non-interactive; fails (exit 1) if any step does not happen within its deadline.
set -euo pipefail
: "${AGENT:?}" "${HOTCTL:?}" "${EXAMPLE_DIR:?}"
AGENT=$(realpath "$AGENT") HOTCTL=$(realpath "$HOTCTL") EXAMPLE_DIR=$(realpath "$EXAMPLE_DIR")
CC=${CC:-gcc}
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hotagent-watch-demo.XXXXXX")
export HOTAGENT_SOCKET_DIR=$WORK/sockets
mkdir -m 700 "$HOTAGENT_SOCKET_DIR"
GAME= WATCH=
cleanup() {
    [[ -n $WATCH ]] && kill "$WATCH" 2>/dev/null || true
    [[ -n $GAME ]] && kill "$GAME" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# wait_for FILE PATTERN WHAT: poll FILE for a line matching PATTERN, 10 s at most.
wait_for() {
    local i
    for i in $(seq 200); do
        if grep -qE "$2" "$1" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "watch-demo: $3 did not happen within 10 s" >&2
    echo "--- $1:" >&2; tail -n 5 "$1" >&2 || true
    exit 1
}

echo "== the game runs under the agent, drawing with libdraw.so as built"
LD_PRELOAD=$AGENT "$EXAMPLE_DIR/game" > "$WORK/frames" &
GAME=$!
wait_for "$WORK/frames" '^frame .*o' "the first frame"
tail -n 3 "$WORK/frames"

echo "== hotctl watch $WORK/build/libdraw.so"
mkdir "$WORK/build"
cp "$SRC/draw.c" "$SRC/draw.h" "$WORK/"
"$HOTCTL" --pid "$GAME" watch "$WORK/build/libdraw.so" > "$WORK/watch.out" 2> "$WORK/watch.err" &
WATCH=$!
wait_for "$WORK/watch.err" '^hotctl: watching ' "the watch start"

echo "== edit draw.c (the ball becomes '@') and rebuild"
sed -i "s/#define BALL 'o'/#define BALL '@'/" "$WORK/draw.c"
"$CC" -O2 -fPIC -shared -Wl,-soname,libdraw.so -o "$WORK/build/libdraw.so" "$WORK/draw.c"
wait_for "$WORK/watch.out" '^generation 1: ' "the reload"
cat "$WORK/watch.out"
wait_for "$WORK/frames" '^frame .*@' "a frame drawn by the new build"
tail -n 3 "$WORK/frames"

echo "== stop the watch (SIGTERM): it exits 0, the game keeps the new drawing"
kill -TERM "$WATCH"
status=0; wait "$WATCH" || status=$?
WATCH=
if [[ $status != 0 ]]; then echo "watch-demo: hotctl watch exited $status" >&2; exit 1; fi
kill -0 "$GAME"
echo "watch-demo: ok (same game pid $GAME, frames changed while it ran)"
