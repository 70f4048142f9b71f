#!/usr/bin/env bash
# A global struct that grows (issue 10): libstats.so v2's `struct stats` is three times
# v1's. Its hotagent_migrate carries the request count over; hotagent_unmigrate hands it back
# on rollback. The output must be expected.txt.
#
# Run it through `make example-migrate`. Environment (optional): AGENT, HOTCTL, EXAMPLE_DIR
# (default target/examples/migrate), EXAMPLE_KEEP=1 keeps the temporary folder.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
abspath() { if [[ $1 == /* ]]; then printf '%s\n' "$1"; else printf '%s\n' "$PWD/$1"; fi; }
AGENT=$(abspath "${AGENT:-$ROOT/target/release/libhotagent.so}")
HOTCTL=$(abspath "${HOTCTL:-$ROOT/target/release/hotctl}")
DIR=$(abspath "${EXAMPLE_DIR:-$ROOT/target/examples/migrate}")

for f in "$AGENT" "$HOTCTL" "$DIR/server" "$DIR/v1/libstats.so" "$DIR/v2/libstats.so"; do
    [[ -e $f ]] || { echo "run.sh: $f is missing; run \`make example-migrate\`" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hotagent-migrate.XXXXXX")
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
# lines N: until the program has printed N lines (10 s at most).
lines() {
    for _ in $(seq 200); do
        [[ $(wc -l <"$WORK/out") -ge $1 ]] && return 0
        kill -0 "$PID" 2>/dev/null || fail "the program exited early"
        sleep 0.05
    done
    fail "the program did not print $1 line(s) within 10 s"
}
hotctl() {
    echo "\$ hotctl $*"
    "$HOTCTL" --pid "$PID" "$@" >"$WORK/hotctl.out" 2>&1 || { cat "$WORK/hotctl.out"; fail "hotctl $* failed"; }
    sed 's/^/    /' "$WORK/hotctl.out"
}

mkfifo "$WORK/in"
: >"$WORK/out"
LD_PRELOAD=$AGENT "$DIR/server" <"$WORK/in" >"$WORK/out" 2>"$WORK/err" &
PID=$!
exec {IN}>"$WORK/in"
printf '100\n200\n300\n\n' >&"$IN"
lines 1
for _ in $(seq 200); do [[ -S $HOTAGENT_SOCKET_DIR/$PID.sock ]] && break; sleep 0.05; done
hotctl reload "$DIR/v2/libstats.so"
printf '300\n400\n\n' >&"$IN"
lines 2
hotctl rollback
printf '50\n\n' >&"$IN"
lines 3
exec {IN}>&-
status=0
wait "$PID" || status=$?
PID=
[[ $status -eq 0 ]] || fail "the program exited with status $status"
echo "---- program output ----"
cat "$WORK/out"
diff -u "$HERE/expected.txt" "$WORK/out" || fail "the output differs from expected.txt"
echo
echo "EXAMPLE PASSED: the grown struct took the count over, and handed it back on rollback."
