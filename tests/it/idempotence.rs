//! A reload of the bytes the current generation already runs changes nothing and says so (exit
//! 0), whatever the file is called; `--force` pushes a generation anyway; `hotctl try` still
//! tries a candidate identical to the current generation and rolls back to where it started.

use crate::common::{basic, V2};
use hotagent_tests::*;

const CFG: Config = Config::DEFAULT;

#[test]
fn the_same_bytes_again_are_unchanged_unless_forced() {
    let dir = scratch();
    let mut t = basic(CFG);
    let v2 = CFG.path("libfoo_v2.so");
    assert_eq!(reload(&t, &v2, &[]).generation, 1);
    t.expect("version", V2.version);

    let out = hotctl(&t, &["reload", path_str(&v2)]);
    assert!(out.success(), "{out}");
    assert!(
        out.stdout
            .contains("has the bytes generation 1 already runs in ")
            && out.stdout.contains("libfoo.so; nothing done"),
        "{out}"
    );
    assert!(out.stdout.contains("--force"), "{out}");
    let again = reload(&t, &v2, &[]);
    assert!(again.unchanged && again.generation == 1, "{again:?}");
    assert!(again.symbols.is_empty() && again.slots == 0, "{again:?}");
    let dry = reload(&t, &v2, &["--dry-run"]);
    assert!(dry.unchanged && dry.generation == 1, "{dry:?}");

    // Another name, the same bytes: the same build.
    let copy = dir.path().join("libfoo.so");
    copy_atomic(&v2, &copy);
    let renamed = reload(&t, &copy, &[]);
    assert!(renamed.unchanged && renamed.generation == 1, "{renamed:?}");
    assert_eq!(status(&t).generations.len(), 1);
    t.expect("version", V2.version);

    let forced = reload(&t, &v2, &["--force"]);
    assert!(!forced.unchanged && forced.generation == 2, "{forced:?}");
    assert!(!forced.symbols.is_empty(), "{forced:?}");
    t.expect("version", V2.version);
    assert_eq!(rollback(&t).generation, 1);
    t.expect("version", V2.version);
    assert_eq!(rollback(&t).generation, 0);
    t.expect("version", 1);
    t.finish().assert_clean();
}

/// Bytes are compared, not paths: a file rebuilt in place is a new generation.
#[test]
fn a_file_rebuilt_in_place_is_a_new_generation() {
    let dir = scratch();
    let mut t = basic(CFG);
    let lib = dir.path().join("libfoo.so");
    copy_atomic(&CFG.path("libfoo_v2.so"), &lib);
    assert_eq!(reload(&t, &lib, &[]).generation, 1);
    copy_atomic(&CFG.path("libfoo_v3.so"), &lib);
    let r = reload(&t, &lib, &[]);
    assert!(!r.unchanged && r.generation == 2, "{r:?}");
    t.expect("version", 3);
    t.finish().assert_clean();
}

/// Regression: `try` with a candidate identical to the current generation got `unchanged` and
/// then rolled back a generation it had not pushed. It sends `force`: the candidate is tried as
/// a generation of its own and the target ends where it started.
#[test]
fn try_of_the_current_bytes_ends_where_it_started() {
    let mut t = basic(CFG);
    let v2 = std::fs::canonicalize(CFG.path("libfoo_v2.so")).unwrap();
    assert_eq!(reload(&t, &v2, &[]).generation, 1);
    let out = hotctl(&t, &["try", path_str(&v2), "--", "true"]);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("(generation 2, check "), "{out}");
    let st = status(&t);
    assert_eq!(st.generation, 1, "{st:?}");
    t.expect("version", V2.version);
    t.finish().assert_clean();
}
