//! What a call costs while its generation is on probation (every call goes through a guard that
//! records the caller's frame and arguments), against the same call once probation has ended
//! (guards dropped) and against generation 0.

use crate::Counts;
use hotagent_tests::*;
use std::time::{Duration, Instant};

/// ns per call of `prob_compute` (eight arguments, two on the stack), `calls` of them.
fn ns(t: &mut Target, calls: u64) -> f64 {
    let answer = t.cmd(&format!("bench {calls}"));
    answer
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("bench answered {answer:?}"))
}

fn on_probation(t: &Target) -> bool {
    status(t).generations.iter().any(|g| g.probation.is_some())
}

pub fn guarded_calls(n: &Counts) -> String {
    let cfg = Config::DEFAULT;
    let v2 = cfg.path("libprob_v2.so");
    let mut t = Target::builder(cfg.path("prob_server")).arg("0").spawn();
    let g0 = ns(&mut t, n.calls);

    reload(&t, &v2, &["--probation", "10m"]);
    assert!(on_probation(&t), "generation 1 is not on probation");
    let guarded = ns(&mut t, n.calls);
    assert!(on_probation(&t), "probation ended while it was measured");
    rollback(&t);

    let probation_ms = 300;
    reload(&t, &v2, &["--probation", &format!("{probation_ms}ms")]);
    let start = Instant::now();
    while on_probation(&t) {
        assert!(start.elapsed() < DEADLINE, "probation never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = ns(&mut t, n.calls);
    assert_eq!(t.cmd("version"), "2", "not on the new code");

    format!(
        "`prob_compute()` (eight integer arguments, two on the stack) in a loop of {} calls \
         through the GOT, one thread.\n\n\
         | state | ns per call |\n|---|---|\n\
         | generation 0 | {g0:.2} ns |\n\
         | generation 1 on probation (guarded) | {guarded:.2} ns ({:.2}x) |\n\
         | generation 1 after a {probation_ms} ms probation ended (guards dropped) | \
         {after:.2} ns ({:.2}x) |\n",
        n.calls,
        guarded / g0,
        after / g0,
    )
}
