//! Probation (issue 11 part 2): `hotctl reload LIB --probation D` guards the calls into the new
//! generation; a fatal signal in its code rolls the process back at once, the crashed call runs
//! again on the previous generation with its original arguments, and the caller gets that answer.
//!
//! The patch is libprob v2 (tests/fixtures/libprob_v2.c): prob_compute (eight integer arguments,
//! two on the stack) and prob_blend (a double) fault when x % 7 == 3, prob_check aborts on 5,
//! prob_spawn starts a thread that faults. prob_server's threads call it flat out and check every
//! answer against both versions' formulas: a wrong answer or a thread that stops moving (a lost
//! call) fails the test. The last tests check the fixtures themselves: without probation the
//! same patch really kills the process, so the others prove something.

use hotagent_tests::protocol::{ErrorCode, Request, StatusReport};
use hotagent_tests::*;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

const CFG: Config = Config::DEFAULT;
/// How long the rollback after a crash may take to show in `status`.
const REVERT_DEADLINE: Duration = Duration::from_secs(5);
/// The line the agent writes to the target's stderr for a crash on probation.
const WARNING: &str = "crashed on probation";

fn v2() -> PathBuf {
    CFG.path("libprob_v2.so")
}

/// `prog` with `threads` callers, every one of them already past its first calls.
fn start(prog: &str, threads: usize) -> Target {
    let mut t = Target::builder(CFG.path(prog))
        .arg(threads.to_string())
        .spawn();
    if threads > 0 {
        assert!(
            t.wait_for_count("slowest", 100) >= 100,
            "a caller never ran"
        );
    }
    t
}

struct Counts {
    calls: i64,
    v1: i64,
    v2: i64,
    wrong: i64,
}

fn counts(t: &mut Target) -> Counts {
    let line = t.cmd("counts");
    let field = |name: &str| -> i64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    Counts {
        calls: field("calls"),
        v1: field("v1"),
        v2: field("v2"),
        wrong: field("wrong"),
    }
}

/// Every answer so far was v1's or v2's for its input.
#[track_caller]
fn assert_no_wrong_answer(t: &mut Target) {
    let c = counts(t);
    assert_eq!(
        c.wrong,
        0,
        "wrong answers ({} of {} calls; first: {})",
        c.wrong,
        c.calls,
        t.cmd("firstwrong")
    );
}

/// Every caller thread keeps returning from its calls: none lost one.
#[track_caller]
fn assert_every_caller_moves(t: &mut Target) {
    let now = t.cmd_i("slowest");
    assert!(
        t.wait_for_count("slowest", now + 1000) >= now + 1000,
        "a caller thread stopped: a call never came back"
    );
}

/// Waits until calls have reached v2 (so the new code really ran before the crash).
#[track_caller]
fn wait_for_v2_answers(t: &mut Target) {
    let start = Instant::now();
    while counts(t).v2 < 1000 {
        assert!(start.elapsed() < DEADLINE, "no call reached v2");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `reload libprob_v2.so --probation DURATION`, checked to report that probation.
#[track_caller]
fn reload_on_probation(t: &Target, duration: &str, ms: u64) {
    let report = reload(t, &v2(), &["--probation", duration]);
    assert_eq!(report.probation_ms, ms, "{report:?}");
}

/// Polls `status` until generation 1 was reverted to 0 (at most [`REVERT_DEADLINE`]).
#[track_caller]
fn wait_reverted(t: &Target) -> StatusReport {
    let start = Instant::now();
    loop {
        let s = status(t);
        if s.generation == 0 && !s.reverted.is_empty() {
            return s;
        }
        assert!(
            start.elapsed() < REVERT_DEADLINE,
            "not reverted within {REVERT_DEADLINE:?}: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Checks the one revert in `s`: generation 1 back to 0, by `signal` in `function`, re-run.
#[track_caller]
fn assert_reverted(s: &StatusReport, signal: i32, name: &str, function: &str) {
    assert_eq!(s.reverted.len(), 1, "{s:?}");
    let r = &s.reverted[0];
    assert_eq!((r.generation, r.back_to), (1, 0), "{r:?}");
    assert_eq!((r.signal, r.signal_name.as_str()), (signal, name), "{r:?}");
    assert_eq!(r.function.as_deref(), Some(function), "{r:?}");
    assert!(r.rerun, "the crashed call was not run again: {r:?}");
    assert_ne!(r.address, 0, "{r:?}");
    assert_eq!(r.path, path_str(&v2()), "{r:?}");
    assert!(r.module.contains("libprob.so"), "{r:?}");
}

/// The target's stderr ends up with exactly one warning line, naming what happened.
#[track_caller]
fn assert_one_warning(t: &Target, signal_name: &str, function: &str) {
    let start = Instant::now();
    while !t.stderr_text().contains(WARNING) {
        assert!(start.elapsed() < DEADLINE, "no warning on stderr");
        std::thread::sleep(Duration::from_millis(5));
    }
    let text = t.stderr_text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(WARNING)).collect();
    assert_eq!(lines.len(), 1, "one warning line expected:\n{text}");
    let line = lines[0];
    for part in [
        "hotagent: generation 1 (libprob_v2.so)",
        signal_name,
        function,
        "rolled back to generation 0",
        "the call was run again there",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
    }
}

/// Waits for the target to end, with a deadline.
#[track_caller]
fn ended(t: &mut Target) -> ExitStatus {
    let start = Instant::now();
    while t.is_alive() {
        assert!(start.elapsed() < DEADLINE, "the target is still running");
        std::thread::sleep(Duration::from_millis(5));
    }
    t.kill().expect("the exit status")
}

#[test]
fn a_segfault_under_callers_flat_out_rolls_back_and_every_answer_is_v1s_or_v2s() {
    let mut t = start("prob_server", 4);
    reload_on_probation(&t, "30s", 30_000);
    let s = status(&t);
    let g = s
        .generations
        .iter()
        .find(|g| g.generation == 1)
        .expect("gen 1");
    let p = g.probation.as_ref().expect("generation 1 on probation");
    assert_eq!(p.duration_ms, 30_000, "{p:?}");
    assert!(p.remaining_ms > 0 && p.remaining_ms <= 30_000, "{p:?}");
    wait_for_v2_answers(&mut t);
    assert_no_wrong_answer(&mut t);

    t.expect("crashy 1", "ok");
    let s = wait_reverted(&t);
    assert_reverted(&s, libc::SIGSEGV, "SIGSEGV", "prob_compute");
    t.assert_alive();
    assert_every_caller_moves(&mut t);
    assert_no_wrong_answer(&mut t);
    // Back on v1 for good: the crashing inputs now get v1's answers, and nothing faults.
    t.expect("version", 1);
    t.expect("compute 3", "v1 149");
    let before = counts(&mut t);
    assert_every_caller_moves(&mut t);
    let after = counts(&mut t);
    assert_eq!(after.v2, before.v2, "calls still reach v2 after the revert");
    assert!(after.v1 > before.v1);
    assert_one_warning(&t, "SIGSEGV", "prob_compute");
    t.assert_alive();
}

#[test]
fn the_crashed_call_is_run_again_on_v1_with_its_own_arguments_stack_and_double() {
    let mut t = start("prob_server", 0);
    reload_on_probation(&t, "30s", 30_000);
    t.expect("compute 1", "v2 1000000079");
    // x = 3 faults in v2: the caller gets v1's answer for the same eight arguments.
    t.expect("compute 3", "v1 149");
    assert_reverted(&wait_reverted(&t), libc::SIGSEGV, "SIGSEGV", "prob_compute");
    assert_one_warning(&t, "SIGSEGV", "prob_compute");

    let mut t = start("prob_server", 0);
    reload_on_probation(&t, "30s", 30_000);
    t.expect("blend 1", "v2 11");
    // 10 * 0.75 + 9: the double argument survived the re-run.
    t.expect("blend 10", "v1 16.5");
    assert_reverted(&wait_reverted(&t), libc::SIGSEGV, "SIGSEGV", "prob_blend");
    t.expect("version", 1);
}

#[test]
fn an_abort_in_new_code_on_probation_rolls_back_with_sigabrt() {
    let mut t = start("prob_server", 4);
    reload_on_probation(&t, "30s", 30_000);
    wait_for_v2_answers(&mut t);
    t.expect("check 4", 9);
    // v2 aborts on 5: the call is run again on v1, which answers 10.
    t.expect("check 5", 10);
    let s = wait_reverted(&t);
    assert_reverted(&s, libc::SIGABRT, "SIGABRT", "prob_check");
    t.assert_alive();
    assert_every_caller_moves(&mut t);
    assert_no_wrong_answer(&mut t);
    t.expect("check 5", 10);
    assert_one_warning(&t, "SIGABRT", "prob_check");
}

/// No guarded call leads into the faulting thread's code: the process rolls back, then dies of
/// the signal as it would have without the agent.
#[test]
fn a_crash_in_a_thread_the_patch_started_kills_the_process_by_sigsegv() {
    let mut t = start("prob_server", 2);
    reload_on_probation(&t, "30s", 30_000);
    t.send("spawn");
    let how = ended(&mut t);
    assert_eq!(how.signal(), Some(libc::SIGSEGV), "{how:?}");
}

#[test]
fn a_program_with_its_own_segv_handler_keeps_it_and_a_crash_in_the_patch_is_still_ours() {
    let mut t = start("prob_ownsegv", 2);
    t.expect("faults 50", 50);
    reload_on_probation(&t, "30s", 30_000);
    wait_for_v2_answers(&mut t);
    // Its own faults go to its own handler during probation, and are no crash of the patch.
    t.expect("faults 50", 100);
    let s = status(&t);
    assert_eq!(s.generation, 1, "{s:?}");
    assert!(
        s.reverted.is_empty(),
        "the program's own fault was taken as a crash: {s:?}"
    );
    let g = s
        .generations
        .iter()
        .find(|g| g.generation == 1)
        .expect("gen 1");
    assert!(g.probation.is_some(), "{g:?}");

    t.expect("crashy 1", "ok");
    assert_reverted(&wait_reverted(&t), libc::SIGSEGV, "SIGSEGV", "prob_compute");
    t.assert_alive();
    // The patch's crash never reached the program's handler (which would have killed it).
    t.expect("foreign", 0);
    t.expect("faults 10", 110);
    assert_every_caller_moves(&mut t);
    assert_no_wrong_answer(&mut t);
}

/// When probation passes, the guards go and v2 stays: a crash in it now kills, as any crash
/// outside probation does (so nothing is left watching).
#[test]
fn probation_that_passes_drops_the_guards_and_keeps_the_new_code() {
    let mut t = start("prob_server", 2);
    reload_on_probation(&t, "300ms", 300);
    let start = Instant::now();
    loop {
        let s = status(&t);
        assert_eq!(s.generation, 1, "{s:?}");
        assert!(s.reverted.is_empty(), "{s:?}");
        let g = s
            .generations
            .iter()
            .find(|g| g.generation == 1)
            .expect("gen 1");
        if g.probation.is_none() {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "probation never ended: {g:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = counts(&mut t).v2;
    wait_for_v2_answers(&mut t);
    assert_every_caller_moves(&mut t);
    assert!(counts(&mut t).v2 > before, "calls no longer reach v2");
    assert_no_wrong_answer(&mut t);
    t.expect("compute 1", "v2 1000000079");
    t.send("compute 3");
    assert_eq!(ended(&mut t).signal(), Some(libc::SIGSEGV));
}

#[test]
fn a_reload_during_probation_is_refused_with_on_probation() {
    let t = start("prob_server", 0);
    reload_on_probation(&t, "30s", 30_000);
    let out = hotctl(&t, &["reload", path_str(&v2())]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let msg = check_failure(&out);
    assert!(msg.contains("probation"), "{out}");
    let resp = raw_request(&t, &Request::Reload(reload_request(&v2())));
    expect_error(&resp, &[ErrorCode::OnProbation]);
    let s = status(&t);
    assert_eq!(s.generation, 1, "{s:?}");
    assert_eq!(s.generations.len(), 1, "{s:?}");
}

#[test]
fn a_rollback_during_probation_works_and_ends_it() {
    let mut t = start("prob_server", 2);
    reload_on_probation(&t, "30s", 30_000);
    wait_for_v2_answers(&mut t);
    let s = status(&t);
    assert!(s.generations.iter().any(|g| g.probation.is_some()), "{s:?}");
    let r = rollback(&t);
    assert_eq!((r.from, r.generation), (1, 0), "{r:?}");
    let s = status(&t);
    assert_eq!(s.generation, 0, "{s:?}");
    assert!(s.reverted.is_empty(), "a rollback is no revert: {s:?}");
    t.expect("compute 3", "v1 149");
    // Nothing of the probation is left: a new reload is not refused.
    reload(&t, &v2(), &[]);
    t.expect("compute 1", "v2 1000000079");
    assert_every_caller_moves(&mut t);
    assert_no_wrong_answer(&mut t);
    assert!(!t.stderr_text().contains(WARNING), "{}", t.stderr_text());
}

// What the fixtures do without probation: the tests above mean something.

#[test]
fn probation_zero_is_no_probation_and_a_crash_kills() {
    let mut t = start("prob_server", 2);
    reload_on_probation(&t, "0", 0);
    let s = status(&t);
    assert!(s.generations.iter().all(|g| g.probation.is_none()), "{s:?}");
    t.expect("compute 1", "v2 1000000079");
    t.send("compute 3");
    assert_eq!(ended(&mut t).signal(), Some(libc::SIGSEGV));
}

#[test]
fn fixture_without_probation_v2_kills_by_sigsegv_and_by_sigabrt() {
    let mut t = start("prob_server", 2);
    reload(&t, &v2(), &[]);
    t.expect("blend 1", "v2 11");
    t.send("blend 10");
    assert_eq!(ended(&mut t).signal(), Some(libc::SIGSEGV));

    let mut t = start("prob_server", 2);
    reload(&t, &v2(), &[]);
    t.expect("check 4", 9);
    t.send("check 5");
    assert_eq!(ended(&mut t).signal(), Some(libc::SIGABRT));
}

#[test]
fn fixture_callers_check_every_answer_and_v1_never_crashes() {
    let mut t = start("prob_server", 4);
    t.expect("crashy 1", "ok");
    assert_every_caller_moves(&mut t);
    let c = counts(&mut t);
    assert!(c.calls > 0 && c.v2 == 0, "{}", t.cmd("counts"));
    assert_no_wrong_answer(&mut t);
    t.expect("compute 3", "v1 149");
    t.expect("blend 10", "v1 16.5");
    t.expect("spawn", 0);
    t.expect("version", 1);
    t.assert_alive();

    let mut t = start("prob_ownsegv", 2);
    t.expect("faults 20", 20);
    t.expect("foreign", 0);
    assert_no_wrong_answer(&mut t);
}
