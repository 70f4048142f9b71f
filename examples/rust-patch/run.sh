#!/usr/bin/env bash
# The Rust patch example (exit status 0 only if every reply is the one expected).
#
# Run it through `make example-rust`, which builds libhotagent.so, hotctl, counterd, the C
# libcounter.so v1 and the Rust v2 (target/release/libcounter_rs.so, from this folder's crate).
#
#  1. start counterd on the C libcounter.so v1 with the agent preloaded, count 1, 2, 3,
#  2. `hotctl reload target/release/libcounter_rs.so`: the Rust build's hotagent_migrate (made by
#     hotagent_api::hooks!) copies v1's private `total` into its own static: it goes on at 4,
#  3. `hotctl rollback`: its hotagent_unmigrate hands the count back: v1 goes on where v2 stopped.
#
# Environment: see examples/common.sh; EXAMPLE_DIR (default target/examples/rust-patch), PATCH
# (default target/release/libcounter_rs.so).
set -euo pipefail
EXAMPLE=rust NAME=counterd
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
DIR=$(abspath "${EXAMPLE_DIR:-$ROOT/target/examples/rust-patch}")
PATCH=$(abspath "${PATCH:-$ROOT/target/release/libcounter_rs.so}")
require "$AGENT" "$HOTCTL" "$DIR/counterd" "$PATCH"
cd "$ROOT"

banner "Start counterd (the C libcounter.so v1) with the agent preloaded"
example_start "$DIR/counterd"
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
example_finish "C v1 -> Rust v2 -> C v1 in one process, the count carried both ways."
