//! SQLite built from crate sources, inside Debian's python3 with one live WAL connection, its
//! cached statements and an open cursor (drivers/sqlite_driver.py). Issue 9: a whole-library
//! reload must share the running copy's private state (mutex and malloc methods, VFS list,
//! lock bookkeeping) or be refused — never crash, never split the lock table in two.

use crate::build::{self, Build, SQLITE_FIX_SUFFIX};
use crate::{mappings, python, staged_mappings};
use hotagent_tests::{expect_fail, path_str, reload, rollback, status, Target};
use std::path::{Path, PathBuf};

const VERSION_A: &str = "3.41.2";
const ROWS: i64 = 100;

fn lib(dir: &Path) -> PathBuf {
    dir.join("libsqlite3.so.0")
}

/// python3 on build A with a database of `ROWS` rows, a cursor open and `seen` rows read from
/// it, and build A's source id. Checks that it really runs our build A, not the system's.
fn start(db_dir: &Path, seen: i64) -> (Target, String) {
    let a = build::sqlite(Build::A);
    let mut t = python("sqlite_driver.py", &a, &[&db_dir.join("t.db")]);
    let mapped = t.cmd("lib");
    assert_eq!(
        Path::new(&mapped),
        lib(&a),
        "python3 loaded another libsqlite3"
    );
    t.expect("check", "ok wal");
    t.expect("version", VERSION_A);
    let source = t.cmd("source");
    assert!(!source.ends_with(SQLITE_FIX_SUFFIX), "{source}");
    t.expect(
        "count",
        format!("count {ROWS} sum {}", ROWS * (ROWS + 1) / 2),
    );
    t.expect("open", "opened");
    for id in 1..=seen {
        t.expect("next", format!("row {id} v{id}"));
    }
    (t, source)
}

/// Everything the issue lists, after a switch: the cursor opened before it keeps iterating
/// (rows `seen+1`...), the cached statement runs, new connections open, write and close, and
/// the long-lived connection still writes after they closed (no lost POSIX locks).
fn exercise(t: &mut Target, seen: i64, rows_before: i64) {
    t.expect("next", format!("row {} v{}", seen + 1, seen + 1));
    t.expect("other first", format!("other {}", rows_before + 1));
    // The cursor's snapshot predates that write.
    t.expect(
        "drain",
        format!("rest {} last {rows_before}", rows_before - seen - 1),
    );
    t.expect(
        "count",
        format!(
            "count {} sum {}",
            rows_before + 1,
            (rows_before + 1) * (rows_before + 2) / 2
        ),
    );
    t.expect("insert mine", format!("inserted {}", rows_before + 2));
    t.expect("other second", format!("other {}", rows_before + 3));
    t.expect("insert again", format!("inserted {}", rows_before + 4));
    t.expect("check", "ok wal");
    // A fresh cursor for the next round.
    t.expect("open", "opened");
    for id in 1..=seen {
        t.expect("next", format!("row {id} v{id}"));
    }
}

/// A version upgrade (3.41.2 -> 3.46.0) has other private state: the dry run and the reload
/// both refuse it, with or without --changed-only, name the private state and the ways forward, and the target is untouched —
/// same answers, generation 0, no mapping left behind.
#[test]
fn sqlite_upgrade_refused_target_untouched() {
    let db = tempfile::tempdir().expect("a database folder");
    let (mut t, source) = start(db.path(), 3);
    let b = lib(&build::sqlite(Build::Upgrade));
    let sqlite_maps = mappings(&t, "libsqlite3");
    let staged = staged_mappings(&t);

    // --changed-only too: the changed functions reach objects that grew (aBuiltinFunc, ...).
    for extra in [
        &["--dry-run"][..],
        &[][..],
        &["--changed-only", "--dry-run"][..],
        &["--changed-only"][..],
    ] {
        let mut args = vec!["reload", path_str(&b)];
        args.extend_from_slice(extra);
        let msg = expect_fail(&t, &args);
        if extra.contains(&"--changed-only") {
            assert!(msg.contains("even with --changed-only"), "{msg}");
        }
        let lower = msg.to_lowercase();
        assert!(
            lower.contains("private"),
            "the refusal should name the private state that differs: {msg}"
        );
        assert!(
            msg.contains("--changed-only") || msg.contains("--fresh-state"),
            "the refusal should name the ways forward: {msg}"
        );
        t.assert_alive();
    }
    let s = status(&t);
    assert_eq!(s.generation, 0, "{s:?}");
    assert!(s.generations.is_empty(), "{s:?}");
    assert_eq!(
        mappings(&t, "libsqlite3"),
        sqlite_maps,
        "a refused reload left mappings"
    );
    assert_eq!(
        staged_mappings(&t),
        staged,
        "a refused reload left its staged copy mapped"
    );

    t.expect("version", VERSION_A);
    t.expect("source", &source);
    exercise(&mut t, 3, ROWS);
    t.finish().assert_clean();
}

/// A rebuild of the same source with `sqlite3_sourceid` fixed, reloaded as a whole library:
/// the dry run accepts it, the reload works end to end on the old connection's state, the fix is
/// visible through SQL, and rollback brings the old answer back with everything still working.
#[test]
fn sqlite_whole_library_fix_end_to_end() {
    let db = tempfile::tempdir().expect("a database folder");
    let (mut t, source) = start(db.path(), 3);
    let fixed = lib(&build::sqlite(Build::Fixed));

    let dry = reload(&t, &fixed, &["--dry-run"]);
    assert!(dry.dry_run, "{dry:?}");
    t.expect("source", &source);

    let r = reload(&t, &fixed, &[]);
    assert_eq!(r.generation, 1, "{r:?}");
    assert!(r.module.contains("libsqlite3"), "{r:?}");
    t.expect("source", format!("{source}{SQLITE_FIX_SUFFIX}"));
    t.expect("version", VERSION_A);
    exercise(&mut t, 3, ROWS);
    t.expect("source", format!("{source}{SQLITE_FIX_SUFFIX}"));

    let back = rollback(&t);
    assert_eq!(back.generation, 0, "{back:?}");
    t.expect("source", &source);
    exercise(&mut t, 3, ROWS + 4);
    t.finish().assert_clean();
}

/// A patch library carrying only the fixed function: the same end-to-end checks.
#[test]
fn sqlite_partial_patch_end_to_end() {
    let db = tempfile::tempdir().expect("a database folder");
    let (mut t, source) = start(db.path(), 2);
    let patch = build::sqlite_partial_fix();

    let r = reload(&t, &patch, &["--replace", "libsqlite3.so.0"]);
    assert_eq!(r.generation, 1, "{r:?}");
    t.expect("source", format!("{source}{SQLITE_FIX_SUFFIX}"));
    exercise(&mut t, 2, ROWS);

    rollback(&t);
    t.expect("source", &source);
    exercise(&mut t, 2, ROWS + 4);
    t.finish().assert_clean();
}
