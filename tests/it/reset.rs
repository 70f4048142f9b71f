//! `hotctl try --reset`, the agent side (issue 11, part 1): a reload with `checkpoint` saves the
//! replaced module's private writable data, and a rollback with `reset` puts it back, so a
//! candidate that polluted global state leaves none behind. Sent as raw requests: the `try` verb
//! is its own piece.

use hotagent_tests::protocol::{ReloadReport, Request, Response, RollbackReport, RollbackRequest};
use hotagent_tests::*;

const CFG: Config = Config::DEFAULT;

/// v1 poked twice: counter 3 (.data), buffer "aa" (.bss), exported 9, greeting through a
/// relocated pointer.
const AT_RELOAD: &str = "3 [aa] 9 hello";
const POLLUTED: &str = "999 [polluted] 999 hello";

fn started() -> Target {
    let mut t = Target::spawn(CFG.path("reset"));
    t.expect("show", "1 [] 7 hello");
    t.expect("poke", "ok");
    t.expect("poke", "ok");
    t.expect("show", AT_RELOAD);
    t
}

#[track_caller]
fn reload_v2(t: &Target, checkpoint: bool) -> ReloadReport {
    let req = protocol::ReloadRequest {
        checkpoint,
        ..reload_request(&CFG.path("libreset_v2.so"))
    };
    match raw_request(t, &Request::Reload(req)) {
        Response::Reload(r) => r,
        other => panic!("reload failed: {other:?}"),
    }
}

#[track_caller]
fn roll_back(t: &Target, reset: bool) -> RollbackReport {
    let req = RollbackRequest {
        reset,
        ..RollbackRequest::default()
    };
    match raw_request(t, &Request::Rollback(req)) {
        Response::Rollback(r) => r,
        other => panic!("rollback failed: {other:?}"),
    }
}

/// v2 runs on v1's state and pollutes it.
fn pollute(t: &mut Target) {
    t.expect("version", 2);
    t.expect("poke", "ok");
    t.expect("show", POLLUTED);
}

fn line<'a>(warnings: &'a [String], prefix: &str) -> Option<&'a String> {
    warnings.iter().find(|w| w.starts_with(prefix))
}

/// The counter in .data, the buffer in .bss and the exported variable are back to what they held
/// at the reload; the relocated pointer still points at its literal; v1 carries on from there.
#[test]
fn reset_restores_data_bss_and_exported_variable_as_at_the_reload() {
    let mut t = started();
    let r = reload_v2(&t, true);
    let saved = line(&r.warnings, "checkpoint:")
        .unwrap_or_else(|| panic!("no checkpoint line in {:?}", r.warnings));
    assert!(saved.contains("libreset.so"), "{saved}");
    pollute(&mut t);

    let back = roll_back(&t, true);
    assert_eq!(back.generation, 0);
    let restored = line(&back.warnings, "reset:")
        .unwrap_or_else(|| panic!("no reset line in {:?}", back.warnings));
    assert!(
        restored.contains("restored") && !restored.starts_with("reset: 0 byte"),
        "{restored}"
    );
    t.expect("version", 1);
    t.expect("show", AT_RELOAD);
    t.expect("poke", "ok");
    t.expect("show", "4 [aaa] 10 hello");
    t.assert_alive();
}

/// Without `reset` the rollback leaves the data alone: the pollution stays (what reset is for).
#[test]
fn rollback_without_reset_keeps_the_pollution() {
    let mut t = started();
    reload_v2(&t, true);
    pollute(&mut t);
    let back = roll_back(&t, false);
    assert_eq!(line(&back.warnings, "reset:"), None, "{:?}", back.warnings);
    t.expect("version", 1);
    t.expect("show", POLLUTED);
}

/// A generation reloaded without a checkpoint has nothing to restore: the rollback happens, says
/// so, and changes no data.
#[test]
fn reset_without_checkpoint_is_a_noop_with_a_warning() {
    let mut t = started();
    let r = reload_v2(&t, false);
    assert_eq!(line(&r.warnings, "checkpoint:"), None, "{:?}", r.warnings);
    pollute(&mut t);
    let back = roll_back(&t, true);
    let said = line(&back.warnings, "reset:")
        .unwrap_or_else(|| panic!("no reset line in {:?}", back.warnings));
    assert!(said.contains("without a checkpoint"), "{said}");
    t.expect("version", 1);
    t.expect("show", POLLUTED);
}

/// Two candidates in a row, the `try --reset` way: each starts from the state at its reload, and
/// the second rollback's reset does not bring back the first one's pollution.
#[test]
fn each_candidate_starts_from_the_same_state() {
    let mut t = started();
    for _ in 0..2 {
        reload_v2(&t, true);
        pollute(&mut t);
        roll_back(&t, true);
        t.expect("show", AT_RELOAD);
    }
    assert_eq!(status(&t).generation, 0);
}
