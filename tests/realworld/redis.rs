//! Stock redis-server (Debian's: jemalloc, whose background threads block every signal) with a
//! libc function replaced: `strcoll`, which `SORT ... ALPHA` calls for every comparison, patched
//! to collate case-insensitively. Driven by a raw RESP client over loopback.

use crate::build;
use crate::require;
use crate::service::{free_port, Daemon, Redis, Resp};
use hotagent_tests::protocol::EntryState;
use hotagent_tests::{reload, rollback, status};
use std::process::Command;

/// `SORT l ALPHA` of [b, A, a, B] in the C locale, and with the patched strcoll.
const C_ORDER: [&str; 4] = ["A", "B", "a", "b"];
const PATCHED_ORDER: [&str; 4] = ["A", "a", "B", "b"];

const REDIS: &str = "/usr/bin/redis-server";

struct Server {
    daemon: Daemon,
    port: u16,
    _dir: tempfile::TempDir,
}

/// redis-server on a free loopback port, no persistence, logging into a temporary folder.
/// Started by the name `redis-server` (a symlink to `redis-check-rdb` on Debian).
fn start() -> Server {
    let dir = tempfile::Builder::new()
        .prefix("hotagent-rw-redis-")
        .tempdir()
        .expect("a folder for redis");
    let port = free_port();
    let log = dir.path().join("redis.log");
    let mut cmd = Command::new(require(REDIS));
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir.path())
        .arg("--logfile")
        .arg(&log);
    let daemon = Daemon::start(cmd, Some(log));
    Server {
        daemon,
        port,
        _dir: dir,
    }
}

fn sort(c: &mut Redis) -> Vec<String> {
    c.strings(&["SORT", "l", "ALPHA"])
}

/// Before, after and after rollback: the patched collation shows in `SORT ... ALPHA` on a
/// connection opened before the reload, other commands keep answering right, and rollback
/// brings the C locale's order back.
#[test]
fn redis_libc_strcoll_replaced() {
    let mut s = start();
    let mut c = Redis::connect(s.port);
    assert_eq!(c.cmd(&["RPUSH", "l", "b", "A", "a", "B"]), Resp::Int(4));
    assert_eq!(c.cmd(&["SET", "k", "before"]), Resp::Simple("OK".into()));
    assert_eq!(sort(&mut c), C_ORDER);

    let patch = build::strcoll_patch();
    reload(&s.daemon, &patch, &["--replace", "libc.so.6", "--dry-run"]);
    let r = reload(&s.daemon, &patch, &["--replace", "libc.so.6"]);
    assert_eq!(r.generation, 1, "{r:?}");
    assert_eq!(sort(&mut c), PATCHED_ORDER);
    let mut fresh = Redis::connect(s.port);
    assert_eq!(sort(&mut fresh), PATCHED_ORDER);
    assert_eq!(c.cmd(&["GET", "k"]), Resp::Bulk(Some(b"before".to_vec())));
    assert_eq!(c.cmd(&["SET", "k", "after"]), Resp::Simple("OK".into()));
    assert_eq!(fresh.cmd(&["INCR", "n"]), Resp::Int(1));

    let back = rollback(&s.daemon);
    assert_eq!(back.generation, 0, "{back:?}");
    assert_eq!(sort(&mut c), C_ORDER);
    assert_eq!(sort(&mut fresh), C_ORDER);
    assert_eq!(
        fresh.cmd(&["GET", "k"]),
        Resp::Bulk(Some(b"after".to_vec()))
    );
    assert_eq!(c.cmd(&["PING"]), Resp::Simple("PONG".into()));
    s.daemon.assert_alive();
}

/// Issue 9 §7: jemalloc's background threads block every signal while they sleep in a system
/// call; that must not make the reload GOT-only nor wait for them.
#[test]
fn redis_blocked_signal_threads_keep_entry_jumps() {
    let mut s = start();
    let mut c = Redis::connect(s.port);
    assert_eq!(c.cmd(&["RPUSH", "l", "b", "A", "a", "B"]), Resp::Int(4));
    let patch = build::strcoll_patch();
    let r = reload(&s.daemon, &patch, &["--replace", "libc.so.6"]);
    let strcoll = r
        .symbols
        .iter()
        .find(|sym| sym.name == "strcoll")
        .unwrap_or_else(|| panic!("strcoll is not in the report: {r:?}"));
    for e in &strcoll.entries {
        assert_ne!(
            e.state,
            EntryState::Original,
            "an entry of strcoll kept its bytes ({:?}): {r:?}",
            e.reason
        );
    }
    // Located asleep, not waited for: the threads were checked without a signal and no
    // fallback warning names them. (How long the phase takes is a bench figure, not a test's.)
    assert!(
        r.pause.asleep >= 1,
        "no thread blocking signals was located asleep (jemalloc's background threads?): {r:?}"
    );
    assert!(
        !r.warnings.iter().any(|w| w.contains("blocks signal")),
        "a thread blocking signals still limited the reload: {r:?}"
    );
    assert_eq!(sort(&mut c), PATCHED_ORDER);
    rollback(&s.daemon);
    assert_eq!(sort(&mut c), C_ORDER);
    s.daemon.assert_alive();
}

/// Issue 9 §8: the process is named by the path it was started with, not the symlink's target
/// (`redis-server` is a link to `redis-check-rdb`).
#[test]
fn redis_named_as_started() {
    let s = start();
    let st = status(&s.daemon);
    assert!(
        st.exe.ends_with("redis-server"),
        "the executable should be named as started: {st:?}"
    );
}
