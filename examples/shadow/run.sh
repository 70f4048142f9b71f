#!/usr/bin/env bash
# The shadow-variable example (exit status 0 only if every reply is the one expected).
#
# Run it through `make example-shadow`, which builds libhotagent.so, hotctl, connd and both
# builds of libconn.so first.
#
#  1. start connd (a keeper of named connections on libconn.so v1) with the agent preloaded,
#  2. open two connections, alice and bob, and send on them: v1 answers,
#  3. `hotctl reload v2/libconn.so`: v2 counts each connection's requests in a shadow variable
#     (hotagent_shadow_get_or_alloc), although struct conn has no field for it and the objects
#     were made by v1,
#  4. close alice: v2 reports her count and frees the shadow (hotagent_shadow_free); a new alice
#     (same address, as malloc reuses it) starts from request 1,
#  5. `hotctl rollback`: v1 answers again, on the same objects,
#  6. quit.
#
# Environment (all optional): AGENT, HOTCTL (default target/release/...), EXAMPLE_DIR (default
# target/examples/shadow), EXAMPLE_PACE (seconds between steps; default 0.5 on a terminal).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
abspath() { if [[ $1 == /* ]]; then printf '%s\n' "$1"; else printf '%s\n' "$PWD/$1"; fi; }
AGENT=$(abspath "${AGENT:-$ROOT/target/release/libhotagent.so}")
HOTCTL=$(abspath "${HOTCTL:-$ROOT/target/release/hotctl}")
DIR=$(abspath "${EXAMPLE_DIR:-$ROOT/target/examples/shadow}")
export HOTAGENT_LOG=${HOTAGENT_LOG:-info}
if [[ -n ${EXAMPLE_PACE:-} ]]; then PACE=$EXAMPLE_PACE; elif [[ -t 1 ]]; then PACE=0.5; else PACE=0; fi
cd "$ROOT"
short() { printf '%s\n' "${1#"$ROOT"/}"; }

for f in "$AGENT" "$HOTCTL" "$DIR/connd" "$DIR/v2/libconn.so"; do
    if [[ ! -e $f ]]; then
        echo "run.sh: $(short "$f") is missing; run \`make example-shadow\` (it builds everything first)" >&2
        exit 2
    fi
done

trap '' PIPE
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hotagent-shadow.XXXXXX")
export HOTAGENT_SOCKET_DIR=$WORK/sockets
mkdir -m 700 "$HOTAGENT_SOCKET_DIR"
PID=
FAILED=0

pace() { if [[ $PACE != 0 ]]; then sleep "$PACE"; fi; }
banner() { printf '\n==> %s\n' "$*"; pace; }

fail() {
    FAILED=1
    printf '\nEXAMPLE FAILED: %s\n' "$*" >&2
    [[ -s $WORK/connd.err ]] && { echo "---- connd's stderr ----" >&2; tail -n 30 "$WORK/connd.err" >&2; }
    exit 1
}

cleanup() {
    local status=$?
    if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && $FAILED -eq 0 && -s $WORK/connd.err ]]; then tail -n 30 "$WORK/connd.err" >&2; fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

run_hotctl() {
    local rc=0
    printf '$ hotctl %s\n' "$*"
    "$HOTCTL" "$@" >"$WORK/hotctl.out" 2>&1 || rc=$?
    sed 's/^/    /' "$WORK/hotctl.out"
    [[ $rc -eq 0 ]] || fail "\`hotctl $*\` failed (exit status $rc)"
    pace
}

# say LINE WANT: sends LINE to connd and checks its one reply is WANT.
say() {
    local reply
    kill -0 "$PID" 2>/dev/null || fail "connd has exited"
    printf '%s\n' "$1" >&"$TO" || fail "cannot write to connd"
    IFS= read -r -t 10 reply <&"$FROM" || fail "no reply to '$1' within 10 s"
    printf '    %-18s -> %s\n' "$1" "$reply"
    [[ $reply == "$2" ]] || fail "expected '$2', got '$reply'"
}

banner "Start connd (libconn.so v1) with the agent preloaded"
mkfifo "$WORK/in" "$WORK/out"
LD_PRELOAD=$AGENT "$DIR/connd" <"$WORK/in" >"$WORK/out" 2>"$WORK/connd.err" &
PID=$!
exec {TO}>"$WORK/in" {FROM}<"$WORK/out"
IFS= read -r -t 10 line <&"$FROM" || fail "connd did not start within 10 s"
[[ $line == ready ]] || fail "connd said '$line' instead of 'ready'"
for _ in $(seq 100); do
    [[ -S $HOTAGENT_SOCKET_DIR/$PID.sock ]] && break
    sleep 0.1
done
[[ -S $HOTAGENT_SOCKET_DIR/$PID.sock ]] || fail "no agent socket for pid $PID: did libhotagent.so load?"
echo "    connd pid $PID"

banner "Two connections, answered by v1"
say "open alice" "opened alice"
say "open bob" "opened bob"
say "send alice hello" "[alice] hello (v1)"

banner "Reload: v2 counts requests per connection, in a shadow variable"
run_hotctl --pid "$PID" reload "$(short "$DIR/v2/libconn.so")"
say "send alice hello" "[alice] hello (v2: request 1 on this connection)"
say "send alice again" "[alice] again (v2: request 2 on this connection)"
say "send bob hi" "[bob] hi (v2: request 1 on this connection)"

banner "Close alice: her count is reported and its shadow freed; a new alice starts at 1"
say "close alice" "closed alice (v2: 2 requests, shadow freed)"
say "open alice" "opened alice"
say "send alice back" "[alice] back (v2: request 1 on this connection)"
say "send bob more" "[bob] more (v2: request 2 on this connection)"

banner "Rollback: v1 again, same objects"
run_hotctl --pid "$PID" rollback
say "send bob bye" "[bob] bye (v1)"
say "quit" "bye"
exec {TO}>&-
status=0
wait "$PID" || status=$?
PID=
[[ $status -eq 0 ]] || fail "connd exited with status $status"

printf '\nEXAMPLE PASSED: one process; v2 added a per-connection counter without changing struct conn, freed it on close, and rolled back.\n'
