//! `make install` into a staging folder (DESTDIR): every part lands where it should, the
//! installed hotctl and libhotagent.so work together on a real target, and `make uninstall`
//! takes every file back.

use hotagent_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const CFG: Config = Config::DEFAULT;

fn make(args: &[&str]) -> std::process::Output {
    Command::new("make")
        .arg("--no-print-directory")
        .arg("-C")
        .arg(repo_root())
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("run make")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(files_under(&p));
        } else {
            found.push(p);
        }
    }
    found
}

#[test]
fn install_stages_every_part_and_uninstall_removes_them() {
    // Refuses stale artifacts before make copies them.
    let (agent, hotctl) = (agent_so(), hotctl_bin());
    assert!(agent.is_file() && hotctl.is_file());
    let stage = scratch();
    let destdir = format!("DESTDIR={}", stage.path().display());
    let out = make(&["install", "PREFIX=/usr/local", &destdir]);
    assert!(out.status.success(), "make install: {out:?}");

    let root = stage.path().join("usr/local");
    for (part, mode) in [
        ("bin/hotctl", 0o755),
        ("lib/libhotagent.so", 0o755),
        ("include/hotagent.h", 0o644),
        ("share/man/man1/hotctl.1", 0o644),
        ("share/man/man1/hotctl-reload.1", 0o644),
        ("share/bash-completion/completions/hotctl", 0o644),
        ("share/zsh/site-functions/_hotctl", 0o644),
        ("share/fish/vendor_completions.d/hotctl.fish", 0o644),
    ] {
        let path = root.join(part);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{part}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{part}");
        assert!(meta.len() > 0, "{part} is empty");
    }
    assert_eq!(
        std::fs::read(root.join("include/hotagent.h")).unwrap(),
        std::fs::read(repo_root().join("include/hotagent.h")).unwrap()
    );

    // The installed pair drives a real target.
    let installed_ctl = root.join("bin/hotctl");
    let v = Command::new(&installed_ctl)
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&v.stdout).starts_with("hotctl "),
        "{v:?}"
    );
    let mut t = Target::builder(CFG.path("basic"))
        .without_agent()
        .env("LD_PRELOAD", root.join("lib/libhotagent.so"))
        .spawn();
    wait_for_agent(t.socket_dir(), t.pid(), || Ok(())).unwrap();
    let out = Command::new(&installed_ctl)
        .args(["--pid", &t.pid().to_string(), "reload"])
        .arg(CFG.path("libfoo_v2.so"))
        .env("HOTAGENT_SOCKET_DIR", t.socket_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "installed hotctl reload: {out:?}");
    t.expect("version", 2);
    t.finish();

    let out = make(&["uninstall", "PREFIX=/usr/local", &destdir]);
    assert!(out.status.success(), "make uninstall: {out:?}");
    assert_eq!(files_under(stage.path()), Vec::<PathBuf>::new());
}

#[test]
fn install_without_a_build_says_what_to_do() {
    let empty = scratch();
    let stage = scratch();
    let out = Command::new("make")
        .arg("--no-print-directory")
        .arg("-C")
        .arg(repo_root())
        .arg("install")
        .arg(format!("DESTDIR={}", stage.path().display()))
        .env("CARGO_TARGET_DIR", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("is missing: run make first"), "{out:?}");
    assert!(files_under(stage.path()).is_empty());
}
