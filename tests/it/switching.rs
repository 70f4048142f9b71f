//! Switching that holds no thread: a reload or rollback writes entries behind an `int3` and looks
//! at each thread once, instead of parking every thread until the last has been scheduled. Threads
//! that call the replaced function flat out never block, sleep or yield, and still every one
//! reaches the new code; the report says the switch was per thread. A program's own SIGTRAP
//! handler keeps getting its own traps once ours is in front of it.

use hotagent_tests::*;

/// `calls=N bad=M ...` from the threads fixture: (calls, bad).
fn stats(t: &mut Target) -> (u64, u64) {
    let line = t.cmd("stats");
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    (field("calls="), field("bad="))
}

/// Polls (with a deadline) until the workers have made more calls than `since`.
fn calls_move_past(t: &mut Target, since: u64) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (calls, _) = stats(t);
        if calls > since {
            return calls;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the workers stopped calling ({calls} calls)"
        );
        std::thread::yield_now();
    }
}

/// 16 threads calling foo_version and foo_add flat out on 2 cores, and through a pointer taken at
/// start-up (only the old entry's jump redirects it): every reload and rollback is per thread,
/// every answer is v1's or v2's, and the pointer follows each switch.
#[test]
fn busy_threads_switch_without_being_held() {
    let cfg = Config::DEFAULT;
    let mut t = Target::builder(cfg.path("threads")).arg("16").spawn();
    let mut calls = calls_move_past(&mut t, 0);
    for _ in 0..5 {
        let r = reload(&t, &cfg.path("libfoo_v2.so"), &["--no-probe"]);
        assert!(
            r.pause.per_thread,
            "reload stopped the threads: {:?}",
            r.pause
        );
        assert!(
            r.pause.threads >= 16,
            "not every thread looked at: {:?}",
            r.pause
        );
        assert!(r.pause.entries > 0, "no entry written: {:?}", r.pause);
        t.expect("ptr", 2);
        calls = calls_move_past(&mut t, calls);
        let rb = rollback(&t);
        assert!(
            rb.pause.per_thread,
            "rollback stopped the threads: {:?}",
            rb.pause
        );
        assert!(rb.pause.entries > 0, "no entry restored: {:?}", rb.pause);
        t.expect("ptr", 1);
        calls = calls_move_past(&mut t, calls);
    }
    let (_, bad) = stats(&mut t);
    assert_eq!(bad, 0, "a worker saw an answer from neither version");
}

/// The threads fixture's own SIGTRAP handler counts its `int3`s: it still gets each one after a
/// reload put the agent's handler in front of it, and after a rollback.
#[test]
fn program_sigtrap_handler_still_gets_its_traps() {
    let cfg = Config::DEFAULT;
    let mut t = Target::builder(cfg.path("threads")).arg("2").spawn();
    t.expect("trap", 1);
    let r = reload(&t, &cfg.path("libfoo_v2.so"), &["--no-probe"]);
    assert!(r.pause.per_thread, "{:?}", r.pause);
    t.expect("trap", 2);
    t.expect("ptr", 2);
    let rb = rollback(&t);
    assert!(rb.pause.per_thread, "{:?}", rb.pause);
    t.expect("trap", 3);
    t.expect("ptr", 1);
    let (_, bad) = stats(&mut t);
    assert_eq!(bad, 0);
}
