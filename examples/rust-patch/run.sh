#!/usr/bin/env bash
# The Rust patch example (exit status 0 only if every reply is the one expected).
#
# Run it through `make example-rust`, which builds libhotagent.so, hotctl, counterd, the C
# libcounter.so v1 and the Rust v2 (target/release/libcounter.so, from this folder's crate).
#
#  1. start counterd on the C libcounter.so v1 with the agent preloaded, count 1, 2, 3,
#  2. `hotctl reload target/release/libcounter.so`: the Rust build's hotagent_migrate (made by
#     hotagent_api::hooks!) copies v1's private `total` into its own static: it goes on at 4,
#  3. `hotctl rollback`: its hotagent_unmigrate hands the count back: v1 goes on where v2 stopped.
#
# Environment (all optional): AGENT, HOTCTL (default target/release/...), EXAMPLE_DIR (default
# target/examples/rust-patch), PATCH (default target/release/libcounter.so), EXAMPLE_PACE.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
abspath() { if [[ $1 == /* ]]; then printf '%s\n' "$1"; else printf '%s\n' "$PWD/$1"; fi; }
AGENT=$(abspath "${AGENT:-$ROOT/target/release/libhotagent.so}")
HOTCTL=$(abspath "${HOTCTL:-$ROOT/target/release/hotctl}")
DIR=$(abspath "${EXAMPLE_DIR:-$ROOT/target/examples/rust-patch}")
PATCH=$(abspath "${PATCH:-$ROOT/target/release/libcounter.so}")
export HOTAGENT_LOG=${HOTAGENT_LOG:-info}
if [[ -n ${EXAMPLE_PACE:-} ]]; then PACE=$EXAMPLE_PACE; elif [[ -t 1 ]]; then PACE=0.5; else PACE=0; fi
cd "$ROOT"
short() { printf '%s\n' "${1#"$ROOT"/}"; }

for f in "$AGENT" "$HOTCTL" "$DIR/counterd" "$PATCH"; do
    if [[ ! -e $f ]]; then
        echo "run.sh: $(short "$f") is missing; run \`make example-rust\` (it builds everything first)" >&2
        exit 2
    fi
done

trap '' PIPE
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hotagent-rust.XXXXXX")
export HOTAGENT_SOCKET_DIR=$WORK/sockets
mkdir -m 700 "$HOTAGENT_SOCKET_DIR"
PID=
FAILED=0

pace() { if [[ $PACE != 0 ]]; then sleep "$PACE"; fi; }
banner() { printf '\n==> %s\n' "$*"; pace; }

fail() {
    FAILED=1
    printf '\nEXAMPLE FAILED: %s\n' "$*" >&2
    [[ -s $WORK/counterd.err ]] && { echo "---- counterd's stderr ----" >&2; tail -n 30 "$WORK/counterd.err" >&2; }
    exit 1
}

cleanup() {
    local status=$?
    if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && $FAILED -eq 0 && -s $WORK/counterd.err ]]; then tail -n 30 "$WORK/counterd.err" >&2; fi
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

# say LINE WANT: sends LINE to counterd and checks its one reply is WANT.
say() {
    local reply
    kill -0 "$PID" 2>/dev/null || fail "counterd has exited"
    printf '%s\n' "$1" >&"$TO" || fail "cannot write to counterd"
    IFS= read -r -t 10 reply <&"$FROM" || fail "no reply to '$1' within 10 s"
    printf '    %-8s -> %s\n' "$1" "$reply"
    [[ $reply == "$2" ]] || fail "expected '$2', got '$reply'"
}

banner "Start counterd (the C libcounter.so v1) with the agent preloaded"
mkfifo "$WORK/in" "$WORK/out"
LD_PRELOAD=$AGENT "$DIR/counterd" <"$WORK/in" >"$WORK/out" 2>"$WORK/counterd.err" &
PID=$!
exec {TO}>"$WORK/in" {FROM}<"$WORK/out"
IFS= read -r -t 10 line <&"$FROM" || fail "counterd did not start within 10 s"
[[ $line == ready ]] || fail "counterd said '$line' instead of 'ready'"
for _ in $(seq 100); do
    [[ -S $HOTAGENT_SOCKET_DIR/$PID.sock ]] && break
    sleep 0.1
done
[[ -S $HOTAGENT_SOCKET_DIR/$PID.sock ]] || fail "no agent socket for pid $PID: did libhotagent.so load?"
say version "C v1"
say next 1
say next 2
say next 3

banner "Reload the Rust build: its hotagent_migrate takes v1's private count over"
run_hotctl --pid "$PID" reload "$(short "$PATCH")"
say version "Rust v2"
say next 4
say next 5

banner "Rollback: its hotagent_unmigrate hands the count back to v1"
run_hotctl --pid "$PID" rollback
say version "C v1"
say next 6
say quit bye
exec {TO}>&-
status=0
wait "$PID" || status=$?
PID=
[[ $status -eq 0 ]] || fail "counterd exited with status $status"

printf '\nEXAMPLE PASSED: C v1 -> Rust v2 -> C v1 in one process, the count carried both ways.\n'
