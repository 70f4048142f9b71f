//! `hotctl purge GEN` unloads a retired generation once nothing the agent can see leads into it;
//! it is refused, naming why, for the current generation, a live one, generation 0, an unknown
//! one, while a thread runs its code or will return into it, and while a GOT slot leads into it.
//! Calls work after it.

use crate::common::{assert_foo, basic, V1, V2, V3};
use crate::reuse::memfd_copies;
use hotagent_tests::*;

const CFG: Config = Config::DEFAULT;

#[track_caller]
fn refused(t: &Target, gen: &str, why: &str) {
    let out = hotctl(t, &["purge", gen]);
    assert!(!out.success() && out.stderr.contains(why), "{out}");
}

/// `hotctl purge GEN` is refused naming `why`, and the target's only staged copy stays mapped.
#[track_caller]
fn refused_and_kept(t: &Target, gen: &str, why: &str) {
    refused(t, gen, why);
    assert_eq!(
        memfd_copies(t.pid()).len(),
        1,
        "a refused purge unloaded it"
    );
}

/// `hotctl purge GEN` succeeds and unmaps the target's only staged copy; its output.
#[track_caller]
fn purged(t: &Target, gen: &str) -> CtlOutput {
    let out = hotctl(t, &["purge", gen]);
    assert!(out.success(), "{out}");
    assert!(memfd_copies(t.pid()).is_empty(), "still mapped after purge");
    out
}

#[test]
fn current_live_original_and_unknown_generations_are_refused() {
    let mut t = basic(CFG);
    reload(&t, &CFG.path("libfoo_v2.so"), &["--no-probe"]);
    refused(&t, "1", "generation 1 is the current generation");
    refused(&t, "0", "generation 0 is the program's own code");
    refused(&t, "7", "no retired generation 7 is loaded");
    reload(&t, &CFG.path("libfoo_v3.so"), &["--no-probe"]);
    refused(
        &t,
        "1",
        "generation 1 is live (below the current generation 2)",
    );
    assert_eq!(memfd_copies(t.pid()).len(), 2);
    assert_foo(&mut t, &V3);
    t.finish().assert_clean();
}

/// The thread sent into `hold_wait` blocks in `read`, a libc function: its program counter is
/// not in the generation, only its return address is.
#[test]
fn refused_while_a_thread_will_return_into_it_then_unloaded() {
    let mut t = Target::spawn(CFG.path("hold"));
    let v2 = CFG.path("libhold_v2.so");
    reload(&t, &v2, &["--no-probe"]);
    t.expect("version", 2);
    t.expect("enter", "ok");
    t.wait_asleep_in(&[0], 2); // the command loop reads stdin; the holder its pipe
    assert_eq!(rollback(&t).generation, 0);
    t.expect("version", 1);
    refused_and_kept(&t, "1", "will return into it");
    // Its code is still there for the thread to return into.
    t.expect("release", 201);

    let out = purged(&t, "1");
    assert!(out.stdout.contains("libhold_v2.so#1"), "{out}");
    refused(&t, "1", "no retired generation 1 is loaded");
    t.expect("version", 1);
    t.expect("enter", "ok");
    t.expect("release", 101);
    // The same bytes again: a fresh load now, the purged copy is gone.
    reload(&t, &v2, &["--no-probe"]);
    t.expect("version", 2);
    t.expect("enter", "ok");
    t.expect("release", 201);
    rollback(&t);
    t.expect("version", 1);
    t.finish().assert_clean();
}

/// A thread that entered v2's `hold_spin` while generation 1 was current spins in its loop, past
/// the entry, through the rollback: its program counter stays in the retired copy. The purge is
/// refused until the thread has left.
#[test]
fn refused_while_a_thread_runs_inside_it_then_unloaded() {
    let mut t = Target::spawn(CFG.path("hold"));
    reload(&t, &CFG.path("libhold_v2.so"), &["--no-probe"]);
    t.expect("spin", "ok");
    assert_eq!(rollback(&t).generation, 0);
    t.expect("version", 1);
    refused_and_kept(&t, "1", "a thread is running its code");
    t.expect("stop", 200); // the spinner finished in v2's code, still there
    purged(&t, "1");
    t.expect("spin", "ok");
    t.expect("stop", 100);
    t.finish().assert_clean();
}

/// Another PLT hooker in the process (plthook, bhook) saved the executable's GOT slot for
/// `foo_version` while generation 1 was current, and writes the saved value back after the
/// rollback, as such a library does when it unhooks: the slot leads into the retired copy again.
/// Calls through it still run the current code (the copy's entry jumps there), but once the copy
/// were unloaded they would land on unmapped memory: the purge is refused, naming the slot, until
/// the slot holds something else.
#[test]
fn refused_while_a_got_slot_leads_into_it() {
    let mut t = basic(CFG);
    t.expect("version", 1); // binds the lazy slot
    let original = t.cmd("got foo_version");
    assert!(!original.starts_with("error"), "{original}");
    reload(&t, &CFG.path("libfoo_v2.so"), &["--no-probe"]);
    let saved = t.cmd("got foo_version");
    assert_ne!(saved, original, "the reload did not write the slot");
    assert_eq!(rollback(&t).generation, 0);
    assert_eq!(t.cmd("got foo_version"), original, "rollback left the slot");
    t.expect(&format!("gotset foo_version {saved}"), "ok");
    t.expect("version", 1); // through the retired copy's entry, which jumps to the current code
    refused_and_kept(
        &t,
        "1",
        "slot(s) for foo_version still hold its address (basic)",
    );
    t.expect("version", 1);

    t.expect(&format!("gotset foo_version {original}"), "ok");
    purged(&t, "1");
    assert_foo(&mut t, &V1);
    t.finish().assert_clean();
}

/// After a purge, the other generations, reuse and rollback work as before.
#[test]
fn calls_and_reloads_work_after_a_purge() {
    let mut t = basic(CFG);
    let (v2, v3) = (CFG.path("libfoo_v2.so"), CFG.path("libfoo_v3.so"));
    reload(&t, &v2, &["--no-probe"]);
    reload(&t, &v3, &["--no-probe"]);
    rollback(&t);
    let json = hotctl_json(&t, &["--json", "purge", "2"]);
    assert_eq!(json["generation"], 2, "{json}");
    // The history keeps it: the purge, about generation 2 and its file.
    let h = hotctl_json(&t, &["history", "--json"]);
    let last = h["events"].as_array().and_then(|e| e.last()).cloned();
    let last = last.unwrap_or_else(|| panic!("no history: {h}"));
    assert_eq!(last["outcome"], "purged", "{h}");
    assert_eq!(last["generation"], 2, "{last}");
    assert_eq!(last["path"], path_str(&v3), "{last}");
    assert_foo(&mut t, &V2);
    assert_eq!(memfd_copies(t.pid()).len(), 1);
    reload(&t, &v3, &["--no-probe"]);
    assert_foo(&mut t, &V3);
    rollback(&t);
    rollback(&t);
    assert_foo(&mut t, &V1);
    reload(&t, &v2, &["--no-probe"]);
    assert_foo(&mut t, &V2);
    assert_eq!(
        memfd_copies(t.pid()).len(),
        2,
        "v2 reused, v3 loaded once more"
    );
    t.finish().assert_clean();
}
