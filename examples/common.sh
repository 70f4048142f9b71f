# Shared by the patch-author API examples' run.sh (sourced, not run): one program driven line by
# line through two fifos, hotctl shown as it runs, every reply checked.
#
# The sourcing script sets NAME (its program's name in messages) and calls:
#   example_start EXE     start EXE with the agent preloaded; it must print "ready" first
#   banner TEXT           a step's title
#   say LINE WANT         send LINE, check the one reply is WANT
#   run_hotctl ARGS...    run hotctl against the program, show its output, fail on failure
#   example_finish TEXT   send quit, expect bye and a clean exit, print TEXT as the verdict
#
# Environment (all optional): AGENT, HOTCTL (default target/release/...), EXAMPLE_PACE (seconds
# between steps; default 0.5 on a terminal, 0 otherwise), HOTAGENT_LOG (default info).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
abspath() { if [[ $1 == /* ]]; then printf '%s\n' "$1"; else printf '%s\n' "$PWD/$1"; fi; }
AGENT=$(abspath "${AGENT:-$ROOT/target/release/libhotagent.so}")
HOTCTL=$(abspath "${HOTCTL:-$ROOT/target/release/hotctl}")
export HOTAGENT_LOG=${HOTAGENT_LOG:-info}
if [[ -n ${EXAMPLE_PACE:-} ]]; then PACE=$EXAMPLE_PACE; elif [[ -t 1 ]]; then PACE=0.5; else PACE=0; fi
short() { printf '%s\n' "${1#"$ROOT"/}"; }

# require FILE...: each must exist (built by the example's make target).
require() {
    local f
    for f in "$@"; do
        if [[ ! -e $f ]]; then
            echo "run.sh: $(short "$f") is missing; run \`make example-${EXAMPLE:-...}\` (it builds everything first)" >&2
            exit 2
        fi
    done
}

trap '' PIPE
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hotagent-example.XXXXXX")
export HOTAGENT_SOCKET_DIR=$WORK/sockets
mkdir -m 700 "$HOTAGENT_SOCKET_DIR"
PID=
FAILED=0

pace() { if [[ $PACE != 0 ]]; then sleep "$PACE"; fi; }
banner() { printf '\n==> %s\n' "$*"; pace; }

show_stderr() {
    if [[ -s $WORK/program.err ]]; then
        echo "---- $NAME's stderr ----" >&2
        tail -n 30 "$WORK/program.err" >&2
    fi
}

fail() {
    FAILED=1
    printf '\nEXAMPLE FAILED: %s\n' "$*" >&2
    show_stderr
    exit 1
}

example_cleanup() {
    local status=$?
    if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && $FAILED -eq 0 ]]; then show_stderr; fi
    rm -rf "$WORK"
    exit "$status"
}
trap example_cleanup EXIT
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

say() {
    local reply
    kill -0 "$PID" 2>/dev/null || fail "$NAME has exited"
    printf '%s\n' "$1" >&"$TO" || fail "cannot write to $NAME"
    IFS= read -r -t 10 reply <&"$FROM" || fail "no reply to '$1' within 10 s"
    printf '    %-18s -> %s\n' "$1" "$reply"
    [[ $reply == "$2" ]] || fail "expected '$2', got '$reply'"
}

example_start() {
    local line
    mkfifo "$WORK/in" "$WORK/out"
    LD_PRELOAD=$AGENT "$1" <"$WORK/in" >"$WORK/out" 2>"$WORK/program.err" &
    PID=$!
    exec {TO}>"$WORK/in" {FROM}<"$WORK/out"
    IFS= read -r -t 10 line <&"$FROM" || fail "$NAME did not start within 10 s"
    [[ $line == ready ]] || fail "$NAME said '$line' instead of 'ready'"
    for _ in $(seq 100); do
        [[ -S $HOTAGENT_SOCKET_DIR/$PID.sock ]] && break
        sleep 0.1
    done
    [[ -S $HOTAGENT_SOCKET_DIR/$PID.sock ]] || fail "no agent socket for pid $PID: did libhotagent.so load?"
    echo "    $NAME pid $PID"
}

example_finish() {
    local status=0
    say quit bye
    exec {TO}>&-
    wait "$PID" || status=$?
    PID=
    [[ $status -eq 0 ]] || fail "$NAME exited with status $status"
    printf '\nEXAMPLE PASSED: %s\n' "$*"
}
