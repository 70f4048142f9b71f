//! Start-up, second pass: `HOTAGENT_SKIP` is the constructor's first question, so a skipped
//! process gets nothing of the agent — not its persisted patches either; and hotctl, like the
//! agent, loads no libgcc_s.

use hotagent_tests::*;
use std::path::PathBuf;

const CFG: Config = Config::DEFAULT;

/// Records libfoo_v2 in the journal of `state` for firstcall (a live `reload --persist`).
fn persist_foo_v2(state: &std::path::Path, patches: &std::path::Path) {
    let patch = patches.join("libfoo_v2.so");
    copy_atomic(&CFG.path("libfoo_v2.so"), &patch);
    let mut t = Target::builder(CFG.path("firstcall"))
        .env("HOTAGENT_STATE_DIR", state)
        .spawn();
    assert_eq!(t.read_line("first call"), "first 1");
    let r = reload(&t, &patch, &["--persist"]);
    assert!(r.persisted.is_some(), "nothing persisted: {r:?}");
    t.kill();
}

// Before the fix the constructor still read the journal when HOTAGENT_SKIP was set, and applied
// the persisted patch to a process whose agent was meant to be off.
#[test]
fn hotagent_skip_applies_no_persisted_patch() {
    let (state, patches) = (scratch(), scratch());
    persist_foo_v2(state.path(), patches.path());
    let mut t = Target::builder(CFG.path("firstcall"))
        .env("HOTAGENT_STATE_DIR", state.path())
        .env("HOTAGENT_SKIP", "1")
        .agent_off()
        .spawn();
    assert_eq!(t.read_line("first call"), "first 1");
    t.expect("version", 1);
    let socket = hotagent_protocol::socket_path(t.socket_dir(), t.pid());
    assert!(!socket.exists(), "{} exists", socket.display());
    // The same journal without HOTAGENT_SKIP: the patch is applied, so the journal was usable.
    let mut on = Target::builder(CFG.path("firstcall"))
        .env("HOTAGENT_STATE_DIR", state.path())
        .spawn();
    assert_eq!(on.read_line("first call"), "first 2");
    t.finish().assert_clean();
}

#[test]
fn hotctl_brings_no_libgcc_s() {
    let hotctl: PathBuf = hotctl_bin();
    // The loader lists what it maps for hotctl (what ldd does) without running its main.
    let out = std::process::Command::new(&hotctl)
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .env_remove("LD_PRELOAD")
        .output()
        .expect("run hotctl under LD_TRACE_LOADED_OBJECTS");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && listed.contains("libc.so"),
        "{listed}"
    );
    assert!(
        !listed.contains("libgcc_s"),
        "hotctl loads libgcc_s: {listed}"
    );
    let version = std::process::Command::new(&hotctl)
        .arg("--version")
        .output()
        .expect("run hotctl --version");
    assert!(version.status.success(), "{version:?}");
}
