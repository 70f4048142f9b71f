//! The agent's lifeline: rollback must work whatever the patch broke, and must never claim a
//! change that did not happen. And wrappers that call an alias of what they replace (the same
//! code under another name in libc) must not be sent back into themselves by the entry jump.
//!
//! `lifeline.c` is a program on libfoo that calls libc's `sigaction`, can take the agent's stop
//! signal for itself, and runs threads that lock a mutex; the wrapper patches count their calls in
//! its `wrap_calls`.

use crate::common::{entry_in, expect_foo_calls, refused, symbol, V1, V2};
use hotagent_tests::protocol::{EntryState, ErrorCode, SymbolReport};
use hotagent_tests::*;

/// The stop signal the tests give the agent (`HOTAGENT_SIGNAL`), so the program can take it.
const STOP_SIGNAL: &str = "50";

/// Asserts the state of `name`'s entry in `module`, and that its reason mentions each of `why`.
#[track_caller]
fn assert_entry(
    symbols: &[SymbolReport],
    name: &str,
    module: &str,
    state: EntryState,
    why: &[&str],
) {
    let s = symbol(symbols, name);
    let e = entry_in(s, module);
    assert_eq!(e.state, state, "{name}'s entry in {module}: {s:#?}");
    let reason = e.reason.as_deref().unwrap_or_default();
    for w in why {
        assert!(
            reason.contains(w),
            "{name}'s entry in {module} should say {w:?}: {s:#?}"
        );
    }
}

/// `len` bytes of the target's memory at `addr`, as the kernel sees them.
fn peek(t: &Target, addr: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{}/mem", t.pid())).expect("open /proc/PID/mem");
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, addr).expect("read /proc/PID/mem");
    buf
}

fn lifeline(cfg: Config) -> Target {
    Target::builder(cfg.path("lifeline"))
        .env("HOTAGENT_SIGNAL", STOP_SIGNAL)
        .spawn()
}

const LIBC: &[&str] = &["--replace", "libc.so.6"];

/// A patch of libc's `sigaction` that fails every call is rolled back: the agent's check that its
/// stop signal is still its own asks the kernel, not libc's (patched) `sigaction`. Before the fix
/// the rollback "succeeded" with the entry still jumping to the broken code, reported `current`.
#[test]
fn broken_sigaction_patch_rolls_back() {
    let cfg = Config::DEFAULT;
    let mut t = lifeline(cfg);
    let patch = cfg.path("libsigaction_broken.so");
    t.expect("sigaction", 0);
    let dry = reload(&t, &patch, &["--replace", "libc.so.6", "--dry-run"]);
    let addr = entry_in(symbol(&dry.symbols, "sigaction"), "libc.so.6").addr;
    let original = peek(&t, addr, 16);

    let r = reload(&t, &patch, LIBC);
    // Reached through its entry too, so internal callers and old pointers run it as well.
    assert_entry(&r.symbols, "sigaction", "libc.so.6", EntryState::Jump, &[]);
    assert_ne!(peek(&t, addr, 16), original, "the entry was not written");
    t.expect("sigaction", -22);

    let rb = rollback(&t);
    assert_eq!(rb.generation, 0, "{rb:?}");
    assert_eq!(
        peek(&t, addr, 16),
        original,
        "sigaction's entry holds its own bytes again"
    );
    let st = status(&t);
    assert_eq!(st.generation, 0, "{st:?}");
    assert_entry(
        &st.symbols,
        "sigaction",
        "libc.so.6",
        EntryState::Current,
        &[],
    );
    t.expect("sigaction", 0);
    expect_foo_calls(&mut t, &V1);
    t.assert_alive();
}

/// The program replaced the agent's stop-signal handler after a reload: the entries that jump to
/// v2 cannot be restored, so the rollback is refused (non-zero exit, a message naming the
/// function and the reason), nothing changes, and status shows the entries as they are. Before
/// the fix it exited 0 at generation 0 with old pointers still running v2. A reload after the
/// replacement reports the entry it could not move as what it is: a jump to v2.
#[test]
fn rollback_refused_when_the_program_took_the_stop_signal() {
    let cfg = Config::DEFAULT;
    let mut t = lifeline(cfg);
    expect_foo_calls(&mut t, &V1);
    t.expect("start_ptr", 1);
    let r = reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    assert_entry(
        &r.symbols,
        "foo_version",
        "libfoo.so",
        EntryState::Jump,
        &[],
    );
    t.expect("start_ptr", 2);

    t.expect(&format!("steal {STOP_SIGNAL}"), 0);
    let msg = expect_fail(&t, &["rollback"]);
    for want in [
        "foo_version",
        "libfoo.so",
        &format!("stop-signal handler (signal {STOP_SIGNAL})"),
        "nothing was changed",
    ] {
        assert!(msg.contains(want), "the refusal should say {want:?}: {msg}");
    }
    // Consistent: v2 everywhere, through the GOT and through the old entry.
    expect_foo_calls(&mut t, &V2);
    t.expect("start_ptr", 2);
    let st = status(&t);
    assert_eq!(st.generation, 1, "{st:?}");
    assert_entry(
        &st.symbols,
        "foo_version",
        "libfoo.so",
        EntryState::Jump,
        &[],
    );
    assert_entry(
        &st.symbols,
        "foo_version",
        "libfoo_v2.so#1",
        EntryState::Current,
        &[],
    );

    // A reload now switches the slots but cannot move the entries: the original entry still
    // jumps to v2, and says so.
    let r = reload(&t, &cfg.path("libfoo_v3.so"), &[]);
    assert_eq!(r.generation, 2);
    let stop = format!("signal {STOP_SIGNAL}");
    assert_entry(
        &r.symbols,
        "foo_version",
        "libfoo.so",
        EntryState::Jump,
        &["libfoo_v2.so#1", "not to the current code", &stop],
    );
    assert_entry(
        &r.symbols,
        "foo_version",
        "libfoo_v2.so#1",
        EntryState::Original,
        &[&stop],
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("foo_version") && w.contains("not current")),
        "{:?}",
        r.warnings
    );
    t.expect("version", 3);
    t.expect("start_ptr", 2);

    // Back to generation 1 needs no entry moved: done. Back to 0 is refused again.
    let rb = rollback(&t);
    assert_eq!(rb.generation, 1, "{rb:?}");
    expect_foo_calls(&mut t, &V2);
    t.expect("start_ptr", 2);
    let msg = expect_fail(&t, &["rollback"]);
    assert!(msg.contains("nothing was changed"), "{msg}");
    assert_eq!(status(&t).generation, 1);
    expect_foo_calls(&mut t, &V2);
    t.assert_alive();
}

/// A `pthread_mutex_lock` wrapper that forwards to `__pthread_mutex_lock` (the same code in libc):
/// its entry keeps its bytes, so the forwarded call reaches libc's code instead of the wrapper
/// again (before the fix: infinite recursion, the target crashed on the next lock). The dry run
/// decides the same; threads lock through the wrapper; rollback works.
#[test]
fn mutex_wrapper_calling_its_alias() {
    let cfg = Config::DEFAULT;
    let mut t = lifeline(cfg);
    t.expect("workers 3", 3);
    let l = t.cmd_i("locks");
    assert!(t.wait_for_count("locks", l + 20) >= l + 20);
    let patch = cfg.path("libmutex_wrap.so");
    let why = ["__pthread_mutex_lock", "alias of pthread_mutex_lock"];

    let r = reload_keeping_entry(&t, &patch, "pthread_mutex_lock", &why);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("__pthread_mutex_lock")),
        "{:?}",
        r.warnings
    );
    let w = t.cmd_i("wrapped");
    let l = t.cmd_i("locks");
    assert!(
        t.wait_for_count("wrapped", w + 50) >= w + 50,
        "no call went through the wrapper"
    );
    assert!(
        t.wait_for_count("locks", l + 50) >= l + 50,
        "the workers stopped"
    );
    t.assert_alive();

    let rb = rollback(&t);
    assert_eq!(rb.generation, 0, "{rb:?}");
    let w = t.cmd_i("wrapped");
    let l = t.cmd_i("locks");
    assert!(
        t.wait_for_count("locks", l + 50) >= l + 50,
        "the workers stopped"
    );
    // A worker may have been inside the wrapper during the switch (three workers).
    let after = t.cmd_i("wrapped");
    assert!(
        after <= w + 3,
        "calls still go through the wrapper: {w} -> {after}"
    );
    t.assert_alive();
}

/// A `sigaction` wrapper that forwards to `__sigaction`: the same decision, and the program's
/// calls go through the wrapper and work (before the fix they recursed until the stack ran out).
#[test]
fn sigaction_wrapper_calling_its_alias() {
    let cfg = Config::DEFAULT;
    let mut t = lifeline(cfg);
    let patch = cfg.path("libsigaction_wrap.so");
    let why = ["__sigaction", "alias of sigaction"];
    reload_keeping_entry(&t, &patch, "sigaction", &why);
    let w = t.cmd_i("wrapped");
    t.expect("sigaction", 0);
    t.expect("wrapped", w + 1);
    let st = status(&t);
    assert_entry(
        &st.symbols,
        "sigaction",
        "libc.so.6",
        EntryState::Original,
        &why,
    );

    let rb = rollback(&t);
    assert_eq!(rb.generation, 0, "{rb:?}");
    t.expect("sigaction", 0);
    t.expect("wrapped", w + 1);
    t.assert_alive();
}

/// `mmap64` is `mmap` under another name: replacing it is refused like `mmap` (the agent and the
/// allocator depend on it), the dry run too, and the target is left as it was.
#[test]
fn lifeline_function_under_another_name_is_refused() {
    let cfg = Config::DEFAULT;
    let mut t = lifeline(cfg);
    refused(
        &mut t,
        &cfg.path("libmmap_alias.so"),
        LIBC,
        &[ErrorCode::IncompatibleSymbol],
        &["mmap64", "alias of mmap"],
    );
}

/// A dry run and then the reload of a libc wrapper both keep `name`'s libc entry with its own
/// bytes, for the reasons in `why`; returns the reload's report.
#[track_caller]
fn reload_keeping_entry(
    t: &Target,
    patch: &std::path::Path,
    name: &str,
    why: &[&str],
) -> protocol::ReloadReport {
    let dry = reload(t, patch, &["--replace", "libc.so.6", "--dry-run"]);
    assert_entry(&dry.symbols, name, "libc.so.6", EntryState::Original, why);
    let r = reload(t, patch, LIBC);
    assert_entry(&r.symbols, name, "libc.so.6", EntryState::Original, why);
    r
}
