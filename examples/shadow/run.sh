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
# Environment: see examples/common.sh; EXAMPLE_DIR (default target/examples/shadow).
set -euo pipefail
EXAMPLE=shadow NAME=connd
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
DIR=$(abspath "${EXAMPLE_DIR:-$ROOT/target/examples/shadow}")
require "$AGENT" "$HOTCTL" "$DIR/connd" "$DIR/v2/libconn.so"
cd "$ROOT"

banner "Start connd (libconn.so v1) with the agent preloaded"
example_start "$DIR/connd"

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
example_finish "one process; v2 added a per-connection counter without changing struct conn, freed it on close, and rolled back."
