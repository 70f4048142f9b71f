//! The probe load: before its real `dlopen`, the agent loads (and unloads) the staged library in a
//! forked, throwaway copy of the target. A library that crashes there (here: a constructor that
//! faults or aborts, a destructor that faults) is refused with `bad_elf`; one the loader refuses
//! cleanly is refused with `load_failed`, dry run included. The copy writes nothing to the
//! target's stdout or stderr. `--no-probe` skips it. The verdict comes through a pipe, so a target
//! that reaps every child (or ignores SIGCHLD) cannot steal it.

use crate::common::{
    assert_unchanged, basic, basic_refuses, expect_foo_calls, refusals_keep_generation_1, V2,
};
use hotagent_tests::protocol::{ErrorCode, ReloadRequest, Request};
use hotagent_tests::*;
use std::path::Path;
use std::time::{Duration, Instant};

const CFG: Config = Config::DEFAULT;

fn raw_reload(t: &Target, path: &Path, dry_run: bool, no_probe: bool) -> protocol::Response {
    let req = ReloadRequest {
        dry_run,
        no_probe,
        ..reload_request(path)
    };
    raw_request(t, &Request::Reload(req))
}

#[test]
fn constructor_that_segfaults() {
    // A reload, a dry run, both on the socket too: each forks a copy that dies of SIGSEGV.
    let mut t = basic_refuses(
        &CFG.path("libcrash_ctor.so"),
        &[ErrorCode::BadElf],
        &["libcrash_ctor.so", "crashed a throwaway copy", "signal 11"],
    );
    // And the target still works after all those crashes of its copies.
    t.expect("bump", 1);
    t.expect("counter", 1);
}

/// A target with its own crash handler: the probe child resets it, so the copy dies of the signal
/// (and the verdict names it) instead of running the target's handler.
#[test]
fn target_crash_handlers_do_not_run_in_the_probe() {
    let mut t = Target::builder(CFG.path("reaper"))
        .arg("crashhandler")
        .spawn();
    for (lib, signal) in [
        ("libcrash_ctor.so", "signal 11"),
        ("libabort_ctor.so", "signal 6"),
    ] {
        let out = hotctl(&t, &["reload", path_str(&CFG.path(lib))]);
        let msg = check_failure(&out);
        assert!(
            msg.contains("crashed a throwaway copy") && msg.contains(signal),
            "{lib}: {msg}"
        );
    }
    t.expect("version", 1);
    reload(&t, &CFG.path("libfoo_v2.so"), &[]);
    t.expect("version", 2);
}

#[test]
fn constructor_that_aborts() {
    basic_refuses(
        &CFG.path("libabort_ctor.so"),
        &[ErrorCode::BadElf],
        &["libabort_ctor.so", "crashed a throwaway copy", "signal 6"],
    );
}

#[test]
fn a_crashing_patch_keeps_the_current_generation() {
    refusals_keep_generation_1(&["libcrash_ctor.so", "libabort_ctor.so"], |bad, msg| {
        assert!(msg.contains("crashed a throwaway copy"), "{bad}: {msg}");
    });
}

#[test]
fn no_probe_skips_the_probe() {
    let mut t = basic(CFG);
    let v2 = CFG.path("libfoo_v2.so");

    // Without the probe: a plain reload, and the probe phase took no time at all.
    let v = reload_json(&t, &v2, &["--no-probe"]);
    assert_eq!(v["generation"], 1, "{v}");
    assert_eq!(v["dry_run"], false, "{v}");
    assert_eq!(v["phases"]["probe_us"], 0, "{v}");
    expect_foo_calls(&mut t, &V2);
    assert_eq!(status(&t).generation, 1);
    rollback(&t);
    t.expect("version", 1);

    // With it (the default), the probe phase is timed. `--force`: the same bytes again would
    // reuse the copy still loaded, which needs no probe.
    let v = reload_json(&t, &v2, &["--force"]);
    assert_eq!(v["generation"], 1, "{v}");
    let probe_us = v["phases"]["probe_us"]
        .as_u64()
        .unwrap_or_else(|| panic!("no phases.probe_us: {v}"));
    assert!(probe_us > 0, "the probe should have taken some time: {v}");
    t.expect("version", 2);
    rollback(&t);

    // A dry run probes too, and says so.
    let v = reload_json(&t, &v2, &["--dry-run"]);
    assert_eq!(v["dry_run"], true, "{v}");
    assert!(v["phases"]["probe_us"].as_u64().unwrap_or(0) > 0, "{v}");

    // A dry run without the probe loads nothing anywhere, so a library whose constructor crashes
    // passes it: only the checks of the file and the plan are left.
    let crash = CFG.path("libcrash_ctor.so");
    let v = reload_json(&t, &crash, &["--dry-run", "--no-probe"]);
    assert_eq!(v["dry_run"], true, "{v}");
    assert_eq!(v["phases"]["probe_us"], 0, "{v}");
    assert_eq!(v["generation"], 1, "{v}");
    t.assert_alive();

    // Without the probe, the real dlopen still refuses a library it cannot bind, with the same
    // code the probe gives.
    let undef = CFG.path("libbad_undef.so");
    let msg = expect_fail(&t, &["reload", path_str(&undef), "--no-probe"]);
    assert!(msg.contains("nobody_defines_this_function"), "{msg}");
    let e = expect_error(
        &raw_reload(&t, &undef, false, true),
        &[ErrorCode::LoadFailed],
    );
    assert!(e.message.contains("nobody_defines_this_function"), "{e:?}");
    let e = expect_error(
        &raw_reload(&t, &undef, false, false),
        &[ErrorCode::LoadFailed],
    );
    assert!(e.message.contains("nobody_defines_this_function"), "{e:?}");
    assert_unchanged(&mut t);
}

/// The reaper fixture (its SIGCHLD handler collects every child, or with `ignore` the kernel
/// does): reloads, rollbacks and probe refusals all still work, round after round.
fn reaper_scenario(mode: Option<&str>) {
    let mut b = Target::builder(CFG.path("reaper"));
    if let Some(m) = mode {
        b = b.arg(m);
    }
    let mut t = b.spawn();
    let handler = mode.is_none();
    if handler {
        // The handler does reap: a child that exits is collected.
        t.cmd_i("spawn");
        assert!(
            t.wait_for_count("reaped", 1) >= 1,
            "the SIGCHLD handler reaped nothing"
        );
    }
    // A child that outlives every reload: the probe's wait must be for its own child only.
    t.cmd_i("hold");

    let v2 = CFG.path("libfoo_v2.so");
    let crash = CFG.path("libcrash_ctor.so");
    let abort = CFG.path("libabort_ctor.so");
    let undef = CFG.path("libbad_undef.so");
    for round in 0..3 {
        for bad in [&crash, &abort] {
            let msg = expect_fail(&t, &["reload", path_str(bad)]);
            assert!(
                msg.contains("crashed a throwaway copy"),
                "round {round}: {msg}"
            );
            let e = expect_error(&raw_reload(&t, bad, false, false), &[ErrorCode::BadElf]);
            assert!(
                e.message.contains("crashed a throwaway copy"),
                "round {round}: {e:?}"
            );
            let e = expect_error(&raw_reload(&t, bad, true, false), &[ErrorCode::BadElf]);
            assert!(
                e.message.contains("crashed a throwaway copy"),
                "round {round}: {e:?}"
            );
            t.assert_alive();
        }
        let e = expect_error(
            &raw_reload(&t, &undef, true, false),
            &[ErrorCode::LoadFailed],
        );
        assert!(e.message.contains("nobody_defines_this_function"), "{e:?}");
        t.expect("version", 1);

        let r = reload(&t, &v2, &[]);
        assert_eq!(r.generation, 1, "round {round}: {r:?}");
        expect_foo_calls(&mut t, &V2);
        rollback(&t);
        t.expect("version", 1);
        t.expect("add 2 3", 5);
    }
    if handler {
        eprintln!(
            "reaper: the SIGCHLD handler collected {} children (1 of its own, the rest probes)",
            t.cmd_i("reaped")
        );
    }
    let st = status(&t);
    assert_eq!(st.generation, 0, "{st:?}");
    assert_eq!(
        t.stderr_text(),
        "",
        "something wrote to the target's stderr"
    );
    let done = t.finish();
    assert!(done.status.success(), "{done:?}");
}

#[test]
fn target_that_reaps_every_child() {
    reaper_scenario(None);
}

#[test]
fn target_that_ignores_sigchld() {
    reaper_scenario(Some("ignore"));
}

#[test]
fn the_probe_copy_keeps_quiet() {
    let mut t = basic(CFG);
    let noisy = CFG.path("libnoisy_ctor.so");
    // A dry run loads it only in the probe: nothing may reach the target's stderr.
    let v = reload_json(&t, &noisy, &["--dry-run"]);
    assert_eq!(v["dry_run"], true, "{v}");
    // The real reload runs the constructor twice (probe, then target): one line, from the target.
    let r = reload(&t, &noisy, &[]);
    assert_eq!(r.generation, 1, "{r:?}");
    t.expect("version", 2);
    let start = Instant::now();
    while t.stderr_text().is_empty() && start.elapsed() < DEADLINE {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Give a late second line the time to show up.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        t.stderr_text(),
        format!("libnoisy: constructor ran in pid {}\n", t.pid()),
        "the constructor should have spoken once, in the target"
    );
    rollback(&t);
    t.expect("version", 1);
}

#[test]
fn destructor_that_segfaults() {
    // Loading it works; unloading it crashes. The probe unloads it in the copy: refused here,
    // rather than accepted and crashing the target when it exits.
    let t = basic_refuses(
        &CFG.path("libcrash_dtor.so"),
        &[ErrorCode::BadElf],
        &["libcrash_dtor.so", "crashed a throwaway copy", "signal 11"],
    );
    let done = t.finish();
    assert!(done.status.success(), "the target's exit: {done:?}");
}

/// The hazard: a copy forked while another thread holds the loader's module-list lock
/// (`dl_load_write_lock`: inside `dlopen`/`dlclose` while a module is linked or unlinked, or
/// walking the modules with `dl_iterate_phdr`). glibc's fork does not reset that lock, so the
/// copy's `dlopen` waited forever and the good library was refused after 10 s ("the probe load
/// did not finish"). Now a copy born that way is replaced by a new one, and the reload succeeds
/// once the other thread lets go (here within its 3 s).
#[test]
fn probe_forked_while_another_thread_holds_the_loader_lock() {
    let mut t = Target::spawn(CFG.path("busyloader"));
    t.expect("walk 3000", "walking");
    let start = Instant::now();
    let r = reload(&t, &CFG.path("libfoo_v2.so"), &[]);
    assert_eq!(r.generation, 1, "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "the reload waited {:?} for a lock held 3 s",
        start.elapsed()
    );
    t.expect("version", 2);
    rollback(&t);
    t.expect("version", 1);
}

/// The scenario as reported: a thread inside `dlopen` of a library whose constructor sleeps 3 s
/// when the reload comes. The reload succeeds (after the other load, which holds the loader's
/// big lock meanwhile).
#[test]
fn reload_while_another_thread_runs_a_slow_constructor() {
    let dir = scratch();
    let mark = dir.path().join("constructor-started");
    let mut t = Target::builder(CFG.path("busyloader"))
        .env("SLOW_CTOR_MARK", &mark)
        .env("SLOW_CTOR_MS", "3000")
        .spawn();
    let slow = CFG.path("libslow_ctor.so");
    t.expect(&format!("load {}", path_str(&slow)), "loading");
    let start = Instant::now();
    while !mark.exists() {
        assert!(
            start.elapsed() < DEADLINE,
            "the slow constructor never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = reload(&t, &CFG.path("libfoo_v2.so"), &[]);
    assert_eq!(r.generation, 1, "{r:?}");
    t.expect("version", 2);
}

/// A library whose own constructor never returns is still refused when the probe's time is up,
/// and the target never loads it.
#[test]
fn constructor_that_never_returns_is_refused() {
    let mut t = basic(CFG);
    let out = hotctl(&t, &["reload", path_str(&CFG.path("libhang_ctor.so"))]);
    let msg = check_failure(&out);
    assert!(msg.contains("did not finish within"), "{msg}");
    t.expect("version", 1);
    assert_eq!(status(&t).generation, 0);
    reload(&t, &CFG.path("libfoo_v2.so"), &[]);
    t.expect("version", 2);
}
