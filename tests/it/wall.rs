//! What the operator waits for: the first reload does not wait for the kernel's RCU grace period
//! (the agent registers for membarrier's core serialisation at start, while the process has one
//! thread, which costs the kernel no grace period), and `hotctl` talks to an agent without a
//! helper thread. Both are observed with strace on real processes; the timings are `make bench`'s.

use hotagent_tests::*;
use std::process::{Command, Stdio};

/// strace of `cmd`, following threads, tracing `calls`; None (with a note) when there is no strace.
fn strace(calls: &str, cmd: &Command, envs: &[(&str, &std::path::Path)]) -> Option<String> {
    let log = scratch();
    let out = log.path().join("trace");
    let mut s = Command::new("strace");
    s.args(["-f", "-qq", "-e"])
        .arg(format!("trace={calls}"))
        .arg("-o")
        .arg(&out);
    for (k, v) in envs {
        s.arg("-E").arg(format!("{k}={}", v.display()));
    }
    s.arg(cmd.get_program())
        .args(cmd.get_args())
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let done = match s.output() {
        Ok(done) => done,
        Err(e) => {
            eprintln!("wall: no strace ({e}); skipped");
            return None;
        }
    };
    let said = String::from_utf8_lossy(&done.stderr);
    if !done.status.success() && said.contains("Operation not permitted") {
        eprintln!("wall: strace may not trace here ({said}); skipped");
        return None;
    }
    assert!(done.status.success(), "strace {cmd:?}: {said}");
    Some(std::fs::read_to_string(&out).expect("the trace"))
}

/// The registration is made by the main thread, before the agent starts any thread: the only
/// moment it costs no grace period (before, the first reload paid 10–25 ms for it).
#[test]
fn membarrier_is_registered_at_start_before_any_thread() {
    let cfg = Config::DEFAULT;
    let dir = scratch();
    let agent = agent_so();
    let basic = Command::new(cfg.path("basic"));
    let envs = [
        ("LD_PRELOAD", agent.as_path()),
        ("HOTAGENT_SOCKET_DIR", dir.path()),
    ];
    let Some(trace) = strace("membarrier,clone,clone3", &basic, &envs) else {
        return;
    };
    let lines: Vec<&str> = trace.lines().collect();
    let register = lines
        .iter()
        .position(|l| l.contains("MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE"))
        .unwrap_or_else(|| panic!("no registration at start:\n{trace}"));
    assert!(lines[register].contains("= 0"), "{trace}");
    let first_thread = lines.iter().position(|l| l.contains("clone"));
    assert!(
        first_thread.is_some_and(|c| c > register),
        "registered after a thread started (or the agent started none):\n{trace}"
    );
}

/// After the early registration a reload writes entries (the core barrier in use) and rolls
/// them back.
#[test]
fn reload_after_early_registration_switches_entries() {
    let cfg = Config::DEFAULT;
    let mut t = Target::spawn(cfg.path("basic"));
    t.expect("version", 1);
    t.expect("start_ptr", 1);
    reload(&t, &cfg.path("libfoo_v2.so"), &["--no-probe"]);
    // Through a pointer taken at start: only the jump written at the old entry leads to v2.
    t.expect("start_ptr", 2);
    rollback(&t);
    t.expect("start_ptr", 1);
    t.finish().assert_clean();
}

/// A `--pid` call opens one socket on the calling thread: no helper thread to connect.
#[test]
fn hotctl_connects_without_a_helper_thread() {
    let cfg = Config::DEFAULT;
    let t = Target::spawn(cfg.path("basic"));
    let pid = t.pid().to_string();
    let mut ctl = Command::new(hotctl_bin());
    ctl.args(["--pid", &pid, "status"]);
    let envs = [("HOTAGENT_SOCKET_DIR", t.socket_dir())];
    let Some(trace) = strace("clone,clone3,connect", &ctl, &envs) else {
        return;
    };
    assert_eq!(
        trace.lines().filter(|l| l.contains("connect(")).count(),
        1,
        "{trace}"
    );
    assert!(
        !trace.contains("clone"),
        "hotctl started a thread:\n{trace}"
    );
}
