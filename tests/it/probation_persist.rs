//! Probation and the journal together: a persisted patch that crashes on probation is marked by
//! the signal handler itself (one `open(O_CREAT)` of its crash marker), whether the process
//! survives the crash (the call re-run) or dies of it (a thread the patch started), and the next
//! start of the program runs the old code with one warning line: never a crash loop.

use hotagent_tests::*;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

const CFG: Config = Config::DEFAULT;

/// `prob_server` with one caller, under the agent, with its own state folder.
fn start(state: &Path) -> Target {
    let mut t = Target::builder(CFG.path("prob_server"))
        .arg("1")
        .env("HOTAGENT_STATE_DIR", state)
        .spawn();
    assert!(
        t.wait_for_count("slowest", 100) >= 100,
        "the caller never ran"
    );
    t
}

/// `hotctl ARGS` with the state folder; (success, stdout, stderr).
fn hotctl(state: &Path, args: &[&str]) -> (bool, String, String) {
    let out = hotctl_state(state, args);
    (out.success(), out.stdout, out.stderr)
}

/// `reload libprob_v2.so --persist --probation 30s` into `t` (its agent writes the journal).
fn reload_persisted(t: &Target) {
    let report = reload(
        t,
        &CFG.path("libprob_v2.so"),
        &["--persist", "--probation", "30s"],
    );
    assert_eq!(report.probation_ms, 30_000, "{report:?}");
    assert!(report.persisted.is_some(), "not persisted: {report:?}");
}

/// The one entry's state in `hotctl persisted --json`.
fn entry_state(state: &Path) -> String {
    let (ok, out, err) = hotctl(state, &["persisted", "--json"]);
    assert!(ok, "hotctl persisted failed: {err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("a JSON document");
    let entries = doc["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{doc}");
    entries[0]["state"].as_str().unwrap_or_default().to_string()
}

/// Polls until the journal's entry is marked crashed.
#[track_caller]
fn wait_marked_crashed(state: &Path) {
    let start = Instant::now();
    loop {
        let s = entry_state(state);
        if s == "crashed" {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "the entry stays {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh start skips the marked patch: old code, one warning line naming why.
#[track_caller]
fn next_start_runs_the_old_code(state: &Path) {
    let mut t = start(state);
    t.expect("compute 1", "v1 143");
    let s = status(&t);
    assert_eq!(s.generation, 0, "a crash-marked patch was applied: {s:?}");
    let until = Instant::now() + DEADLINE;
    while !t.stderr_text().contains("crashed on probation") {
        assert!(Instant::now() < until, "no warning: {}", t.stderr_text());
        std::thread::sleep(Duration::from_millis(5));
    }
    let text = t.stderr_text();
    let lines = text.lines().filter(|l| l.contains("hotagent:")).count();
    assert_eq!(lines, 1, "one warning line expected:\n{text}");
}

#[test]
fn a_persisted_patch_that_crashes_on_probation_is_marked_and_never_applied_again() {
    let state = scratch();
    let mut t = start(state.path());
    reload_persisted(&t);
    assert_eq!(entry_state(state.path()), "active");
    // The crash is survived (the call runs again on v1) and marks the journal.
    t.expect("compute 3", "v1 149");
    wait_marked_crashed(state.path());
    t.kill();
    next_start_runs_the_old_code(state.path());
}

#[test]
fn a_crash_that_kills_the_process_still_marks_the_persisted_patch() {
    let state = scratch();
    let mut t = start(state.path());
    reload_persisted(&t);
    // A thread the patch started faults: nothing to re-run, the process dies as it would have,
    // but not before the handler marked the entry.
    t.send("spawn");
    let until = Instant::now() + DEADLINE;
    while t.is_alive() {
        assert!(Instant::now() < until, "the target is still running");
        std::thread::sleep(Duration::from_millis(5));
    }
    let how = t.kill().expect("the exit status");
    assert_eq!(how.signal(), Some(libc::SIGSEGV), "{how:?}");
    assert_eq!(entry_state(state.path()), "crashed");
    next_start_runs_the_old_code(state.path());
}

#[test]
fn a_patch_applied_at_start_up_is_on_probation_and_a_crash_there_marks_it() {
    let state = scratch();
    let mut t = start(state.path());
    reload_persisted(&t);
    // Passes this run: the v2 code answers, nothing crashes.
    t.expect("compute 1", "v2 1000000079");
    t.kill();
    // The next start applies it before main, on probation again.
    let mut t = start(state.path());
    let s = status(&t);
    assert_eq!(s.generation, 1, "{s:?}");
    assert!(s.generations[0].applied_at_startup, "{s:?}");
    let p = s.generations[0].probation.as_ref().expect("on probation");
    assert_eq!(p.duration_ms, 30_000, "{p:?}");
    // Its crash there is survived, rolled back, and marks the entry for good.
    t.expect("compute 3", "v1 149");
    wait_marked_crashed(state.path());
    let until = Instant::now() + DEADLINE;
    while status(&t).generation != 0 {
        assert!(Instant::now() < until, "not rolled back");
        std::thread::sleep(Duration::from_millis(10));
    }
    t.kill();
    next_start_runs_the_old_code(state.path());
}
