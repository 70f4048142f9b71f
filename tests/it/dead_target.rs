//! A target that dies is reported as dead: during the reload (a constructor that aborts with
//! `--no-probe`, a SIGKILL no handler can catch) or right after the switch (new code that faults
//! when the program's own thread calls it). hotctl names the signal, exits with 4, and prints no
//! success. The agent's fatal-signal watch is gone after a request: the program's own SIGSEGV
//! handler is the kernel's again, and runs.

use hotagent_tests::*;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

const CFG: Config = Config::DEFAULT;

/// The deadly fixture, its thread already calling libfoo.
fn deadly(args: &[&str]) -> Target {
    let mut b = Target::builder(CFG.path("deadly"));
    for a in args {
        b = b.arg(*a);
    }
    let mut t = b.spawn();
    assert!(t.wait_for_count("calls", 1) >= 1, "the thread never ran");
    t
}

/// How the target ended, waiting for it with a deadline.
#[track_caller]
fn ended(t: &mut Target) -> std::process::ExitStatus {
    let start = Instant::now();
    while t.is_alive() {
        assert!(start.elapsed() < DEADLINE, "the target is still running");
        std::thread::sleep(Duration::from_millis(5));
    }
    t.kill().expect("the exit status")
}

#[track_caller]
fn assert_died(out: &CtlOutput, pid: u32, when: &str, signal: &str) {
    let msg = check_failure(out);
    assert_eq!(out.status.code(), Some(4), "{out}");
    assert!(
        msg.contains(&format!("process {pid} died {when}")) && msg.contains(signal),
        "{out}"
    );
    // Nothing, or with --json the error document alone: never a success report.
    if !out.stdout.is_empty() {
        let doc: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{out}"));
        assert_eq!(
            doc["error"]["code"], "target_died",
            "no success may be printed for a dead process:\n{out}"
        );
    }
}

#[test]
fn new_code_that_crashes_right_after_the_switch_is_reported_dead_with_sigsegv() {
    for json in [false, true] {
        let mut t = deadly(&[]);
        let patch = CFG.path("libfoo_segv.so");
        let mut args = vec!["reload", path_str(&patch)];
        if json {
            args.push("--json");
        }
        let out = hotctl(&t, &args);
        // The thread may call the new code before the agent has sent its report, or just after.
        let msg = check_failure(&out);
        assert!(
            msg.contains("died during the reload") || msg.contains("died right after the switch"),
            "{out}"
        );
        assert_died(&out, t.pid(), "", "killed by signal 11 (SIGSEGV)");
        // And the process died of it, as it would have without the agent.
        assert_eq!(ended(&mut t).signal(), Some(libc::SIGSEGV));
    }
}

#[test]
fn a_constructor_that_aborts_without_the_probe_is_reported_dead_during_the_reload() {
    let mut t = deadly(&[]);
    let patch = CFG.path("libabort_ctor.so");
    let out = hotctl(&t, &["reload", path_str(&patch), "--no-probe"]);
    assert_died(
        &out,
        t.pid(),
        "during the reload",
        "killed by signal 6 (SIGABRT)",
    );
    assert_eq!(ended(&mut t).signal(), Some(libc::SIGABRT));
}

/// SIGKILL reaches no handler: the agent cannot say anything, and hotctl sees the process go
/// through its pidfd, and how from its zombie (the test has not reaped it yet).
#[test]
fn a_death_no_handler_sees_is_still_reported_with_its_signal() {
    let mut t = deadly(&[]);
    let patch = CFG.path("libkill_ctor.so");
    let out = hotctl(&t, &["reload", path_str(&patch), "--no-probe"]);
    assert_died(
        &out,
        t.pid(),
        "during the reload",
        "killed by signal 9 (SIGKILL)",
    );
    assert_eq!(ended(&mut t).signal(), Some(libc::SIGKILL));
}

#[test]
fn a_healthy_reload_and_rollback_still_succeed() {
    let mut t = deadly(&[]);
    let out = hotctl(&t, &["reload", path_str(&CFG.path("libfoo_v2.so"))]);
    assert!(out.success(), "{out}");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.starts_with("generation 1:"), "{out}");
    t.expect("version", 2);
    let before = t.cmd_i("calls");
    assert!(t.wait_for_count("calls", before + 10) >= before + 10);
    for settle in ["0", "300ms"] {
        let out = hotctl(&t, &["rollback", "--settle", settle]);
        assert!(out.success(), "{out}");
        assert!(out.stdout.starts_with("generation 1 → 0"), "{out}");
        let out = hotctl(
            &t,
            &[
                "reload",
                path_str(&CFG.path("libfoo_v2.so")),
                "--json",
                "--settle",
                settle,
            ],
        );
        assert!(out.success(), "{out}");
    }
    t.expect("version", 2);
    t.assert_alive();
}

/// The watch is armed only while a request runs: afterwards the kernel holds the program's own
/// SIGSEGV action again (its handler, or the default), and a crash runs that handler.
#[test]
fn the_programs_own_segv_handler_is_back_and_runs_after_a_reload() {
    let mut t = deadly(&["handler"]);
    t.expect("handler", "mine");
    reload(&t, &CFG.path("libfoo_v2.so"), &[]);
    t.expect("handler", "mine");
    rollback(&t);
    t.expect("handler", "mine");
    // A refused reload leaves it too.
    let out = hotctl(&t, &["reload", path_str(&CFG.path("libcrash_ctor.so"))]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    t.expect("handler", "mine");
    t.send("segv");
    let status = ended(&mut t);
    assert_eq!(
        status.code(),
        Some(3),
        "the program's handler did not run: {status:?}"
    );
    assert!(t.stderr_text().contains("deadly: caught SIGSEGV"));

    let mut t = deadly(&[]);
    t.expect("handler", "default");
    reload(&t, &CFG.path("libfoo_v2.so"), &[]);
    t.expect("handler", "default");
}

/// The agent's own word, on the request's connection: its fatal-signal handler sends the
/// `died` line before the process dies, so the signal is known even when the zombie is reaped
/// at once (a service manager's child).
#[test]
fn the_agent_names_the_signal_on_the_connection() {
    let mut t = deadly(&[]);
    let req = protocol::ReloadRequest {
        no_probe: true,
        ..reload_request(&CFG.path("libabort_ctor.so"))
    };
    let resp = raw_request(&t, &protocol::Request::Reload(req));
    assert_eq!(
        resp,
        protocol::Response::Died(protocol::DiedReport {
            signal: libc::SIGABRT
        })
    );
    assert_eq!(ended(&mut t).signal(), Some(libc::SIGABRT));
}
