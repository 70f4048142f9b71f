//! Threads that block every signal (jemalloc's background threads, `sigwait` servers) cannot be
//! parked by the stop signal. Asleep in the kernel they need not be: the agent locates them
//! through `/proc/self/task/TID/syscall`, checks where they will resume like a parked thread's
//! program counter, and writes the entry jumps without them. Only a blocker that keeps running
//! makes the reload fall back to the GOT, and says which thread.

use crate::common::{entry_in, symbol};
use hotagent_tests::protocol::{EntryState, PauseReport, SymbolReport};
use hotagent_tests::*;
use std::time::{Duration, Instant};

/// Asks `line` until the target answers `want`, for [`DEADLINE`] at most; the last answer.
fn wait_for_answer(t: &mut Target, line: &str, want: &str) -> String {
    let start = Instant::now();
    loop {
        let got = t.cmd(line);
        if got == want || start.elapsed() > DEADLINE {
            return got;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `bad=N` of the fixture's `stats`.
fn bad_calls(t: &mut Target) -> u64 {
    let line = t.cmd("stats");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("bad="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad stats {line:?}"))
}

/// Asserts that `s`'s entry in `module` is `state`, naming no blocker when it is not a jump.
#[track_caller]
fn assert_entry(s: &SymbolReport, module: &str, state: EntryState) {
    let e = entry_in(s, module);
    assert_eq!(e.state, state, "{}'s entry in {module}: {s:#?}", s.name);
}

/// The stop ran (the entries were written with the others parked) and every blocker was located
/// asleep instead of forcing the fallback.
#[track_caller]
fn assert_located(pause: &PauseReport, blockers: usize) {
    assert!(pause.rounds >= 1, "nothing was stopped: {pause:?}");
    assert_eq!(
        pause.asleep, blockers,
        "every thread that blocks signals must be located asleep: {pause:?}"
    );
}

/// Four threads that block every signal, asleep in pthread_cond_timedwait (waking every 5 ms),
/// nanosleep, read and sigwait, next to two busy ones: the dry run and the reload both give real
/// entry jumps, a pointer taken at start-up runs the new code — in the main thread and in the
/// blocking thread that wakes — and a rollback takes it all back. No call ever sees a third value.
#[test]
fn threads_asleep_with_every_signal_blocked_do_not_cost_the_entry_jumps() {
    let cfg = Config::DEFAULT;
    let v2 = cfg.path("libfoo_v2.so");
    let mut t = Target::builder(cfg.path("blockers"))
        .arg("sleepers")
        .arg("busy=2")
        .spawn();
    t.expect("ptr", 1);
    assert_eq!(wait_for_answer(&mut t, "woken", "1"), "1");

    let dry = reload(&t, &v2, &["--dry-run"]);
    assert_entry(
        symbol(&dry.symbols, "foo_version"),
        "libfoo.so",
        EntryState::Jump,
    );

    let r = reload(&t, &v2, &[]);
    let fv = symbol(&r.symbols, "foo_version");
    assert_entry(fv, "libfoo.so", EntryState::Jump);
    assert_located(&r.pause, 4);
    assert!(
        r.pause.threads >= 2,
        "the busy threads are parked: {:?}",
        r.pause
    );
    t.expect("version", 2);
    t.expect("ptr", 2);
    assert_eq!(
        wait_for_answer(&mut t, "woken", "2"),
        "2",
        "the blocking thread's call through the start-up pointer never reached v2"
    );

    let rb = rollback(&t);
    assert_entry(
        symbol(&rb.symbols, "foo_version"),
        "libfoo.so",
        EntryState::Current,
    );
    assert_located(&rb.pause, 4);
    t.expect("version", 1);
    t.expect("ptr", 1);
    assert_eq!(wait_for_answer(&mut t, "woken", "1"), "1");
    assert_eq!(bad_calls(&mut t), 0);
    t.assert_alive();
}

/// A thread that blocks every signal and keeps running could be anywhere, inside any entry: the
/// reload falls back to the GOT and names it. Once it sleeps, the next reload jumps.
#[test]
fn thread_running_with_every_signal_blocked_still_falls_back_until_it_sleeps() {
    let cfg = Config::DEFAULT;
    let v2 = cfg.path("libfoo_v2.so");
    let mut t = Target::builder(cfg.path("blockers")).arg("spinner").spawn();

    let r = reload(&t, &v2, &[]);
    let fv = symbol(&r.symbols, "foo_version");
    let old = entry_in(fv, "libfoo.so");
    assert_eq!(old.state, EntryState::Original, "{fv:#?}");
    let why = old.reason.as_deref().unwrap_or_default();
    assert!(
        why.contains("blocks signal") && why.contains("kept running"),
        "{why}"
    );
    assert_eq!(r.pause.rounds, 0, "nothing may be stopped: {:?}", r.pause);
    t.expect("version", 2);
    t.expect("ptr", 1);
    rollback(&t);
    t.expect("version", 1);

    t.expect("calm", "calm");
    let r = reload(&t, &v2, &[]);
    assert_entry(
        symbol(&r.symbols, "foo_version"),
        "libfoo.so",
        EntryState::Jump,
    );
    assert_located(&r.pause, 1);
    t.expect("ptr", 2);
    rollback(&t);
    t.expect("ptr", 1);
    assert_eq!(bad_calls(&mut t), 0);
    t.assert_alive();
}

/// A thread that blocks every signal, asleep in a system call made from inside the first bytes
/// of park_in_entry: where it will resume counts like a parked thread's PC. That function keeps
/// its bytes (retried, then given up on, by name); the other function of the library jumps.
#[test]
fn thread_asleep_inside_an_entry_with_every_signal_blocked_keeps_that_entry() {
    let cfg = Config::DEFAULT;
    let mut t = Target::builder(cfg.path("park")).arg("blocked").spawn();
    t.expect("version", 1);
    let r = reload(&t, &cfg.path("libpark_v2.so"), &[]);
    let parked = symbol(&r.symbols, "park_in_entry");
    let e = entry_in(parked, "libpark.so");
    assert_eq!(e.state, EntryState::Original, "{parked:#?}");
    let why = e.reason.as_deref().unwrap_or_default();
    assert!(
        why.contains("a thread stayed inside its first 5 bytes"),
        "{why}"
    );
    assert_entry(
        symbol(&r.symbols, "park_version"),
        "libpark.so",
        EntryState::Jump,
    );
    assert_located(&r.pause, 1);
    assert!(
        r.pause.rounds > 1,
        "the agent must have retried: {:?}",
        r.pause
    );
    t.expect("version", 2);
    t.expect("rounds", 0);
    rollback(&t);
    t.expect("version", 1);
    t.assert_alive();
}

/// Many switches while a signal-blocking thread wakes every 5 ms and two busy threads call
/// through the GOT and the start-up pointer: each switch locates the blockers afresh (one that
/// woke between two looks is looked at again), every entry jumps, and no call ever sees a torn
/// entry or a third version.
#[test]
fn blocking_threads_torture() {
    let cycles: usize = env_parse("HOTAGENT_TEST_CYCLES").unwrap_or(300) / 10;
    let cfg = Config::DEFAULT;
    let v2 = cfg.path("libfoo_v2.so");
    let mut t = Target::builder(cfg.path("blockers"))
        .arg("sleepers")
        .arg("busy=2")
        .spawn();
    for _ in 0..cycles.max(1) {
        let r = reload(&t, &v2, &["--no-probe"]);
        assert_entry(
            symbol(&r.symbols, "foo_version"),
            "libfoo.so",
            EntryState::Jump,
        );
        assert_located(&r.pause, 4);
        t.expect("ptr", 2);
        let rb = rollback(&t);
        assert_located(&rb.pause, 4);
        t.expect("ptr", 1);
    }
    assert_eq!(bad_calls(&mut t), 0);
    t.assert_alive();
}
