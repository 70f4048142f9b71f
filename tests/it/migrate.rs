//! Migrate hooks (issue 10): a variable that grew is taken over by the new build's storage,
//! filled by `hotagent_migrate` from `hotagent_previous_symbol` while every other thread is
//! parked, and handed back by `hotagent_unmigrate` on rollback. Every refusal — a veto in
//! prepare, a failing migrate, no hook at all, a hook that crashes or hangs, a variable the
//! executable holds a copy of — leaves the target running unchanged, at the same generation.

use hotagent_tests::*;
use std::path::PathBuf;

const CFG: Config = Config::DEFAULT;

fn lib(name: &str) -> PathBuf {
    CFG.path(name)
}

/// Bumps the counter five times from the command line, at generation 0.
fn five(t: &mut Target) {
    t.expect("version", 1);
    for n in 1..=5 {
        t.expect("bump", n);
    }
}

/// Four threads bump flat out through a reload and a rollback; no increment is lost: the count
/// the library ends with is every call made, so migrate and unmigrate each copied it while no
/// thread could bump the storage being left (a copy made with threads running loses the
/// increments that land between the copy and the switch).
#[test]
fn a_grown_struct_is_carried_over_under_load_and_handed_back() {
    let mut t = Target::spawn(lib("grow"));
    five(&mut t);
    t.expect("spin 4", "ok");
    t.wait_for_count("count", 1000);

    let r = reload(&t, &lib("libgrow_v2.so"), &[]);
    assert_eq!(r.generation, 1);
    let var = r
        .symbols
        .iter()
        .find(|s| s.name == "grow_stats")
        .unwrap_or_else(|| panic!("grow_stats not in {:?}", r.symbols));
    assert_eq!(var.kind, "variable");
    assert!(r.phases.migrate_us > 0, "{:?}", r.phases);
    assert!(r.phases.committed_us > 0, "{:?}", r.phases);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("keeps private state of its own")),
        "{:?}",
        r.warnings
    );
    // 2 once hotagent_committed ran, after the switch (20 before).
    t.expect("version", 2);
    let after_reload = t.cmd_i("count");
    assert!(after_reload > 5, "the count was reset: {after_reload}");
    t.wait_for_count("count", after_reload + 1000);

    let back = rollback(&t);
    assert_eq!(back.generation, 0);
    assert!(back.unmigrate_us > 0, "{back:?}");
    t.expect("version", 1);
    let spun = t.cmd_i("stop");
    assert!(spun > 0);
    // Five from the command line, every spinner call, nothing lost either way.
    t.expect("count", 5 + spun);
    t.expect("bump", 6 + spun);
    t.assert_alive();
}

/// The dry run decides as the reload does: the grown struct passes with the migrate hook.
#[test]
fn the_dry_run_accepts_a_grown_struct_with_a_migrate_hook() {
    let mut t = Target::spawn(lib("grow"));
    five(&mut t);
    let dry = reload(&t, &lib("libgrow_v2.so"), &["--dry-run"]);
    assert!(dry.dry_run);
    assert!(dry
        .symbols
        .iter()
        .any(|s| s.name == "grow_stats" && s.kind == "variable"));
    assert_eq!(status(&t).generation, 0);
    t.expect("version", 1);
    t.expect("count", 5);
}

/// A refused reload: exit status 1, one error line naming `why`, the target unchanged.
#[track_caller]
fn refused(t: &mut Target, patch: &str, extra: &[&str], why: &[&str]) -> String {
    let path = lib(patch);
    let mut args = vec!["reload", path_str(&path)];
    args.extend_from_slice(extra);
    let out = hotctl(t, &args);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let line = check_failure(&out);
    for part in why {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
    }
    assert_eq!(status(&*t).generation, 0);
    t.expect("version", 1);
    t.expect("count", 5);
    t.assert_alive();
    line
}

#[test]
fn a_veto_a_failing_migrate_or_no_hook_refuses_and_changes_nothing() {
    let mut t = Target::spawn(lib("grow"));
    five(&mut t);
    refused(
        &mut t,
        "libgrow_veto.so",
        &[],
        &["hotagent_prepare refused", "the moon is wrong"],
    );
    refused(
        &mut t,
        "libgrow_failmig.so",
        &[],
        &["hotagent_migrate refused", "cannot migrate this state"],
    );
    // Without the probe the same hooks run in the target itself, and refuse the same way.
    refused(
        &mut t,
        "libgrow_failmig.so",
        &["--no-probe"],
        &[
            "hotagent_migrate refused",
            "cannot migrate this state",
            "nothing was switched",
        ],
    );
    refused(
        &mut t,
        "libgrow_veto.so",
        &["--no-probe"],
        &[
            "hotagent_prepare refused",
            "the moon is wrong",
            "nothing was switched",
        ],
    );
    refused(
        &mut t,
        "libgrow_nohook.so",
        &[],
        &[
            "grow_stats changed size",
            "8 bytes",
            "64",
            "without a migrate hook",
        ],
    );
    // The same refusal from the dry run.
    refused(
        &mut t,
        "libgrow_nohook.so",
        &["--dry-run"],
        &["grow_stats changed size", "without a migrate hook"],
    );
    assert!(status(&t).refused_loads.is_empty());
    // And the real one still goes through afterwards.
    let r = reload(&t, &lib("libgrow_v2.so"), &[]);
    assert_eq!(r.generation, 1);
    t.expect("count", 5);
    t.expect("bump", 6);
}

/// A hook that crashes or hangs every time is met first in the probe's throwaway copy.
#[test]
fn hooks_that_crash_or_hang_are_caught_by_the_probe() {
    let mut t = Target::spawn(lib("grow"));
    five(&mut t);
    refused(
        &mut t,
        "libgrow_crash.so",
        &[],
        &["hotagent_prepare crashed a throwaway copy", "signal 11"],
    );
    refused(
        &mut t,
        "libgrow_hang.so",
        &["--hook-timeout", "300ms"],
        &["hotagent_prepare did not return within 300 ms"],
    );
    assert!(status(&t).refused_loads.is_empty());
}

/// Without the probe, a hanging hook is stopped waiting for in the target: the reload is
/// refused, and the library stays mapped (its hook still runs on the abandoned thread), named
/// as a refused load. The target keeps serving, and a good reload still works.
#[test]
fn a_hook_that_hangs_in_the_target_is_abandoned_and_the_reload_refused() {
    let mut t = Target::spawn(lib("grow"));
    five(&mut t);
    let line = refused(
        &mut t,
        "libgrow_hang.so",
        &["--no-probe", "--hook-timeout", "300ms"],
        &[
            "hotagent_prepare did not return within 300 ms",
            "abandoned thread",
        ],
    );
    assert!(line.contains("stays mapped"), "{line}");
    let st = status(&t);
    assert_eq!(st.refused_loads.len(), 1, "{st:?}");
    let r = reload(&t, &lib("libgrow_v2.so"), &["--no-probe"]);
    assert_eq!(r.generation, 1);
    t.expect("count", 5);
    rollback(&t);
    t.expect("count", 5);
}

/// The executable reads the struct through a copy relocation: it can never change size.
#[test]
fn a_copy_relocated_variable_cannot_grow() {
    let mut t = Target::spawn(lib("grow_copy"));
    t.expect("bump", 1);
    let path = lib("libgrow_v2.so");
    let out = hotctl(&t, &["reload", path_str(&path)]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    for part in ["grow_stats", "copy relocation"] {
        assert!(out.stderr.contains(part), "{part:?} missing: {out}");
    }
    assert_eq!(status(&t).generation, 0);
    t.expect("direct", 1);
    t.expect("version", 1);
}

/// `make example-migrate`: the README's growing-struct example runs, its output line for line.
#[test]
fn the_migrate_example_runs() {
    let text = run_example("migrate");
    for line in [
        "v1: 3 requests",
        "v2: 5 requests, 700 bytes since the reload, largest 400",
        "v1: 6 requests",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
}

/// `make example-rust`: a patch library written in Rust on the hotagent-api crate, whose
/// `hooks!` migrate and unmigrate carry a private static over and back through
/// `previous_symbol` — the crate's hooks in a real target.
#[test]
fn the_rust_patch_example_carries_its_count_both_ways() {
    let text = run_example("rust");
    assert!(
        text.contains("C v1 -> Rust v2 -> C v1 in one process, the count carried both ways"),
        "{text}"
    );
}

/// A stripped library's private objects are found through its separate debug file (installed by
/// build-id under /usr/lib/debug, as distributions ship them): migrate finds version 1's static
/// `private_marks` there, and refuses without it.
#[test]
fn previous_symbol_finds_a_stripped_librarys_statics_in_its_debug_file() {
    if !is_root() {
        eprintln!("skipped: installing a debug file under /usr/lib/debug needs root");
        return;
    }
    let dir = scratch();
    let stripped = dir.path().join("libgrow.so");
    let debug = dir.path().join("libgrow.debug");
    let tool = |cmd: &str, args: &[&str]| {
        let ok = std::process::Command::new(cmd)
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{cmd} {args:?} failed");
    };
    let v1 = lib("libgrow.so");
    tool(
        "objcopy",
        &["--only-keep-debug", path_str(&v1), path_str(&debug)],
    );
    tool(
        "strip",
        &["--strip-all", "-o", path_str(&stripped), path_str(&v1)],
    );
    // /usr/lib/debug/.build-id/ab/cdef….debug, from the build-id note.
    let out = std::process::Command::new("readelf")
        .args(["-n", path_str(&stripped)])
        .output()
        .expect("readelf");
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("a build-id")
        .to_string();
    let installed = PathBuf::from(format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &id[..2],
        &id[2..]
    ));
    let run = |with_debug: bool| {
        if with_debug {
            std::fs::create_dir_all(installed.parent().expect("folder")).expect("debug folder");
            std::fs::copy(&debug, &installed).expect("install the debug file");
        } else {
            let _ = std::fs::remove_file(&installed);
        }
        let mut t = Target::builder(lib("grow"))
            .env("LD_LIBRARY_PATH", dir.path())
            .spawn();
        five(&mut t);
        let path = lib("libgrow_v2.so");
        let out = hotctl(&t, &["reload", path_str(&path)]);
        (t, out)
    };
    let (mut t, out) = run(true);
    let _ = std::fs::remove_file(&installed);
    assert!(out.success(), "{out}");
    t.expect("version", 2);
    t.expect("count", 5);
    // Without it the stripped library names no statics: migrate refuses, nothing changes.
    let (mut t, out) = run(false);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(out.stderr.contains("private_marks not found"), "{out}");
    t.expect("version", 1);
}
