//! What the test files share around `basic` and libfoo: the answers of each build of libfoo, and
//! the checks that a bad patch is refused and leaves the target as it was.

use hotagent_tests::protocol::{EntryReport, ErrorCode, ReloadRequest, Request, SymbolReport};
use hotagent_tests::*;
use std::path::Path;

/// The core fixture (`basic.c`), on libfoo v1.
pub fn basic(cfg: Config) -> Target {
    Target::spawn(cfg.path("basic"))
}

/// What a program on libfoo answers with each build of it.
pub struct Foo {
    pub version: i64,
    pub add_2_3: i64,
    pub twice: i64,
    pub table: [i64; 4],
}

pub const V1: Foo = Foo {
    version: 1,
    add_2_3: 5,
    twice: 2,
    table: [1, 2, 3, 4],
};
pub const V2: Foo = Foo {
    version: 2,
    add_2_3: 105,
    twice: 20,
    table: [20, 21, 22, 23],
};
pub const V3: Foo = Foo {
    version: 3,
    add_2_3: 1005,
    twice: 300,
    table: [300, 301, 302, 303],
};

/// The answers to `version`, `add 2 3` and `twice`, which every program on libfoo knows.
#[track_caller]
pub fn expect_foo_calls(t: &mut Target, want: &Foo) {
    t.expect("version", want.version);
    t.expect("add 2 3", want.add_2_3);
    t.expect("twice", want.twice);
}

/// [`expect_foo_calls`], and `table I` for each entry of the table (`basic` only).
#[track_caller]
pub fn assert_foo(t: &mut Target, want: &Foo) {
    expect_foo_calls(t, want);
    for (i, v) in want.table.iter().enumerate() {
        t.expect(&format!("table {i}"), v);
    }
}

/// The target answers as v1 and is still at generation 0.
#[track_caller]
pub fn assert_unchanged(t: &mut Target) {
    t.assert_alive();
    expect_foo_calls(t, &V1);
    let st = status(t);
    assert_eq!(st.generation, 0, "{st:?}");
    assert!(st.generations.is_empty(), "{st:?}");
    assert_eq!(
        t.stderr_text(),
        "",
        "the agent wrote to the target's stderr"
    );
}

/// Asserts that reloading `path` (with `extra` hotctl arguments) is refused everywhere, with one
/// of `codes` on the socket and a message containing each of `mentions` (case-insensitive): by
/// hotctl, by hotctl with `--dry-run` (a dry run checks the file and loads it in the throwaway probe,
/// so it catches everything a reload would), and on the raw socket with and without `dry_run`.
#[track_caller]
pub fn refused(
    t: &mut Target,
    path: &Path,
    extra: &[&str],
    codes: &[ErrorCode],
    mentions: &[&str],
) {
    let mut args = vec!["reload", path_str(path)];
    args.extend_from_slice(extra);
    let check_mentions = |msg: &str| {
        let lower = msg.to_lowercase();
        for m in mentions {
            assert!(
                lower.contains(&m.to_lowercase()),
                "the message should name {m:?}: {msg:?}"
            );
        }
    };
    check_mentions(&expect_fail(t, &args));
    t.assert_alive();

    args.push("--dry-run");
    check_mentions(&expect_fail(t, &args));
    t.assert_alive();

    let replace = extra
        .iter()
        .position(|a| *a == "--replace")
        .map(|i| extra[i + 1].to_string());
    let no_probe = extra.contains(&"--no-probe");
    for dry_run in [true, false] {
        let req = Request::Reload(ReloadRequest {
            replace: replace.clone(),
            dry_run,
            no_probe,
            ..reload_request(path)
        });
        let e = expect_error(&raw_request(t, &req), codes);
        check_mentions(&e.message);
    }
    assert_unchanged(t);
}

/// Starts `basic` and asserts that `path` is [`refused`] (without extra hotctl arguments); returns
/// the target for more checks.
#[track_caller]
pub fn basic_refuses(path: &Path, codes: &[ErrorCode], mentions: &[&str]) -> Target {
    let mut t = basic(Config::DEFAULT);
    refused(&mut t, path, &[], codes, mentions);
    t
}

/// At generation 1 (libfoo v2), each fixture of `bad` is refused by hotctl (`check(bad, message)`
/// looks at the message) and the target stays at v2, generation 1, its state kept; a rollback then
/// brings back v1 at generation 0. Returns the target for more checks.
#[track_caller]
pub fn refusals_keep_generation_1(bad: &[&str], check: impl Fn(&str, &str)) -> Target {
    let cfg = Config::DEFAULT;
    let mut t = basic(cfg);
    reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    t.expect("bump", 10);
    for bad in bad {
        let msg = expect_fail(&t, &["reload", path_str(&cfg.path(bad))]);
        check(bad, &msg);
        t.assert_alive();
        t.expect("version", 2);
        t.expect("add 2 3", 105);
        assert_eq!(status(&t).generation, 1, "after {bad}");
    }
    t.expect("bump", 20);
    rollback(&t);
    assert_unchanged(&mut t);
    t
}

/// The report of symbol `name` among `symbols`.
#[track_caller]
pub fn symbol<'a>(symbols: &'a [SymbolReport], name: &str) -> &'a SymbolReport {
    symbols
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} not among the symbols: {symbols:#?}"))
}

/// The entry `s` has in module `module` (`libfoo.so`, `libfoo_v2.so#1`, ...).
#[track_caller]
pub fn entry_in<'a>(s: &'a SymbolReport, module: &str) -> &'a EntryReport {
    s.entries
        .iter()
        .find(|e| e.module == module)
        .unwrap_or_else(|| panic!("{} has no entry in {module}: {s:#?}", s.name))
}

/// `CLOCK_MONOTONIC` in milliseconds: the clock of a request's deadline.
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}
