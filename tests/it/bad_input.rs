//! Bad patches: each is refused with a clear error (hotctl exits non-zero with one `hotctl: ...`
//! line naming the problem; the agent answers a stable error code on the socket), a dry run is
//! refused too (unless only the loader can tell), and the target keeps running unchanged.

use hotagent_tests::files::elf;
use hotagent_tests::protocol::{ErrorCode, ReloadRequest, Request};
use hotagent_tests::*;
use std::path::Path;

const CFG: Config = Config::DEFAULT;

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The target answers as v1 and is still at generation 0.
#[track_caller]
fn assert_unchanged(t: &mut Target) {
    t.assert_alive();
    t.expect("version", 1);
    t.expect("add 2 3", 5);
    t.expect("twice", 2);
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
/// of `codes` on the socket and a message containing each of `mentions` (case-insensitive).
#[track_caller]
fn refused(t: &mut Target, path: &Path, extra: &[&str], codes: &[ErrorCode], mentions: &[&str]) {
    let mut args = vec!["reload", s(path)];
    args.extend_from_slice(extra);
    let msg = expect_fail(t, &args);
    let lower = msg.to_lowercase();
    for m in mentions {
        assert!(
            lower.contains(&m.to_lowercase()),
            "the message should name {m:?}: {msg:?}"
        );
    }
    t.assert_alive();

    // A dry run loads nothing, so it can only catch what a check of the file finds: everything but
    // a refusal of the loader itself. Either way it changes nothing.
    args.push("--dry-run");
    if codes == [ErrorCode::LoadFailed] {
        args.push("--json");
        let out = hotctl(t, &args);
        if out.success() {
            let v: serde_json::Value = serde_json::from_str(&out.stdout)
                .unwrap_or_else(|e| panic!("not one JSON document ({e}): {out}"));
            assert_eq!(v["dry_run"], true, "{out}");
        } else {
            check_failure(&out);
        }
    } else {
        expect_fail(t, &args);
    }
    t.assert_alive();

    let replace = extra
        .iter()
        .position(|a| *a == "--replace")
        .map(|i| extra[i + 1].to_string());
    let req = Request::Reload(ReloadRequest {
        path: s(path).to_string(),
        replace,
        dry_run: false,
        no_probe: false,
    });
    expect_error(&raw_request(t, &req), codes);
    assert_unchanged(t);
}

fn basic() -> Target {
    Target::spawn(CFG.path("basic"))
}

#[test]
fn missing_file() {
    let mut t = basic();
    let dir = scratch();
    let path = dir.path().join("libfoo_nope.so");
    refused(
        &mut t,
        &path,
        &[],
        &[ErrorCode::FileUnreadable],
        &["libfoo_nope.so"],
    );
}

#[test]
fn directory() {
    let mut t = basic();
    let dir = scratch();
    let path = dir.path().join("libfoo_dir.so");
    std::fs::create_dir(&path).unwrap();
    refused(
        &mut t,
        &path,
        &[],
        &[ErrorCode::FileUnreadable],
        &["libfoo_dir.so"],
    );
}

#[test]
fn empty_file() {
    let mut t = basic();
    let dir = scratch();
    let path = dir.path().join("libfoo_empty.so");
    write_atomic(&path, b"");
    refused(
        &mut t,
        &path,
        &[],
        &[ErrorCode::BadElf, ErrorCode::FileUnreadable],
        &["libfoo_empty.so"],
    );
}

#[test]
fn text_file() {
    let mut t = basic();
    let dir = scratch();
    let path = dir.path().join("libfoo_text.so");
    write_atomic(&path, b"this is not a shared object\njust text\n");
    refused(
        &mut t,
        &path,
        &[],
        &[ErrorCode::BadElf],
        &["libfoo_text.so"],
    );
}

#[test]
fn truncated_elf_header() {
    let mut t = basic();
    let dir = scratch();
    let path = dir.path().join("libfoo_trunc_header.so");
    truncated_copy(&CFG.path("libfoo_v2.so"), &path, 40);
    refused(
        &mut t,
        &path,
        &[],
        &[ErrorCode::BadElf],
        &["libfoo_trunc_header.so"],
    );
}

#[test]
fn truncated_elf_half() {
    let mut t = basic();
    let dir = scratch();
    let src = CFG.path("libfoo_v2.so");
    let len = std::fs::metadata(&src).unwrap().len() as usize;
    let path = dir.path().join("libfoo_trunc_half.so");
    truncated_copy(&src, &path, len / 2);
    refused(
        &mut t,
        &path,
        &[],
        &[ErrorCode::BadElf, ErrorCode::LoadFailed],
        &["libfoo_trunc_half.so"],
    );
}

#[test]
fn corrupted_program_headers() {
    let mut t = basic();
    let dir = scratch();
    let path = dir.path().join("libfoo_bad_phoff.so");
    // e_phoff far beyond the end of the file.
    let far = 0x7fff_ffff_0000u64.to_le_bytes();
    patched_copy(&CFG.path("libfoo_v2.so"), &path, &[(elf::E_PHOFF, &far)]);
    refused(
        &mut t,
        &path,
        &[],
        &[ErrorCode::BadElf, ErrorCode::LoadFailed],
        &["libfoo_bad_phoff.so"],
    );
}

#[test]
fn corrupted_body() {
    let mut t = basic();
    let dir = scratch();
    let src = CFG.path("libfoo_v2.so");
    let mut bytes = std::fs::read(&src).unwrap();
    // Keep a valid ELF header; scramble the program headers, the dynamic section and the rest.
    let mut x: u32 = 0x1234_5678;
    for b in bytes[elf::EHDR_SIZE..].iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let path = dir.path().join("libfoo_garbage.so");
    write_atomic(&path, &bytes);
    refused(
        &mut t,
        &path,
        &[],
        &[ErrorCode::BadElf, ErrorCode::LoadFailed],
        &["libfoo_garbage.so"],
    );
}

#[test]
fn elf32_class() {
    let mut t = basic();
    let dir = scratch();
    let path = dir.path().join("libfoo_elf32.so");
    patched_copy(&CFG.path("libfoo_v2.so"), &path, &[(elf::EI_CLASS, &[1])]);
    refused(
        &mut t,
        &path,
        &[],
        &[ErrorCode::BadElf],
        &["libfoo_elf32.so"],
    );
}

#[test]
fn foreign_machine() {
    let mut t = basic();
    let dir = scratch();
    let path = dir.path().join("libfoo_aarch64.so");
    let machine = elf::EM_AARCH64.to_le_bytes();
    patched_copy(
        &CFG.path("libfoo_v2.so"),
        &path,
        &[(elf::E_MACHINE, &machine)],
    );
    refused(
        &mut t,
        &path,
        &[],
        &[ErrorCode::BadElf],
        &["libfoo_aarch64.so"],
    );
}

#[test]
fn big_endian() {
    let mut t = basic();
    let dir = scratch();
    let path = dir.path().join("libfoo_be.so");
    patched_copy(&CFG.path("libfoo_v2.so"), &path, &[(elf::EI_DATA, &[2])]);
    refused(&mut t, &path, &[], &[ErrorCode::BadElf], &["libfoo_be.so"]);
}

#[test]
fn executable_pie() {
    let mut t = basic();
    refused(
        &mut t,
        &Config::LAZY_PIE.path("basic"),
        &[],
        &[ErrorCode::BadElf, ErrorCode::LoadFailed],
        &["basic"],
    );
}

#[test]
fn executable_nopie() {
    let mut t = basic();
    refused(
        &mut t,
        &Config::LAZY_NOPIE.path("basic"),
        &[],
        &[ErrorCode::BadElf, ErrorCode::LoadFailed],
        &["basic"],
    );
}

#[test]
fn missing_dependency() {
    let mut t = basic();
    refused(
        &mut t,
        &CFG.path("libbad_needed.so"),
        &[],
        &[ErrorCode::LoadFailed],
        &["libghost.so"],
    );
}

#[test]
fn undefined_symbol() {
    let mut t = basic();
    refused(
        &mut t,
        &CFG.path("libbad_undef.so"),
        &[],
        &[ErrorCode::LoadFailed],
        &["nobody_defines_this_function"],
    );
}

#[test]
fn function_replaced_by_data() {
    let mut t = basic();
    // foo_add in the same file is fine, but the reload is all or nothing.
    refused(
        &mut t,
        &CFG.path("libbad_data.so"),
        &[],
        &[ErrorCode::IncompatibleSymbol],
        &["foo_version"],
    );
}

#[test]
fn variable_size_changed() {
    let mut t = basic();
    t.expect("bump", 1);
    refused(
        &mut t,
        &CFG.path("libbad_size.so"),
        &[],
        &[ErrorCode::IncompatibleSymbol],
        &["foo_counter"],
    );
    t.expect("bump", 2);
    t.expect("counter", 2);
}

#[test]
fn no_symbol_in_common() {
    let mut t = basic();
    refused(
        &mut t,
        &CFG.path("libnothing.so"),
        &[],
        &[ErrorCode::NoCommonSymbols],
        &[],
    );
}

#[test]
fn replace_module_not_loaded() {
    let mut t = basic();
    refused(
        &mut t,
        &CFG.path("libfoo_v2.so"),
        &["--replace", "libnotloaded.so.3"],
        &[ErrorCode::ModuleNotFound],
        &["libnotloaded.so.3"],
    );
}

#[test]
fn default_module_not_loaded() {
    let mut t = basic();
    // libifunc.so is nowhere in `basic`.
    refused(
        &mut t,
        &CFG.path("libifunc_v2.so"),
        &[],
        &[ErrorCode::ModuleNotFound],
        &["libifunc"],
    );
}

#[test]
fn refusals_keep_the_current_generation() {
    let mut t = basic();
    reload(&t, &CFG.path("libfoo_v2.so"), &[]);
    t.expect("bump", 10);
    for bad in [
        "libbad_data.so",
        "libbad_size.so",
        "libbad_undef.so",
        "libnothing.so",
    ] {
        let path = CFG.path(bad);
        expect_fail(&t, &["reload", s(&path)]);
        t.assert_alive();
        t.expect("version", 2);
        t.expect("add 2 3", 105);
        assert_eq!(status(&t).generation, 1, "after {bad}");
    }
    t.expect("bump", 20);
    rollback(&t);
    assert_unchanged(&mut t);
    t.expect("bump", 21);
}
