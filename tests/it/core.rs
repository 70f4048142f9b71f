//! The core contract, in every configuration of the matrix: calls switch, new code calls new code,
//! partial patches, state, lazy first calls, rebuilt files, generations and rollback, dlopen after a
//! reload, read-only data, dry runs.

use crate::common::{assert_foo, basic, V1, V2, V3};
use hotagent_tests::protocol::{ErrorCode, ReloadReport, Request};
use hotagent_tests::*;
use std::collections::BTreeSet;

#[track_caller]
fn assert_generation(t: &Target, generation: u32) {
    let s = status(t);
    assert_eq!(s.generation, generation, "status: {s:?}");
    assert_eq!(
        s.generations.len(),
        generation as usize,
        "one entry per generation: {s:?}"
    );
    assert_eq!(s.pid, t.pid());
}

fn names(r: &ReloadReport) -> BTreeSet<String> {
    r.symbols.iter().map(|s| s.name.clone()).collect()
}

fn kind_of<'a>(r: &'a ReloadReport, name: &str) -> &'a str {
    r.symbols
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.kind.as_str())
        .unwrap_or_else(|| panic!("{name} not in the report: {r:?}"))
}

fn direct_call_switches(cfg: Config) {
    let mut t = basic(cfg);
    assert_foo(&mut t, &V1);
    assert_generation(&t, 0);

    let v2 = cfg.path("libfoo_v2.so");
    let r = reload(&t, &v2, &[]);
    assert_eq!(r.generation, 1, "{r:?}");
    assert!(!r.dry_run);
    assert_eq!(r.path, path_str(&v2));
    assert!(
        r.module.contains("libfoo.so"),
        "replaced module: {:?}",
        r.module
    );
    assert!(
        r.slots >= 1,
        "at least the program's slot for foo_version: {r:?}"
    );
    let got = names(&r);
    for f in [
        "foo_version",
        "foo_add",
        "foo_twice",
        "foo_bump",
        "foo_late",
        "foo_table_get",
    ] {
        assert!(got.contains(f), "{f} should be switched: {got:?}");
        assert_eq!(kind_of(&r, f), "function");
    }
    for f in ["foo_only_v1", "foo_table_v1", "unrelated_fn"] {
        assert!(!got.contains(f), "{f} is not in v2 and must stay: {got:?}");
    }
    let fv = r.symbols.iter().find(|s| s.name == "foo_version").unwrap();
    assert!(
        fv.slots + fv.lazy >= 1,
        "the program's own call to foo_version is a slot: {fv:?}"
    );

    assert_foo(&mut t, &V2);
    let st = status(&t);
    assert_eq!(st.generation, 1);
    assert_eq!(st.generations.len(), 1);
    assert_eq!(st.generations[0].generation, 1);
    assert_eq!(st.generations[0].path, path_str(&v2));
    assert!(st.generations[0].symbols.iter().any(|n| n == "foo_version"));
    t.assert_alive();
}

fn self_call_runs_new_code(cfg: Config) {
    let mut t = basic(cfg);
    t.expect("twice", 2);
    reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    // v2's foo_twice calls foo_version through v2's own slot: that must reach v2 (2*10), not v1
    // (1*10).
    t.expect("twice", 20);
    rollback(&t);
    t.expect("twice", 2);
}

fn partial_patch(cfg: Config) {
    let mut t = basic(cfg);
    let r = reload(&t, &cfg.path("libfoo_partial.so"), &[]);
    assert_eq!(
        names(&r),
        BTreeSet::from(["foo_version".to_string()]),
        "{r:?}"
    );
    t.expect("version", 42);
    // v1's own code calls the new foo_version through v1's slot.
    t.expect("twice", 84);
    t.expect("only", 542);
    // Everything else is still v1.
    t.expect("add 2 3", 5);
    t.expect("late", 11);
    t.expect("table 0", 1);
    t.expect("bump", 1);
    rollback(&t);
    t.expect("version", 1);
    t.expect("twice", 2);
    t.expect("only", 501);
}

fn state_is_kept(cfg: Config) {
    let mut t = basic(cfg);
    t.expect("bump", 1);
    t.expect("bump", 2);
    t.expect("counter", 2);
    reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    // v2's foo_bump adds 10 to the storage v1 used (not to v2's own, fresh, zero).
    t.expect("bump", 12);
    t.expect("counter", 12);
    reload(&t, &cfg.path("libfoo_v3.so"), &[]);
    t.expect("bump", 112);
    rollback(&t);
    t.expect("bump", 122);
    rollback(&t);
    t.expect("bump", 123);
    t.expect("counter", 123);
}

fn late_first_call(cfg: Config) {
    let mut t = basic(cfg);
    reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    // foo_late was never called before the reload (with lazy binding its slot is unresolved).
    t.expect("late", 22);
    rollback(&t);
    t.expect("late", 11);
}

fn rebuilt_in_place(cfg: Config) {
    let mut t = basic(cfg);
    let dir = scratch();
    let patch = dir.path().join("libfoo.so");
    copy_atomic(&cfg.path("libfoo_v2.so"), &patch);
    reload(&t, &patch, &[]);
    assert_foo(&mut t, &V2);
    // A new build lands at the same path (a new file renamed over it, as a build does).
    copy_atomic(&cfg.path("libfoo_v3.so"), &patch);
    let r = reload(&t, &patch, &[]);
    assert_eq!(r.generation, 2);
    assert_foo(&mut t, &V3);
    let st = status(&t);
    assert_eq!(st.generations.len(), 2);
    assert!(
        st.generations.iter().all(|g| g.path == path_str(&patch)),
        "{st:?}"
    );
    assert_ne!(
        st.generations[0].staged, st.generations[1].staged,
        "each generation loads its own private copy"
    );
    rollback(&t);
    assert_foo(&mut t, &V2);
    rollback(&t);
    assert_foo(&mut t, &V1);
}

fn chain_and_rollback(cfg: Config) {
    let mut t = basic(cfg);
    let r = reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    assert_eq!(r.generation, 1);
    let r = reload(&t, &cfg.path("libfoo_v3.so"), &[]);
    assert_eq!(r.generation, 2);
    assert_foo(&mut t, &V3);
    assert_generation(&t, 2);

    let rb = rollback(&t);
    assert_eq!((rb.from, rb.generation), (2, 1), "{rb:?}");
    assert_foo(&mut t, &V2);
    assert_generation(&t, 1);

    let rb = rollback(&t);
    assert_eq!((rb.from, rb.generation), (1, 0), "{rb:?}");
    assert!(rb.slots >= 1, "{rb:?}");
    assert_foo(&mut t, &V1);
    assert_generation(&t, 0);

    // Nothing left to roll back: an error, nothing changes.
    let msg = expect_fail(&t, &["rollback"]);
    let lower = msg.to_lowercase();
    assert!(
        ["roll", "generation", "nothing"]
            .iter()
            .any(|w| lower.contains(w)),
        "the message should say there is nothing to roll back: {msg}"
    );
    let resp = raw_request(&t, &Request::rollback());
    expect_error(&resp, &[ErrorCode::NothingToRollBack]);
    assert_foo(&mut t, &V1);
    assert_generation(&t, 0);

    // And it still works after all that.
    reload(&t, &cfg.path("libfoo_v3.so"), &[]);
    assert_foo(&mut t, &V3);
    assert_generation(&t, 1);
}

fn dlopen_after_reload(cfg: Config) {
    let mut t = basic(cfg);
    let dir = scratch();
    let plugin_a = dir.path().join("libplugin_a.so");
    let plugin_b = dir.path().join("libplugin_b.so");
    copy_atomic(&cfg.path("libplugin.so"), &plugin_a);
    copy_atomic(&cfg.path("libplugin.so"), &plugin_b);

    reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    t.expect(&format!("dlopen {}", path_str(&plugin_a)), "ok");
    // The constructor ran during dlopen, after the reload: it saw generation 1.
    t.expect("plugin_ctor", 2);
    t.expect("plugin", 2);

    // Back to generation 0: the plugin loaded during generation 1 follows.
    rollback(&t);
    t.expect("plugin", 1);
    t.expect("version", 1);

    t.expect(&format!("dlopen {}", path_str(&plugin_b)), "ok");
    t.expect("plugin_ctor", 1);
    t.expect("plugin", 1);

    // A module loaded before a reload is switched like the others.
    reload(&t, &cfg.path("libfoo_v3.so"), &[]);
    t.expect("plugin", 3);
    t.expect("plugin_ctor", 1);
}

fn rodata_from_new_version(cfg: Config) {
    let mut t = basic(cfg);
    for i in 0..4 {
        t.expect(&format!("table_v1 {i}"), V1.table[i]);
    }
    let r = reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    assert_eq!(kind_of(&r, "foo_table"), "rodata", "{r:?}");
    for i in 0..4 {
        // v2's reader reads v2's table...
        t.expect(&format!("table {i}"), V2.table[i]);
        // ... and so does v1's reader, which only v1 has: the slot names the table.
        t.expect(&format!("table_v1 {i}"), V2.table[i]);
    }
    reload(&t, &cfg.path("libfoo_v3.so"), &[]);
    t.expect("table 3", V3.table[3]);
    t.expect("table_v1 3", V3.table[3]);
    rollback(&t);
    rollback(&t);
    for i in 0..4 {
        t.expect(&format!("table {i}"), V1.table[i]);
        t.expect(&format!("table_v1 {i}"), V1.table[i]);
    }
}

fn dry_run_writes_nothing(cfg: Config) {
    let mut t = basic(cfg);
    let v2 = cfg.path("libfoo_v2.so");
    let r = reload(&t, &v2, &["--dry-run"]);
    assert!(r.dry_run, "{r:?}");
    assert_eq!(r.generation, 1, "the generation a reload would create");
    assert!(r.slots >= 1, "the slots a reload would write: {r:?}");
    assert!(names(&r).contains("foo_version"));

    assert_generation(&t, 0);
    assert_foo(&mut t, &V1);
    t.expect("late", 11);
    t.expect("bump", 1);

    // The real one still works afterwards.
    let r = reload(&t, &v2, &[]);
    assert_eq!(r.generation, 1);
    assert_foo(&mut t, &V2);

    // A dry run at generation 1 does not move it either.
    let r = reload(&t, &cfg.path("libfoo_v3.so"), &["--dry-run"]);
    assert!(r.dry_run);
    assert_eq!(r.generation, 2);
    assert_foo(&mut t, &V2);
    assert_generation(&t, 1);
}

fn dry_run_plans_what_reload_does(cfg: Config) {
    let t = basic(cfg);
    let v2 = cfg.path("libfoo_v2.so");
    // Nothing runs in the target between the two, so the plan must match what is done — except
    // for the new library's own slots: a dry run loads nothing, so it cannot count those.
    let plan = reload(&t, &v2, &["--dry-run"]);
    let done = reload(&t, &v2, &[]);
    assert_eq!(names(&plan), names(&done));
    assert_eq!(plan.module, done.module);
    assert_eq!(plan.generation, done.generation);
    assert_eq!(plan.symtab_entries, done.symtab_entries);
    assert!(plan.slots <= done.slots, "plan {plan:?}\ndone {done:?}");
    for p in &plan.symbols {
        let d = done.symbols.iter().find(|d| d.name == p.name).unwrap();
        let new_lib = |m: &String| m.starts_with("libfoo_v2.so");
        let planned: BTreeSet<_> = p.modules.iter().filter(|m| !new_lib(m)).collect();
        let written: BTreeSet<_> = d.modules.iter().filter(|m| !new_lib(m)).collect();
        assert_eq!(
            planned, written,
            "modules of {}: plan {p:?}\ndone {d:?}",
            p.name
        );
        assert!(p.slots <= d.slots, "plan {p:?}\ndone {d:?}");
        assert_eq!(
            (p.lazy, p.other),
            (d.lazy, d.other),
            "plan {p:?}\ndone {d:?}"
        );
    }
}

/// A function pointer initialised in data follows the reload: in a PIE it is a data slot the
/// loader filled by symbol; in a non-PIE it holds the canonical PLT entry, which jumps through the
/// executable's own (switched) slot.
fn static_pointer_follows(cfg: Config) {
    let mut t = basic(cfg);
    t.expect("ptr", 1);
    reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    t.expect("ptr", 2);
    reload(&t, &cfg.path("libfoo_v3.so"), &[]);
    t.expect("ptr", 3);
    rollback(&t);
    t.expect("ptr", 2);
    rollback(&t);
    t.expect("ptr", 1);
}

matrix!(
    static_pointer_follows,
    direct_call_switches,
    self_call_runs_new_code,
    partial_patch,
    state_is_kept,
    late_first_call,
    rebuilt_in_place,
    chain_and_rollback,
    dlopen_after_reload,
    rodata_from_new_version,
    dry_run_writes_nothing,
    dry_run_plans_what_reload_does,
);
