//! Text a person can read: a reload of Debian's zlib (some 90 symbols) prints a summary of a few
//! lines, `--verbose` one line per symbol; status after a rollback to generation 0 says the
//! original code runs (not that entries "jump") and shows no table of no generations.

use hotagent_tests::*;
use std::path::PathBuf;

const CFG: Config = Config::DEFAULT;

fn libz_copy(dir: &std::path::Path) -> PathBuf {
    let real = std::fs::canonicalize("/lib/x86_64-linux-gnu/libz.so.1")
        .or_else(|_| std::fs::canonicalize("/usr/lib/x86_64-linux-gnu/libz.so.1"))
        .expect("zlib1g is installed (libz.so.1)");
    let copy = dir.join("libz.so.1");
    copy_atomic(&real, &copy);
    copy
}

#[test]
fn a_reload_of_zlib_is_summed_up_and_verbose_lists_each_symbol() {
    let dir = scratch();
    let libz = libz_copy(dir.path());
    let mut t = Target::spawn(CFG.path("zuser"));
    t.expect("round hello zlib", "hello zlib");

    let out = hotctl(&t, &["reload", path_str(&libz)]);
    assert!(out.success(), "{out}");
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with("warning:"))
        .collect();
    assert!(lines.len() <= 6, "not a summary:\n{out}");
    assert!(lines[0].starts_with("generation 1: "), "{out}");
    let functions = rollback_and_count(&mut t);
    assert!(
        functions > 50,
        "zlib exports some 90 functions: {functions}"
    );
    assert!(
        out.stdout.contains(&format!("  {functions} functions, ")),
        "{out}"
    );
    assert!(
        out.stdout.contains("runs now: ") && out.stdout.contains(" in libz.so.1#1"),
        "{out}"
    );
    assert!(!out.stdout.contains("inflateEnd"), "{out}");

    let verbose = hotctl(&t, &["--verbose", "reload", path_str(&libz)]);
    assert!(verbose.success(), "{verbose}");
    assert!(
        verbose
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("inflateEnd ")),
        "{verbose}"
    );
    assert!(verbose.stdout.lines().count() > functions, "{verbose}");
    t.expect("round after the reload", "after the reload");
    rollback(&t);
    t.finish().assert_clean();
}

/// Rolls back and returns how many functions the status's coverage names.
fn rollback_and_count(t: &mut Target) -> usize {
    let st = status(t);
    rollback(t);
    st.symbols.iter().filter(|s| s.kind == "function").count()
}

#[test]
fn status_at_generation_zero_says_the_original_runs() {
    let mut t = crate::common::basic(CFG);
    let before = hotctl(&t, &["status"]);
    assert!(before.stdout.ends_with("no reloads yet\n"), "{before}");
    reload(&t, &CFG.path("libfoo_v2.so"), &[]);
    let during = hotctl(&t, &["status"]);
    assert!(during.stdout.contains("GEN  MODULE"), "{during}");
    assert!(during.stdout.contains("runs now: "), "{during}");
    rollback(&t);
    t.expect("version", 1);

    let after = hotctl(&t, &["status"]);
    assert!(after.success(), "{after}");
    assert!(
        !after.stdout.contains("GEN"),
        "an empty table header:\n{after}"
    );
    assert!(
        after.stdout.contains("every reload was rolled back"),
        "{after}"
    );
    assert!(
        after.stdout.contains("in the original libfoo.so"),
        "{after}"
    );
    assert!(!after.stdout.contains("entry jumps"), "{after}");
    let verbose = hotctl(&t, &["--verbose", "status"]);
    assert!(
        verbose
            .stdout
            .contains("original runs, entry leads back to it"),
        "{verbose}"
    );
    assert!(!verbose.stdout.contains("entry jumps"), "{verbose}");
    assert!(!verbose.stdout.contains("GEN"), "{verbose}");
    t.finish().assert_clean();
}
