//! Private state (issue 9, item 1): the new build's code runs on the replaced module's private
//! data — statics in `.data`/`.bss`, a mutex, a thread-local counter — or the reload is refused,
//! naming what differs. The dry run decides the same way and reports the same numbers.

use hotagent_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const CFG: Config = Config::DEFAULT;

fn priv_lib(which: &str) -> PathBuf {
    CFG.path(which)
}

/// The warning line about private state, if any.
fn sharing_line(warnings: &[String]) -> Option<&String> {
    warnings
        .iter()
        .find(|w| w.starts_with("private state shared with"))
}

/// Counts three calls: counter 3, this thread's counter 3, buffer "abc".
fn three_calls(t: &mut Target) {
    for n in 1..=3 {
        t.expect("bump", n);
    }
    t.expect("buf", "[abc]");
}

/// v2 is the same source with one function changed: the reload keeps the counter, the buffer,
/// the thread-local counter and the very mutex another thread holds; the constructor of the new
/// copy did not re-initialise the live state; the dry run announced exactly this; rollback
/// brings v1 back on the same state. Without sharing, the new code read its own zeroed copy.
#[test]
fn same_layout_shares_private_state_and_rolls_back() {
    let mut t = Target::spawn(priv_lib("priv"));
    three_calls(&mut t);
    t.expect("ops 5", 12);
    t.expect("swap", "ok");
    t.expect("ops 5", 11);
    t.expect("hold", "ok");
    t.expect("busy", 1);

    let dry = reload(&t, &priv_lib("libpriv_v2.so"), &["--dry-run"]);
    let dry_line = sharing_line(&dry.warnings)
        .unwrap_or_else(|| panic!("no sharing line in {:?}", dry.warnings))
        .clone();
    let r = reload(&t, &priv_lib("libpriv_v2.so"), &[]);
    assert_eq!(
        sharing_line(&r.warnings),
        Some(&dry_line),
        "{:?}",
        r.warnings
    );
    for part in [
        "libpriv.so",
        "evidence: .symtab",
        "thread-local block shared",
    ] {
        assert!(dry_line.contains(part), "{part:?} missing: {dry_line}");
    }
    // counter, lock, buf, ops, ctor_runs: five objects, referenced from code.
    assert!(dry_line.contains(": 5 objects"), "{dry_line}");
    assert!(!dry_line.contains(" 0 code references"), "{dry_line}");

    t.expect("version", 2);
    t.expect("count", 3);
    t.expect("tls", 3);
    t.expect("buf", "[abc]");
    // The swapped pointers of the live struct (the new copy's own still says 12).
    t.expect("ops 5", 11);
    t.expect("ctor", 1);
    t.expect("busy", 1);
    t.expect("release", "ok");
    t.expect("busy", 0);
    t.expect("bump", 4);
    t.expect("buf", "[abcd]");

    rollback(&t);
    t.expect("version", 1);
    t.expect("count", 4);
    t.expect("tls", 4);
    t.expect("bump", 5);
    t.expect("buf", "[abcde]");
    t.assert_alive();
}

/// v3's buffer grew: the reload (and its dry run) is refused, naming the object and both sizes
/// and the ways forward; nothing was loaded and the target answers as before, generation 0.
#[test]
fn a_different_private_layout_is_refused_naming_it() {
    let mut t = Target::spawn(priv_lib("priv"));
    three_calls(&mut t);
    let v3 = priv_lib("libpriv_v3.so");
    for extra in [&["--dry-run"][..], &[]] {
        let mut args = vec!["reload", path_str(&v3)];
        args.extend_from_slice(extra);
        let msg = expect_fail(&t, &args);
        for part in [
            "buf: 128 bytes, was 64",
            "--fresh-state",
            "hotagent_migrate",
            "only the changed functions",
            "nothing was loaded",
        ] {
            assert!(msg.contains(part), "{part:?} missing: {msg}");
        }
    }
    assert_eq!(status(&t).generation, 0);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", t.pid())).unwrap();
    assert!(
        !maps.contains("memfd:"),
        "a refused build was mapped:\n{maps}"
    );
    t.expect("version", 1);
    t.expect("count", 3);
    t.expect("bump", 4);
}

/// `--fresh-state` takes the different layout anyway, as before this check: the new build runs
/// on its own fresh data, and a warning says so.
#[test]
fn fresh_state_accepts_a_different_layout() {
    let mut t = Target::spawn(priv_lib("priv"));
    three_calls(&mut t);
    let r = reload(&t, &priv_lib("libpriv_v3.so"), &["--fresh-state"]);
    assert!(
        r.warnings.iter().any(|w| w.contains("--fresh-state")),
        "{:?}",
        r.warnings
    );
    assert_eq!(sharing_line(&r.warnings), None);
    t.expect("version", 3);
    t.expect("count", 0);
    t.expect("bump", 1);
    rollback(&t);
    t.expect("count", 3);
}

/// `objcopy --strip-all` copies of v1 and v2 into `dir`, named as the loader expects.
fn stripped_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let v1 = dir.join("libpriv.so");
    let v2 = dir.join("libpriv_v2.so");
    for (from, to) in [
        (priv_lib("libpriv.so"), &v1),
        (priv_lib("libpriv_v2.so"), &v2),
    ] {
        let ok = Command::new("objcopy")
            .arg("--strip-all")
            .arg(&from)
            .arg(to)
            .status()
            .expect("run objcopy (binutils)");
        assert!(ok.success());
    }
    (v1, v2)
}

/// Without any symbol table the layouts are proven by the private sections' names, sizes and
/// initial bytes, and the state is shared section by section.
#[test]
fn stripped_builds_share_by_sections() {
    let dir = tempfile::tempdir().unwrap();
    let (_, v2) = stripped_pair(dir.path());
    let mut t = Target::builder(priv_lib("priv"))
        .env("LD_LIBRARY_PATH", dir.path())
        .spawn();
    three_calls(&mut t);
    let r = reload(&t, &v2, &[]);
    let line =
        sharing_line(&r.warnings).unwrap_or_else(|| panic!("no sharing line in {:?}", r.warnings));
    assert!(
        line.contains("evidence: section sizes and initial bytes"),
        "{line}"
    );
    t.expect("version", 2);
    t.expect("count", 3);
    t.expect("tls", 3);
    t.expect("buf", "[abc]");
    t.expect("bump", 4);
}

/// The file on disk was replaced by another build after the program loaded it: its layout says
/// nothing about the running copy, so the reload is refused (when in doubt, refuse).
#[test]
fn a_replaced_file_on_disk_is_no_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("libpriv.so");
    std::fs::copy(priv_lib("libpriv.so"), &v1).unwrap();
    let mut t = Target::builder(priv_lib("priv"))
        .env("LD_LIBRARY_PATH", dir.path())
        .spawn();
    three_calls(&mut t);
    // A new file under the old name (rename: the mapped inode stays intact).
    let tmp = dir.path().join("next.so");
    std::fs::copy(priv_lib("libpriv_v2.so"), &tmp).unwrap();
    std::fs::rename(&tmp, &v1).unwrap();
    let msg = expect_fail(&t, &["reload", path_str(&priv_lib("libpriv_v2.so"))]);
    assert!(msg.contains("is not the build that is loaded"), "{msg}");
    assert_eq!(status(&t).generation, 0);
    t.expect("count", 3);
}

/// A stripped patch of one function (distributions and build systems strip by default) has no
/// symbols to pair with the library's, and its private sections hold only the C runtime's
/// bookkeeping, which no code of its functions reaches: nothing needs sharing, so it reloads —
/// it used to be refused because its sections differed from the whole library's.
#[test]
fn a_stripped_partial_patch_needs_nothing_shared() {
    let dir = tempfile::tempdir().unwrap();
    let patch = dir.path().join("libfoo_partial.so");
    let ok = Command::new("objcopy")
        .arg("--strip-all")
        .arg(CFG.path("libfoo_partial.so"))
        .arg(&patch)
        .status()
        .expect("run objcopy (binutils)");
    assert!(ok.success());
    let mut t = Target::spawn(CFG.path("basic"));
    t.expect("version", 1);
    let dry = reload(&t, &patch, &["--dry-run"]);
    assert_eq!(sharing_line(&dry.warnings), None, "{:?}", dry.warnings);
    let r = reload(&t, &patch, &[]);
    assert_eq!(r.generation, 1);
    assert_eq!(sharing_line(&r.warnings), None, "{:?}", r.warnings);
    t.expect("version", 42);
    rollback(&t);
    t.expect("version", 1);
}
