//! `hotctl reload --changed-only` (issue 9, item 1's first way forward): only the exports whose
//! code differs from the running build's are switched; the others keep running the old code.
//! When the private layouts differ, only the private data the switched code can reach must
//! match. Built from libpriv.c: v4 fixes `priv_count` and grows `ops`, which only unchanged
//! functions use; v5 also changes `priv_swap_ops` to write the grown field.

use hotagent_protocol::ReloadReport;
use hotagent_tests::*;
use std::path::PathBuf;
use std::process::Command;

const CFG: Config = Config::DEFAULT;

fn lib(name: &str) -> PathBuf {
    CFG.path(name)
}

fn line<'a>(r: &'a ReloadReport, start: &str) -> Option<&'a String> {
    r.warnings.iter().find(|w| w.starts_with(start))
}

fn switched(r: &ReloadReport) -> Vec<&str> {
    r.symbols.iter().map(|s| s.name.as_str()).collect()
}

/// A refused build left nothing mapped and the target at generation 0.
fn untouched(t: &Target) {
    assert_eq!(status(t).generation, 0);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", t.pid())).unwrap();
    assert!(
        !maps.contains("memfd:"),
        "a refused build was mapped:\n{maps}"
    );
}

fn started() -> Target {
    let mut t = Target::spawn(lib("priv"));
    for n in 1..=3 {
        t.expect("bump", n);
    }
    t.expect("swap", "ok");
    t.expect("ops 5", 11);
    t
}

/// v4's layout differs (`ops` grew), so a whole-library reload is refused and names the way
/// forward; with --changed-only only `priv_count` switches: the fix runs on the live counter,
/// every other function is still the old code on the old state (the swapped `ops` of the
/// running copy, the counter, the buffer), the dry run said exactly this, and rollback works.
#[test]
fn changed_only_switches_the_fix_and_leaves_the_rest_on_the_old_state() {
    let mut t = started();
    let v4 = lib("libpriv_v4.so");
    let msg = expect_fail(&t, &["reload", path_str(&v4)]);
    for part in ["ops: 32 bytes, was 24", "--changed-only"] {
        assert!(msg.contains(part), "{part:?} missing: {msg}");
    }
    untouched(&t);

    let dry = reload(&t, &v4, &["--changed-only", "--dry-run"]);
    let r = reload(&t, &v4, &["--changed-only"]);
    assert_eq!(switched(&dry), ["priv_count"]);
    assert_eq!(switched(&r), ["priv_count"]);
    let changed = line(&r, "--changed-only:").unwrap_or_else(|| panic!("{:?}", r.warnings));
    assert_eq!(Some(changed), line(&dry, "--changed-only:"));
    assert!(
        changed.contains("1 of 11 functions of libpriv.so changed; 10 keep the running code"),
        "{changed}"
    );
    let sharing = line(&r, "private state shared").unwrap_or_else(|| panic!("{:?}", r.warnings));
    assert_eq!(Some(sharing), line(&dry, "private state shared"));
    assert!(
        sharing.contains("--changed-only") && sharing.contains("ops: 32 bytes, was 24"),
        "{sharing}"
    );

    t.expect("count", 1003);
    t.expect("version", 1);
    t.expect("ops 5", 11);
    t.expect("swap", "ok");
    t.expect("ops 5", 12);
    t.expect("bump", 4);
    t.expect("count", 1004);
    t.expect("buf", "[abcd]");
    t.expect("tls", 4);

    rollback(&t);
    assert_eq!(status(&t).generation, 0);
    t.expect("count", 4);
    t.expect("bump", 5);
    t.assert_alive();
}

/// v5's changed `priv_swap_ops` writes the grown `ops`: refused even with --changed-only (dry
/// run too), naming the object; nothing loaded, the target unchanged.
#[test]
fn changed_only_refuses_a_changed_function_that_uses_what_differs() {
    let mut t = started();
    let v5 = lib("libpriv_v5.so");
    for extra in [&["--dry-run"][..], &[]] {
        let mut args = vec!["reload", path_str(&v5), "--changed-only"];
        args.extend_from_slice(extra);
        let msg = expect_fail(&t, &args);
        for part in [
            "even with --changed-only",
            "ops: 32 bytes, was 24",
            "nothing was loaded",
        ] {
            assert!(msg.contains(part), "{part:?} missing: {msg}");
        }
    }
    untouched(&t);
    t.expect("count", 3);
    t.expect("ops 5", 11);
}

/// A second build of the same source: nothing to switch, said plainly, nothing loaded.
#[test]
fn changed_only_with_nothing_changed_says_so() {
    let mut t = started();
    let same = lib("libpriv_same.so");
    for extra in [&["--dry-run"][..], &[]] {
        let mut args = vec!["reload", path_str(&same), "--changed-only"];
        args.extend_from_slice(extra);
        let msg = expect_fail(&t, &args);
        assert!(
            msg.contains(
                "nothing changed: every function of libpriv.so is identical in libpriv_same.so"
            ),
            "{msg}"
        );
    }
    untouched(&t);
    t.expect("count", 3);
}

/// v2 changes `priv_version` only and keeps the layout: that one function switches (the
/// private state shared as for a whole reload), and hotctl's text says how many did not.
#[test]
fn changed_only_with_the_same_layout_switches_only_the_changed_function() {
    let mut t = started();
    let out = hotctl(
        &t,
        &["reload", path_str(&lib("libpriv_v2.so")), "--changed-only"],
    );
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.contains("--changed-only: 1 of 11 functions of libpriv.so changed; 10 keep the running code; switched: priv_version"),
        "{out}"
    );
    t.expect("version", 2);
    t.expect("count", 3);
    t.expect("bump", 4);
    t.expect("buf", "[abcd]");
}

/// Without symbol tables nothing can tell a function's references apart: refused, saying why.
#[test]
fn changed_only_needs_symbols() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v4) = (
        dir.path().join("libpriv.so"),
        dir.path().join("libpriv_v4.so"),
    );
    for (from, to) in [(lib("libpriv.so"), &v1), (lib("libpriv_v4.so"), &v4)] {
        let ok = Command::new("objcopy")
            .arg("--strip-all")
            .arg(&from)
            .arg(to)
            .status()
            .expect("run objcopy (binutils)");
        assert!(ok.success());
    }
    let mut t = Target::builder(lib("priv"))
        .env("LD_LIBRARY_PATH", dir.path())
        .spawn();
    t.expect("bump", 1);
    let msg = expect_fail(&t, &["reload", path_str(&v4), "--changed-only"]);
    assert!(
        msg.contains("needs the symbol tables of both builds"),
        "{msg}"
    );
    untouched(&t);
    t.expect("count", 1);
}

/// Regression: v2 of libstr.so lengthens `str_banner`'s literal, which moves `str_motto`'s
/// literal and the constant `str_scale` loads (no symbol names either) and leaves `.rodata`
/// different; those two used to count as changed too. Unnamed read-only data now compares by
/// content, so only `str_banner` switches and the others keep the running code.
#[test]
fn changed_only_compares_unnamed_read_only_data_by_content() {
    let mut t = Target::spawn(lib("str"));
    t.expect("banner", "libstr 1.0");
    t.expect("motto", "unnamed literals compare by content");
    t.expect("scale 2", 5);
    let out = hotctl(
        &t,
        &["reload", path_str(&lib("libstr_v2.so")), "--changed-only"],
    );
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.contains("--changed-only: 1 of 3 functions of libstr.so changed; 2 keep the running code; switched: str_banner"),
        "{out}"
    );
    t.expect("banner", "libstr 1.0.1 (the banner, fixed)");
    t.expect("motto", "unnamed literals compare by content");
    t.expect("scale 2", 5);
    rollback(&t);
    t.expect("banner", "libstr 1.0");
    t.assert_alive();
}
