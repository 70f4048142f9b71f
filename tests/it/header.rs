//! `include/hotagent.h`, the patch-author API's header: C and C++ patches compile against it,
//! and a hook whose signature is wrong does not (its prototype is declared there).

use hotagent_tests::*;
use std::path::Path;
use std::process::Command;

/// Compiles `source` (C when `lang` is "c", else C++) as a shared object against the header;
/// returns the compiler's diagnostics on failure.
fn compile(lang: &str, source: &str) -> Result<(), String> {
    let dir = scratch();
    let (tool, ext) = if lang == "c" {
        ("gcc", "c")
    } else {
        ("g++", "cpp")
    };
    let src = dir.path().join(format!("patch.{ext}"));
    std::fs::write(&src, source).expect("write the source");
    let include = repo_root().join("include");
    let out = Command::new(tool)
        .args(["-Wall", "-Wextra", "-Werror", "-fPIC", "-shared", "-I"])
        .arg(&include)
        .arg(&src)
        .arg("-o")
        .arg(dir.path().join("libpatch.so"))
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

const EVERY_CALL: &str = r#"
#include <hotagent.h>
static void up(void *o) { (void)o; }
static int obj;
int hotagent_prepare(struct hotagent_ctx *ctx) {
    if (hotagent_convert_class(ctx, "_ZTV1A", "_ZTV1A", up, NULL)) return -1;
    return hotagent_previous_symbol(ctx, "x") ? 0 : hotagent_fail(ctx, "no x");
}
int hotagent_migrate(struct hotagent_ctx *ctx) { (void)ctx; return 0; }
int hotagent_unmigrate(struct hotagent_ctx *ctx) { (void)ctx; return 0; }
void hotagent_committed(struct hotagent_ctx *ctx) {
    (void)ctx;
    if (!hotagent_shadow_get(&obj, 1)) hotagent_shadow_get_or_alloc(&obj, 1, sizeof(long));
    hotagent_shadow_free(&obj, 1);
    hotagent_shadow_free_all(1);
}
"#;

#[test]
fn c_and_cpp_patches_compile_against_the_header() {
    compile("c", EVERY_CALL).unwrap_or_else(|e| panic!("C:\n{e}"));
    // In C++ the hooks get C linkage from the header's declarations: the names stay unmangled.
    compile("c++", EVERY_CALL).unwrap_or_else(|e| panic!("C++:\n{e}"));
}

#[test]
fn a_hook_with_the_wrong_signature_does_not_compile() {
    for (lang, wrong) in [
        ("c", "#include <hotagent.h>\nvoid hotagent_migrate(struct hotagent_ctx *ctx) { (void)ctx; }\n"),
        ("c", "#include <hotagent.h>\nint hotagent_prepare(void) { return 0; }\n"),
        ("c", "#include <hotagent.h>\nint hotagent_committed(struct hotagent_ctx *ctx) { (void)ctx; return 0; }\n"),
        ("c++", "#include <hotagent.h>\nlong hotagent_unmigrate(struct hotagent_ctx *ctx) { (void)ctx; return 0; }\n"),
    ] {
        let err = compile(lang, wrong).expect_err(wrong);
        assert!(err.contains("hotagent_"), "{lang}: {err}");
    }
}

#[test]
fn the_agent_exports_the_shadow_services_the_header_declares() {
    let header = std::fs::read_to_string(repo_root().join("include/hotagent.h")).expect("header");
    let agent = agent_so();
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&agent)
        .output()
        .expect("nm");
    let exports = String::from_utf8_lossy(&out.stdout);
    // The services this part of the agent provides are in both.
    for name in [
        "hotagent_shadow_get",
        "hotagent_shadow_get_or_alloc",
        "hotagent_shadow_free",
        "hotagent_shadow_free_all",
    ] {
        assert!(header.contains(&format!("{name}(")), "{name} not declared");
        assert!(
            exports.lines().any(|l| l.ends_with(&format!(" {name}"))),
            "{name} not exported by {}",
            Path::new(&agent).display()
        );
    }
}
