//! The real-world suite (`make realworld`): real libraries built from pinned upstream sources,
//! reloaded inside Debian's own programs — python3, nginx, redis-server — through the real
//! `hotctl`. Build the release artifacts first (`cargo build --release`; `make realworld` does).
//!
//! - `sqlite`: SQLite in python3 with a live WAL connection, cached statements and an open
//!   cursor: a version upgrade refused cleanly, a one-function fix of the whole library and a
//!   partial patch working end to end, and rolled back.
//! - `zlib`: zlib built with its version script, in python3 (streams kept across the switch) and
//!   in nginx's gzip with workers running as `nobody`.
//! - `openssl`: Debian's own libcrypto.so.3 reloaded whole in python3 with live hashlib, hmac
//!   and ssl objects: its private state proven the same by sections and shared.
//! - `redis`: stock redis-server (jemalloc's threads block every signal) with a libc function
//!   replaced.
//!
//! Every process is killed when its test ends, listens on 127.0.0.1 only, on a port picked free.

mod build;
mod openssl;
mod redis;
mod service;
mod sources;
mod sqlite;
mod zlib;

use hotagent_tests::{HasAgent, Target};
use std::path::{Path, PathBuf};

/// Debian's python3: its `_sqlite3` module and the interpreter itself link `libsqlite3.so.0` and
/// `libz.so.1` from the system, which `LD_LIBRARY_PATH` points elsewhere. Not `python3` from
/// `PATH`, which may be another build (pyenv) with other links.
pub const PYTHON: &str = "/usr/bin/python3";

/// A driver script of `tests/realworld/drivers/`.
pub fn driver(name: &str) -> PathBuf {
    hotagent_tests::repo_root()
        .join("tests")
        .join("realworld")
        .join("drivers")
        .join(name)
}

/// Checks that a program the suite needs is installed (`.ci/run` installs them).
#[track_caller]
pub fn require(program: &str) -> &str {
    assert!(
        Path::new(program).is_file(),
        "{program} is missing: install python3, nginx and redis-server (apt-get; .ci/run does)"
    );
    program
}

/// Starts a python driver under the agent with `LD_LIBRARY_PATH=lib_dir`; `-I` keeps the
/// user's site folder and `PYTHON*` variables out.
pub fn python(script: &str, lib_dir: &Path, args: &[&Path]) -> Target {
    let mut b = Target::builder(require(PYTHON))
        .arg("-I")
        .arg(driver(script))
        .env("LD_LIBRARY_PATH", lib_dir);
    for a in args {
        b = b.arg(a.as_os_str());
    }
    b.spawn()
}

/// The mappings of a process whose path contains `needle` (a refused reload must leave none
/// behind, issue 9 §4).
pub fn mappings(agent: &impl HasAgent, needle: &str) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", agent.pid()))
        .expect("read the target's maps");
    maps.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Mappings of the agent's staged copies (`memfd:` files), any generation.
pub fn staged_mappings(agent: &impl HasAgent) -> Vec<String> {
    mappings(agent, "memfd:")
}
