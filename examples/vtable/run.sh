#!/usr/bin/env bash
# The seed's nsIBase example (shared/seeds/003) on Linux x86-64, checked line for line.
#
# It builds nothing: run it through `make example-vtable`. The test program, linked against
# libimp.so version 1, makes two objects and calls them; at its swap point `hotctl reload`
# switches it to version 2, whose hotagent_prepare registers the nsImp1 -> nsImp2 converters:
# each old object is converted on its first call, then runs the new code. An object made after
# the reload is never converted. At the second swap point `hotctl rollback` takes it back, and
# every object is converted back on its first call. The output must be expected.txt, with the
# objects' addresses in place of O1, O2, O3.
#
# Environment (optional): AGENT, HOTCTL (default target/release/...), EXAMPLE_DIR (default
# target/examples/vtable), EXAMPLE_KEEP=1 keeps the temporary folder.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
abspath() { if [[ $1 == /* ]]; then printf '%s\n' "$1"; else printf '%s\n' "$PWD/$1"; fi; }
AGENT=$(abspath "${AGENT:-$ROOT/target/release/libhotagent.so}")
HOTCTL=$(abspath "${HOTCTL:-$ROOT/target/release/hotctl}")
DIR=$(abspath "${EXAMPLE_DIR:-$ROOT/target/examples/vtable}")
export HOTAGENT_LOG=${HOTAGENT_LOG:-info}

for f in "$AGENT" "$HOTCTL" "$DIR/test" "$DIR/v1/libimp.so" "$DIR/v2/libimp.so"; do
    [[ -e $f ]] || { echo "run.sh: $f is missing; run \`make example-vtable\`" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hotagent-vtable.XXXXXX")
export HOTAGENT_SOCKET_DIR=$WORK/sockets
mkdir -m 700 "$HOTAGENT_SOCKET_DIR"
PID=
cleanup() {
    local status=$?
    if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null || true; fi
    if [[ ${EXAMPLE_KEEP:-0} == 1 ]]; then echo "(kept $WORK)" >&2; else rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT

fail() {
    printf '\nEXAMPLE FAILED: %s\n' "$*" >&2
    for f in "$WORK/out" "$WORK/err"; do
        [[ -s $f ]] && { echo "---- $(basename "$f") ----" >&2; cat "$f" >&2; }
    done
    exit 1
}

# wait_for LINE: until the program has printed LINE (10 s at most).
wait_for() {
    for _ in $(seq 200); do
        grep -qxF "$1" "$WORK/out" && return 0
        kill -0 "$PID" 2>/dev/null || fail "the program exited before printing '$1'"
        sleep 0.05
    done
    fail "the program did not print '$1' within 10 s"
}

mkfifo "$WORK/in"
: >"$WORK/out"
LD_PRELOAD=$AGENT "$DIR/test" <"$WORK/in" >"$WORK/out" 2>"$WORK/err" &
PID=$!
exec {IN}>"$WORK/in"

hotctl() {
    echo "\$ hotctl $*"
    "$HOTCTL" --pid "$PID" "$@" >"$WORK/hotctl.out" 2>&1 || { cat "$WORK/hotctl.out"; fail "hotctl $* failed"; }
    sed 's/^/    /' "$WORK/hotctl.out"
}

wait_for "swap point: reload"
for _ in $(seq 200); do [[ -S $HOTAGENT_SOCKET_DIR/$PID.sock ]] && break; sleep 0.05; done
hotctl reload "$DIR/v2/libimp.so"
echo >&"$IN"
wait_for "swap point: rollback"
hotctl rollback
echo >&"$IN"
exec {IN}>&-
status=0
wait "$PID" || status=$?
PID=
[[ $status -eq 0 ]] || fail "the program exited with status $status"

# The addresses the program printed stand for O1, O2, O3 in expected.txt.
first=$(head -n 1 "$WORK/out")
[[ $first =~ ^create\ objects\ of\ version\ 1:\ (0x[0-9a-f]+),\ (0x[0-9a-f]+)$ ]] ||
    fail "unexpected first line: $first"
o1=${BASH_REMATCH[1]} o2=${BASH_REMATCH[2]}
third=$(grep '^create an object of version 2: ' "$WORK/out" || true)
o3=${third##*: }
[[ $o3 =~ ^0x[0-9a-f]+$ ]] || fail "no 'create an object of version 2' line"
sed -e "s/O1/$o1/g" -e "s/O2/$o2/g" -e "s/O3/$o3/g" "$HERE/expected.txt" >"$WORK/expected"
echo "---- program output ----"
cat "$WORK/out"
diff -u "$WORK/expected" "$WORK/out" >"$WORK/diff" || { cat "$WORK/diff"; fail "the output differs from expected.txt"; }
echo
echo "EXAMPLE PASSED: objects converted 1 -> 2 on their first call, a new object never converted, all converted back on rollback."
