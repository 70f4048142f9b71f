//! Integration tests: real C, C++ and Rust programs run under `libhotagent.so` and are driven
//! through the real `hotctl` (and raw socket clients). Build the release artifacts first
//! (`cargo build --release`, which `make test` does).
//!
//! Every target gets its own socket folder, so tests run in parallel without seeing each other.

mod adversary;
mod bad_input;
mod blockers;
mod changed_only;
mod cli;
mod common;
mod convert;
mod core;
mod cross_user;
mod dead_target;
mod diff;
mod discovery;
mod entries;
mod exe_name;
mod exports;
mod fixtures_build;
mod fleet;
mod hazards;
mod header;
mod history;
mod idempotence;
mod impostor;
mod install;
mod lean_start;
mod lifeline;
mod liveness;
mod measure;
mod migrate;
mod operator_cli;
mod persist;
mod private_state;
mod privilege;
mod probation;
mod probation_persist;
mod probe;
mod purge;
mod quiet;
mod races;
mod reset;
mod reuse;
mod shadow;
mod socket;
mod stage;
mod startup;
mod summary;
mod switching;
mod system_wide;
mod systemd;
mod try_verb;
mod versions_real;
mod wall;
mod watch;
