#!/usr/bin/env bash
# A global struct that grows (exit status 0 only if every reply is the one expected).
#
# Run it through `make example-migrate`, which builds libhotagent.so, hotctl, the server and
# both builds of libstats.so first.
#
#  1. start the server (on libstats.so v1, whose exported `struct stats` is one counter) with
#     the agent preloaded, and serve three requests,
#  2. `hotctl reload v2/libstats.so`: v2's struct is three times as large. Its
#     hotagent_migrate, run while every other thread is parked, takes the count over from v1's
#     struct (hotagent_previous_symbol); without the hook the reload would be refused,
#  3. two more requests, counted by v2 (bytes and the largest too),
#  4. `hotctl rollback`: hotagent_unmigrate hands the count back to v1's struct,
#  5. one more request: v1 counts on from there.
#
# Environment: see examples/common.sh; EXAMPLE_DIR (default target/examples/migrate).
set -euo pipefail
EXAMPLE=migrate NAME=server
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
DIR=$(abspath "${EXAMPLE_DIR:-$ROOT/target/examples/migrate}")
require "$AGENT" "$HOTCTL" "$DIR/server" "$DIR/v1/libstats.so" "$DIR/v2/libstats.so"
cd "$ROOT"

banner "Start the server (libstats.so v1) with the agent preloaded"
example_start "$DIR/server"
say "request 100" ok
say "request 200" ok
say "request 300" ok
say stats "v1: 3 requests"

banner "Reload: v2's struct grew; hotagent_migrate carries the count over"
run_hotctl --pid "$PID" reload "$(short "$DIR/v2/libstats.so")"
say "request 300" ok
say "request 400" ok
say stats "v2: 5 requests, 700 bytes since the reload, largest 400"

banner "Rollback: hotagent_unmigrate hands the count back to v1"
run_hotctl --pid "$PID" rollback
say "request 50" ok
say stats "v1: 6 requests"
example_finish "the grown struct took the count over, and handed it back on rollback."
