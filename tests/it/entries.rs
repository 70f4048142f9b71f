//! Entry jumps: a reload also writes a jump at the entry of every replaced old function, so the
//! references no GOT slot holds reach the current code — function pointers taken earlier, C++
//! objects' vtables, a library's direct calls to its own functions, cached `dlsym` results — and a
//! rollback points the entries the other way. Where a jump cannot be written (a function shorter
//! than the jump, text that cannot be made writable, `--got-only`) the symbol falls back to its GOT
//! slots and the report says why.
//!
//! The values asserted after a reload or rollback are reached only through an old entry, so these
//! tests fail when the entries are left as they were (a `--got-only` reload shows it). Exceptions,
//! where the report's entry states are what catches it: in a non-PIE built with a PLT an imported
//! function's address is the executable's canonical PLT entry, which goes through a GOT slot; and
//! libshape.so's vtable names `Shape::area` by symbol, a slot the reload switches anyway (hence
//! libshapesym.so, whose vtable does not).

use crate::common::{basic, entry_in, symbol};
use hotagent_tests::protocol::{EntryReport, EntryState, Request, Response, SymbolReport};
use hotagent_tests::*;

/// The entry `s` has in the library generation `generation` loaded from the file `file`: its
/// module is `<file>#<generation>`.
#[track_caller]
fn entry_of_generation<'a>(s: &'a SymbolReport, file: &str, generation: u32) -> &'a EntryReport {
    entry_in(s, &format!("{file}#{generation}"))
}

/// Asserts that `e` is in `state`.
#[track_caller]
fn assert_state(s: &SymbolReport, e: &EntryReport, state: EntryState) {
    assert_eq!(
        e.state, state,
        "{}'s entry in {} should be {state:?}: {s:#?}",
        s.name, e.module
    );
}

/// Asserts that `e` kept its own bytes for a reason containing `why`.
#[track_caller]
fn assert_original_because(s: &SymbolReport, e: &EntryReport, why: &str) {
    assert_state(s, e, EntryState::Original);
    let reason = e.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains(why),
        "{}'s entry in {} should say {why:?}, says {reason:?}: {s:#?}",
        s.name,
        e.module
    );
}

/// A pointer to foo_version taken at start-up (before any reload) follows every reload and
/// rollback, and so does one taken while v2 was current, once v2 is left.
fn pointer_taken_at_startup(cfg: Config) {
    let mut t = basic(cfg);
    t.expect("start_ptr", 1);

    let r = reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    let fv = symbol(&r.symbols, "foo_version");
    assert_state(fv, entry_in(fv, "libfoo.so"), EntryState::Jump);
    assert_state(
        fv,
        entry_of_generation(fv, "libfoo_v2.so", 1),
        EntryState::Current,
    );
    assert!(r.pause.entries >= 1, "entries written: {:?}", r.pause);
    assert!(r.pause.rounds >= 1, "{:?}", r.pause);
    t.expect("start_ptr", 2);
    t.expect("version", 2);

    reload(&t, &cfg.path("libfoo_v3.so"), &[]);
    t.expect("start_ptr", 3);
    rollback(&t);
    t.expect("start_ptr", 2);
    rollback(&t);
    t.expect("start_ptr", 1);
    t.expect("version", 1);

    // A pointer taken while v2 is current points at v2's entry: once v2 is left, that entry
    // jumps back.
    reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    t.expect("take", "ok");
    t.expect("taken", 2);
    rollback(&t);
    t.expect("taken", 1);
    t.expect("start_ptr", 1);
    t.assert_alive();
}

/// A virtual call on a C++ object made before the reload goes through v1's vtable to v1's
/// `Shape::area`, whose entry jumps to v2's. In libshape.so the vtable's slot names the symbol
/// (an `R_X86_64_64` the reload switches as well); in libshapesym.so, linked with
/// `-Bsymbolic-functions`, it is a relative relocation: only the entry jump reaches v2 there.
fn cpp_object_made_before_reload(cfg: Config) {
    for (exe, lib, patch) in [
        ("cpp", "libshape.so", "libshape_v2.so"),
        ("cpp_symbolic", "libshapesym.so", "libshapesym_v2.so"),
    ] {
        let mut t = Target::spawn(cfg.path(exe));
        t.expect("make", 0);
        t.expect("area 0", 10);
        let r = reload(&t, &cfg.path(patch), &[]);
        let area = symbol(&r.symbols, "_ZN5Shape4areaEv");
        assert_state(area, entry_in(area, lib), EntryState::Jump);
        t.expect("area 0", 20);
        // An object made now is v2's, with v2's vtable.
        t.expect("make", 1);
        t.expect("area 1", 20);
        rollback(&t);
        t.expect("area 0", 10);
        // And the one made under v2 follows the rollback.
        t.expect("area 1", 10);
        t.assert_alive();
    }
}

/// libdirect.so calls direct_version without its GOT (`-Bsymbolic-functions`, and a hidden
/// alias): a partial patch of direct_version reaches those calls through the old entry only.
fn direct_calls_inside_a_library(cfg: Config) {
    let mut t = Target::spawn(cfg.path("direct"));
    t.expect("version", 1);
    t.expect("twice", 2);
    t.expect("hidden_twice", 2);

    let r = reload(&t, &cfg.path("libdirect_v2.so"), &[]);
    let dv = symbol(&r.symbols, "direct_version");
    assert_state(dv, entry_in(dv, "libdirect.so"), EntryState::Jump);
    t.expect("version", 2);
    t.expect("twice", 4);
    t.expect("hidden_twice", 4);

    rollback(&t);
    t.expect("version", 1);
    t.expect("twice", 2);
    t.expect("hidden_twice", 2);
    t.assert_alive();
}

/// The same with `--got-only`: the program's GOT call switches, the library's direct calls
/// honestly keep running v1, and the report says why.
#[test]
fn direct_calls_stay_old_with_got_only() {
    let cfg = Config::DEFAULT;
    let mut t = Target::spawn(cfg.path("direct"));
    let r = reload(&t, &cfg.path("libdirect_v2.so"), &["--got-only"]);
    let dv = symbol(&r.symbols, "direct_version");
    assert_original_because(dv, entry_in(dv, "libdirect.so"), "--got-only");
    assert_eq!(
        r.pause.entries, 0,
        "a --got-only reload writes no entry: {r:?}"
    );
    t.expect("version", 2);
    t.expect("twice", 2);
    t.expect("hidden_twice", 2);
    rollback(&t);
    t.expect("version", 1);
    t.expect("twice", 2);
    t.assert_alive();
}

/// A `dlsym(RTLD_DEFAULT, ...)` result cached before the reload follows it, and one cached
/// while v2 is current follows the rollback.
#[test]
fn cached_dlsym_pointer() {
    let cfg = Config::DEFAULT;
    let mut t = basic(cfg);
    t.expect("cache", "ok");
    t.expect("cached", 1);
    reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    t.expect("cached", 2);
    rollback(&t);
    t.expect("cached", 1);

    reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    // dlsym after the reload finds v2 (the symbol table was redirected).
    t.expect("cache", "ok");
    t.expect("cached", 2);
    rollback(&t);
    t.expect("cached", 1);
    t.assert_alive();
}

/// A library dlopened after the reload: its constructor calls foo_version and keeps its address
/// as the loader resolved it then, v2's entry (the plugin and the commands are those of
/// core::dlopen_after_reload). That pointer follows the next reload and every rollback through v2's
/// entry.
#[test]
fn late_dlopen_constructor() {
    let cfg = Config::DEFAULT;
    let mut t = basic(cfg);
    reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    t.expect(
        &format!("dlopen {}", path_str(&cfg.path("libplugin.so"))),
        "ok",
    );
    t.expect("plugin_ctor", 2);
    t.expect("plugin_ctor_ptr", 2);
    t.expect("plugin", 2);

    reload(&t, &cfg.path("libfoo_v3.so"), &[]);
    t.expect("plugin_ctor_ptr", 3);
    t.expect("plugin", 3);
    rollback(&t);
    t.expect("plugin_ctor_ptr", 2);
    rollback(&t);
    t.expect("plugin_ctor_ptr", 1);
    t.expect("plugin", 1);
    t.expect("plugin_ctor", 2);
    t.assert_alive();
}

/// foo_add is 4 bytes (`lea eax,[rdi+rsi]; ret`): no room for a 5-byte jump. It falls back to
/// its GOT slots, and a pointer taken at start-up keeps running v1 — the honest fallback.
#[test]
fn too_short_function_falls_back() {
    let cfg = Config::DEFAULT;
    let mut t = basic(cfg);
    t.expect("start_add 1 1", 2);
    let r = reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    let add = symbol(&r.symbols, "foo_add");
    let e = entry_in(add, "libfoo.so");
    assert_original_because(add, e, "too short");
    assert!(
        e.reason.as_deref().unwrap_or_default().contains("4 bytes"),
        "foo_add is 4 bytes: {add:#?}"
    );
    // The other functions are not held back by it.
    let fv = symbol(&r.symbols, "foo_version");
    assert_state(fv, entry_in(fv, "libfoo.so"), EntryState::Jump);

    t.expect("add 1 1", 102);
    t.expect("start_add 1 1", 2);
    t.expect("start_ptr", 2);
    t.assert_alive();
    rollback(&t);
    t.expect("add 1 1", 2);
    t.expect("start_add 1 1", 2);
    t.assert_alive();
}

/// With text that cannot be written (no `/proc/self/mem` writes, no `mprotect` to an executable
/// protection: MemoryDenyWriteExecute on a hardened kernel), the reload still switches the GOT
/// and says why the entries kept their bytes.
#[test]
fn unwritable_text_falls_back() {
    let cfg = Config::DEFAULT;
    let mut t = basic(cfg);
    t.expect("seal_text", "ok");
    let r = reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    let fv = symbol(&r.symbols, "foo_version");
    assert_original_because(fv, entry_in(fv, "libfoo.so"), "cannot be made writable");
    assert_eq!(r.pause.entries, 0, "no entry could be written: {r:?}");
    // Said once more, for the operator who reads only the summary.
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("foo_version") && w.contains("cannot be made writable")),
        "{:?}",
        r.warnings
    );
    t.expect("version", 2);
    t.expect("twice", 20);
    t.expect("start_ptr", 1);

    let rb = rollback(&t);
    assert_eq!(rb.generation, 0, "{rb:?}");
    t.expect("version", 1);
    t.expect("start_ptr", 1);
    t.assert_alive();
}

/// `hotctl status` tells, symbol by symbol, the slots bound to the current code and what each
/// entry holds; a dry run tells what a reload would do to the entries, and writes none.
#[test]
fn status_reports_coverage() {
    let cfg = Config::DEFAULT;
    let mut t = basic(cfg);
    let v2 = cfg.path("libfoo_v2.so");

    let dry = reload(&t, &v2, &["--dry-run"]);
    assert!(dry.dry_run);
    let fv = symbol(&dry.symbols, "foo_version");
    assert!(!fv.entries.is_empty(), "{fv:#?}");
    for e in &fv.entries {
        assert_state(fv, e, EntryState::Jump);
    }
    let add = symbol(&dry.symbols, "foo_add");
    assert_original_because(add, entry_in(add, "libfoo.so"), "too short");
    // It wrote nothing.
    t.expect("start_ptr", 1);
    t.expect("version", 1);
    assert_eq!(status(&t).generation, 0);

    reload(&t, &v2, &[]);
    let st = status(&t);
    assert_eq!(st.generation, 1);
    let fv = symbol(&st.symbols, "foo_version");
    assert!(fv.slots > 0, "slots bound to v2: {fv:#?}");
    assert_state(fv, entry_in(fv, "libfoo.so"), EntryState::Jump);
    assert_state(
        fv,
        entry_of_generation(fv, "libfoo_v2.so", 1),
        EntryState::Current,
    );
    let add = symbol(&st.symbols, "foo_add");
    assert_original_because(add, entry_in(add, "libfoo.so"), "too short");

    // The status the raw socket gives is the same document.
    match raw_request(&t, &Request::status()) {
        Response::Status(raw) => assert_eq!(raw.symbols, st.symbols),
        other => panic!("expected a status, got {other:?}"),
    }

    rollback(&t);
    let st = status(&t);
    assert_eq!(st.generation, 0);
    let fv = symbol(&st.symbols, "foo_version");
    assert!(fv.slots > 0, "slots bound to v1: {fv:#?}");
    assert_state(
        fv,
        entry_of_generation(fv, "libfoo_v2.so", 1),
        EntryState::Jump,
    );
    assert_state(fv, entry_in(fv, "libfoo.so"), EntryState::Current);
    t.expect("start_ptr", 1);
    t.assert_alive();
}

/// A `--got-only` generation leaves the old entries as they are, and they are so again whenever
/// it is current, even after a normal reload on top of it was rolled back.
#[test]
fn got_only_keeps_old_entries() {
    let cfg = Config::DEFAULT;
    let mut t = basic(cfg);
    let r = reload(&t, &cfg.path("libfoo_v2.so"), &["--got-only"]);
    assert_eq!(r.pause.entries, 0, "{r:?}");
    let fv = symbol(&r.symbols, "foo_version");
    assert_original_because(fv, entry_in(fv, "libfoo.so"), "--got-only");
    t.expect("version", 2);
    t.expect("start_ptr", 1);

    let r = reload(&t, &cfg.path("libfoo_v3.so"), &[]);
    let fv = symbol(&r.symbols, "foo_version");
    assert_state(fv, entry_in(fv, "libfoo.so"), EntryState::Jump);
    assert_state(
        fv,
        entry_of_generation(fv, "libfoo_v2.so", 1),
        EntryState::Jump,
    );
    t.expect("version", 3);
    t.expect("start_ptr", 3);

    // Back to the --got-only generation: the entries hold their own bytes again.
    let rb = rollback(&t);
    assert_eq!(rb.generation, 1, "{rb:?}");
    let fv = symbol(&rb.symbols, "foo_version");
    assert_original_because(fv, entry_in(fv, "libfoo.so"), "--got-only");
    t.expect("version", 2);
    t.expect("start_ptr", 1);

    rollback(&t);
    t.expect("version", 1);
    t.expect("start_ptr", 1);
    t.assert_alive();
}

matrix!(
    pointer_taken_at_startup,
    cpp_object_made_before_reload,
    direct_calls_inside_a_library,
);

/// A thread that sits inside the bytes a jump would replace (blocked in a system call made from
/// there) is seen there by the look of a per-thread switch (through /proc: it is asleep): the
/// entry is not finished while it is inside. The next look signals it, which wakes it (pause
/// returns EINTR); it leaves the window, and on its way back the `int3` sends it to v2's code,
/// so the entry is then written. (With the full stop, kept
/// for a thread that blocks every signal, the agent gives up on that function alone:
/// `blockers::`.)
#[test]
fn thread_inside_an_entry_is_switched_once_it_leaves() {
    let cfg = Config::DEFAULT;
    let mut t = Target::spawn(cfg.path("park"));
    t.expect("version", 1);
    let before: u64 = t.cmd("rounds").parse().unwrap();
    let r = reload(&t, &cfg.path("libpark_v2.so"), &[]);
    assert!(r.pause.per_thread, "{:?}", r.pause);
    let parked = symbol(&r.symbols, "park_in_entry");
    assert_state(parked, entry_in(parked, "libpark.so"), EntryState::Jump);
    let other = symbol(&r.symbols, "park_version");
    assert_state(other, entry_in(other, "libpark.so"), EntryState::Jump);
    t.expect("version", 2);
    let after: u64 = t.cmd("rounds").parse().unwrap();
    assert!(
        after > before,
        "the look wakes the parked thread (pause returns EINTR) and it moves on"
    );
    rollback(&t);
    t.expect("version", 1);
    t.assert_alive();
}
