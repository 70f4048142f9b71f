//! Staging as any user: hotctl opens the patch as the operator and passes the descriptor with the
//! request, so a target that dropped its privileges reloads from a folder only root can read; a
//! raw client that passes none still gets the path opened by the target (and its refusal). And a
//! patch's `$ORIGIN` is its own folder, though the agent loads a sealed in-memory copy: a
//! dependency next to it is found, in the probe and in the target.

use hotagent_tests::protocol::{ErrorCode, Request};
use hotagent_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const CFG: Config = Config::DEFAULT;

#[test]
fn a_target_that_dropped_privileges_reloads_from_a_root_only_folder() {
    let Some(user) = test_user() else {
        eprintln!("skipped: needs root to drop privileges");
        return;
    };
    let mut t = Target::builder(CFG.path("dropper")).spawn();
    t.expect(&format!("drop {} {}", user.uid, user.gid), "dropped");
    let private = scratch();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let patch = private.path().join("libfoo_v2.so");
    std::fs::copy(CFG.path("libfoo_v2.so"), &patch).unwrap();

    // Opened by the target itself (a raw client passes no descriptor): refused, nothing changed.
    let resp = raw_request(&t, &Request::Reload(reload_request(&patch)));
    let err = expect_error(&resp, &[ErrorCode::FileUnreadable]);
    assert!(err.message.contains("permission denied"), "{}", err.message);
    t.expect("version", 1);

    // Through hotctl, which passes what it opened as root.
    let report = reload(&t, &patch, &[]);
    assert_eq!(report.generation, 1);
    t.expect("version", 2);
    rollback(&t);
    t.expect("version", 1);
}

fn gcc(args: &[&str]) {
    let out = Command::new("gcc").args(args).output().expect("run gcc");
    assert!(
        out.status.success(),
        "gcc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// libdep.so and libfoo_dep.so (run path `$ORIGIN`, needs libdep.so) built into `dir`, which is
/// on no search path of the target.
fn build_origin_pair(dir: &Path) -> std::path::PathBuf {
    let src = repo_root().join("tests/fixtures");
    let dep = dir.join("libdep.so");
    let patch = dir.join("libfoo_dep.so");
    gcc(&[
        "-O2",
        "-fPIC",
        "-shared",
        "-Wl,-soname,libdep.so",
        "-o",
        path_str(&dep),
        path_str(&src.join("libdep.c")),
    ]);
    gcc(&[
        "-O2",
        "-fPIC",
        "-shared",
        "-Wl,-soname,libfoo.so",
        "-Wl,--enable-new-dtags",
        "-Wl,-rpath,$ORIGIN",
        &format!("-I{}", src.display()),
        "-o",
        path_str(&patch),
        path_str(&src.join("libfoo_dep.c")),
        &format!("-L{}", dir.display()),
        "-ldep",
    ]);
    patch
}

#[test]
fn a_dependency_next_to_the_patch_is_found_through_origin() {
    let folder = scratch();
    let patch = build_origin_pair(folder.path());
    let mut t = basic(CFG);
    // The dry run probes it (a forked copy loads the dependency first too).
    let out = hotctl(&t, &["reload", path_str(&patch), "--dry-run"]);
    assert!(out.success(), "{out}");
    let report = reload(&t, &patch, &[]);
    assert!(
        !report.warnings.iter().any(|w| w.contains("$ORIGIN")),
        "{:?}",
        report.warnings
    );
    t.expect("version", 7);
    t.expect("twice", 70);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", t.pid())).unwrap();
    let real = std::fs::canonicalize(folder.path()).unwrap();
    assert!(
        maps.contains(&format!("{}/libdep.so", real.display())),
        "{maps}"
    );
    rollback(&t);
    t.expect("version", 1);
}

fn basic(cfg: Config) -> Target {
    Target::spawn(cfg.path("basic"))
}
