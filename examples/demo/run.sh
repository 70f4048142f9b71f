#!/usr/bin/env bash
# The hotagent demo, which doubles as a smoke check (exit status 0 only if every reply is the
# one expected).
#
# It builds nothing: run it through `make demo`, which builds libhotagent.so, hotctl, the demo
# server and client and both builds of libgreet.so first.
#
#  1. start the demo server with the agent preloaded (private socket folder, free port),
#  2. open ONE client connection and keep it for the whole demo,
#  3. requests answered by libgreet v1,
#  4. `hotctl reload target/demo/v2/libgreet.so`: the same connection now gets v2 answers,
#     from the same pid, with the server's request counters carrying on,
#  5. `hotctl rollback`: v1 answers again, still the same connection,
#  6. stop the client and the server (SIGTERM; the server must exit cleanly).
#
# Environment (all optional): AGENT, HOTCTL (default target/release/...), DEMO_DIR (default
# target/demo), HOTAGENT_LOG (default info), DEMO_PACE (seconds between steps, for reading
# along; default 0.5 on a terminal, 0 otherwise), DEMO_KEEP=1 keeps the temporary folder.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Paths given relative are relative to the caller's working directory.
abspath() { if [[ $1 == /* ]]; then printf '%s\n' "$1"; else printf '%s\n' "$PWD/$1"; fi; }
AGENT=$(abspath "${AGENT:-$ROOT/target/release/libhotagent.so}")
HOTCTL=$(abspath "${HOTCTL:-$ROOT/target/release/hotctl}")
DEMO_DIR=$(abspath "${DEMO_DIR:-$ROOT/target/demo}")
SERVER_BIN=$DEMO_DIR/server
CLIENT_BIN=$DEMO_DIR/client
V2_LIB=$DEMO_DIR/v2/libgreet.so
export HOTAGENT_LOG=${HOTAGENT_LOG:-info}
if [[ -n ${DEMO_PACE:-} ]]; then PACE=$DEMO_PACE; elif [[ -t 1 ]]; then PACE=0.5; else PACE=0; fi
cd "$ROOT"

# Shown without the repository prefix, for reading.
short() { printf '%s\n' "${1#"$ROOT"/}"; }

for f in "$AGENT" "$HOTCTL" "$SERVER_BIN" "$CLIENT_BIN" "$V2_LIB"; do
    if [[ ! -e $f ]]; then
        echo "run.sh: $(short "$f") is missing; run \`make demo\` (it builds everything first)" >&2
        exit 2
    fi
done

# A write to a client that died must fail with an error we report, not kill this script.
trap '' PIPE

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hotagent-demo.XXXXXX")
export HOTAGENT_SOCKET_DIR=$WORK/sockets
mkdir -m 700 "$HOTAGENT_SOCKET_DIR"
SERVER_PID=
CLIENT_PID=
FAILED=0

# --- output helpers -------------------------------------------------------------------------

banner() {
    printf '\n==> %s\n' "$*"
    pace
}

pace() {
    if [[ $PACE != 0 ]]; then sleep "$PACE"; fi
}

show_logs() {
    local f
    for f in "$WORK/server.out" "$WORK/server.err" "$WORK/client.err"; do
        if [[ -s $f ]]; then
            echo "---- last lines of $(basename "$f") ----" >&2
            tail -n 30 "$f" >&2
        fi
    done
}

fail() {
    FAILED=1
    printf '\nDEMO FAILED: %s\n' "$*" >&2
    show_logs
    exit 1
}

cleanup() {
    local status=$?
    if [[ -n $CLIENT_PID ]] && kill -0 "$CLIENT_PID" 2>/dev/null; then
        kill "$CLIENT_PID" 2>/dev/null || true
    fi
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && $FAILED -eq 0 ]]; then
        show_logs
    fi
    if [[ ${DEMO_KEEP:-0} == 1 ]]; then
        echo "(kept $WORK)" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs hotctl, showing the command and its output.
run_hotctl() {
    local rc=0
    printf '$ hotctl %s\n' "$*"
    "$HOTCTL" "$@" >"$WORK/hotctl.out" 2>&1 || rc=$?
    sed 's/^/    /' "$WORK/hotctl.out"
    [[ $rc -eq 0 ]] || fail "\`hotctl $*\` failed (exit status $rc)"
    pace
}

# --- the persistent client ------------------------------------------------------------------

LAST_REQ=0 # the server's request counter in the last reply
LAST_MSG=0 # the connection's request counter in the last reply
CONN=      # the connection number of the persistent connection

# ask NAME VERSION: sends NAME on the persistent connection and checks the reply is the
# answer of libgreet VERSION (v1 or v2), from the same process and the same connection, with
# both request counters one further than in the previous reply.
ask() {
    local name=$1 version=$2 reply want
    kill -0 "$CLIENT_PID" 2>/dev/null || fail "the client has exited"
    printf '%s\n' "$name" >&"$TO_CLIENT" || fail "cannot write to the client"
    IFS= read -r -t 10 reply <&"$FROM_CLIENT" || fail "no reply to '$name' within 10 s"
    printf '    %-8s -> %s\n' "$name" "$reply"

    if [[ $name == /version ]]; then
        want="libgreet $version"
    elif [[ $version == v1 ]]; then
        want="hello, $name (v1)"
    else
        want="HELLO, ${name^^}! (v2)"
    fi
    [[ $reply =~ ^\[pid\ ([0-9]+),\ req\ ([0-9]+),\ conn\ ([0-9]+),\ msg\ ([0-9]+)\]\ (.*)$ ]] ||
        fail "malformed reply: $reply"
    local pid=${BASH_REMATCH[1]} req=${BASH_REMATCH[2]} conn=${BASH_REMATCH[3]}
    local msg=${BASH_REMATCH[4]} text=${BASH_REMATCH[5]}
    [[ $pid == "$SERVER_PID" ]] || fail "reply from pid $pid, expected pid $SERVER_PID"
    [[ -z $CONN || $conn == "$CONN" ]] || fail "reply on connection $conn, expected $CONN"
    [[ $req -eq $((LAST_REQ + 1)) ]] || fail "request counter went $LAST_REQ -> $req"
    [[ $msg -eq $((LAST_MSG + 1)) ]] || fail "connection counter went $LAST_MSG -> $msg"
    [[ $text == "$want" ]] || fail "expected '$want' from libgreet $version, got '$text'"
    CONN=$conn
    LAST_REQ=$req
    LAST_MSG=$msg
}

# --- the demo -------------------------------------------------------------------------------

banner "Start the demo server with the agent preloaded"
echo "\$ HOTAGENT_SOCKET_DIR=$HOTAGENT_SOCKET_DIR LD_PRELOAD=$(short "$AGENT") $(short "$SERVER_BIN") 0"
: >"$WORK/server.out" # exists before the server's shell opens it, so the wait below can read it
LD_PRELOAD=$AGENT "$SERVER_BIN" 0 >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!

PORT=
for _ in $(seq 100); do
    line=$(head -n 1 "$WORK/server.out" 2>/dev/null || true)
    if [[ $line =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]]; then
        PORT=${BASH_REMATCH[1]}
        break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || fail "the server exited before listening"
    sleep 0.1
done
[[ -n $PORT ]] || fail "the server did not print its 'listening on' line within 10 s"
echo "    server pid $SERVER_PID, listening on 127.0.0.1:$PORT, linked against $(short "$DEMO_DIR")/v1/libgreet.so"

banner "A short-lived client comes and goes (connection 1)"
reply=$(echo "warm-up" | "$CLIENT_BIN" "$PORT" 2>>"$WORK/client.err") ||
    fail "the short-lived client failed"
printf '    %-8s -> %s\n' warm-up "$reply"
[[ $reply == "[pid $SERVER_PID, req 1, conn 1, msg 1] hello, warm-up (v1)" ]] ||
    fail "unexpected reply to the short-lived client: $reply"
LAST_REQ=1

banner "Open ONE persistent connection and keep it for the whole demo"
# The client reads names from one fifo and writes replies to another; this script holds the
# other ends, so it can send one name, read its one reply, run hotctl, and go on.
mkfifo "$WORK/to-client" "$WORK/from-client"
"$CLIENT_BIN" "$PORT" <"$WORK/to-client" >"$WORK/from-client" 2>>"$WORK/client.err" &
CLIENT_PID=$!
exec {TO_CLIENT}>"$WORK/to-client" {FROM_CLIENT}<"$WORK/from-client"
echo "    client pid $CLIENT_PID; each line below is: name sent -> reply"
echo "    reply: [pid P, req = requests served by the server, conn = connection number, msg = requests on this connection]"
for n in alice bob carol; do ask "$n" v1; done
ask /version v1
REQ_BEFORE=$LAST_REQ

banner "Ask the agent inside pid $SERVER_PID about itself"
for _ in $(seq 100); do
    [[ -S $HOTAGENT_SOCKET_DIR/$SERVER_PID.sock ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || fail "the server has exited"
    sleep 0.1
done
[[ -S $HOTAGENT_SOCKET_DIR/$SERVER_PID.sock ]] ||
    fail "no agent socket at $HOTAGENT_SOCKET_DIR/$SERVER_PID.sock: did libhotagent.so load?"
run_hotctl --pid "$SERVER_PID" status

banner "Reload: switch the running server to libgreet v2"
run_hotctl --pid "$SERVER_PID" reload "$(short "$V2_LIB")"

banner "Same connection, after the reload: v2 answers"
for n in dave erin; do ask "$n" v2; done
ask /version v2
echo "    same pid $SERVER_PID, same connection (conn $CONN), request counter kept: $REQ_BEFORE -> $((REQ_BEFORE + 1))"
run_hotctl --pid "$SERVER_PID" status
REQ_BEFORE=$LAST_REQ

banner "Rollback: back to libgreet v1"
run_hotctl --pid "$SERVER_PID" rollback

banner "Same connection, after the rollback: v1 answers again"
for n in frank grace; do ask "$n" v1; done
ask /version v1
echo "    same pid $SERVER_PID, same connection (conn $CONN), request counter kept: $REQ_BEFORE -> $((REQ_BEFORE + 1))"

banner "Stop the client and the server"
exec {TO_CLIENT}>&-
wait "$CLIENT_PID" || fail "the client exited with status $?"
CLIENT_PID=
kill -TERM "$SERVER_PID"
status=0
wait "$SERVER_PID" || status=$?
SERVER_PID=
[[ $status -eq 0 ]] || fail "the server exited with status $status after SIGTERM"
sed 's/^/    server: /' "$WORK/server.out"

printf '\nDEMO PASSED: one process, one connection, v1 -> v2 -> v1, %d requests served, no restart.\n' \
    "$LAST_REQ"
