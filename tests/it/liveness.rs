//! The agent's lifeline and its deadlines: a patch of libc cannot cut the control channel; a
//! request whose client gave up is never carried out behind its back, and when the outcome is
//! truly unknown hotctl says so with an exit status of its own; `status` and the program's
//! `fork` never wait for a running reload; a trickling client cannot hold a connection; the
//! children a forking program `_exit`s leave no sockets behind.

use crate::common::{basic, expect_foo_calls, monotonic_ms, V1, V2};
use hotagent_tests::protocol::{ErrorCode, ReloadRequest, Request, Response};
use hotagent_tests::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

const CFG: Config = Config::DEFAULT;

fn signal(t: &Target, sig: i32) {
    // SAFETY: kill(2) on our own child, which the Target keeps unreaped while it lives.
    assert_eq!(unsafe { libc::kill(t.pid() as libc::pid_t, sig) }, 0);
}

fn exit_code(out: &CtlOutput) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Polls the raw status until `pred` holds (10 s at most).
#[track_caller]
fn wait_status(t: &Target, what: &str, pred: impl Fn(&protocol::StatusReport) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Response::Status(s) = raw_request(t, &Request::status()) {
            if pred(&s) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: last status {s:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls a log file until it holds `needle` (10 s at most).
#[track_caller]
fn wait_for_log(log: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent's log never said {needle:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// libc's `recv`, `accept4`, `poll`, `getsockopt` and their kin all fail after this patch: the
/// agent still answers and rolls it back, because its control channel makes raw system calls.
#[test]
fn a_libc_patch_of_the_socket_calls_cannot_cut_the_lifeline() {
    let mut t = Target::spawn(CFG.path("libcpatch"));
    t.expect("recv", 1);
    let r = reload(
        &t,
        &CFG.path("libc_lifeline.so"),
        &["--replace", "libc.so.6"],
    );
    assert!(
        r.symbols.iter().any(|s| s.name == "accept4"),
        "{:?}",
        r.symbols
    );
    // The program's own calls go to the patch.
    t.expect("recv", format!("-1 {}", libc::ECONNRESET));
    // The agent's do not: it still accepts, reads, answers, and rolls back.
    assert_eq!(status(&t).generation, 1);
    let rb = rollback(&t);
    assert_eq!((rb.from, rb.generation), (1, 0));
    t.expect("recv", 1);
    assert_eq!(status(&t).generation, 0);
}

/// A reload whose deadline has passed when the agent gets to it is not carried out.
#[test]
fn a_request_past_its_deadline_changes_nothing() {
    let mut t = basic(CFG);
    let req = ReloadRequest {
        deadline_ms: Some(monotonic_ms() - 1),
        ..reload_request(&CFG.path("libfoo_v2.so"))
    };
    let resp = raw_request(&t, &Request::Reload(req));
    let e = expect_error(&resp, &[ErrorCode::Abandoned]);
    assert!(e.message.contains("deadline passed"), "{e:?}");
    expect_foo_calls(&mut t, &V1);
    assert_eq!(status(&t).generation, 0);
}

/// `kill -STOP` the target, and hotctl gives up: it says that nothing changed, and after
/// `kill -CONT` nothing does (the agent finds the request's deadline passed and drops it).
#[test]
fn a_stopped_target_is_not_changed_after_hotctl_gave_up() {
    let dir = scratch();
    let log = dir.path().join("agent.log");
    let mut t = Target::builder(CFG.path("basic"))
        .env("HOTAGENT_LOG", format!("info,file={}", log.display()))
        .spawn();
    signal(&t, libc::SIGSTOP);
    let out = hotctl(
        &t,
        &[
            "reload",
            "--timeout",
            "1",
            path_str(&CFG.path("libfoo_v2.so")),
        ],
    );
    signal(&t, libc::SIGCONT);
    assert_eq!(exit_code(&out), 2, "{out}");
    assert!(out.stderr.contains("nothing was changed"), "{out}");
    // The agent reads the request after all, then drops it.
    wait_for_log(&log, "request abandoned");
    expect_foo_calls(&mut t, &V1);
    assert_eq!(status(&t).generation, 0);
}

/// Two reloads at once, each with a deadline shorter than both together take: what each hotctl
/// says matches what happened — every success made a generation, every failure changed nothing.
#[test]
fn parallel_reloads_report_what_happened() {
    let mut t = Target::builder(CFG.path("basic"))
        .env("HOTAGENT_TEST_CTOR_MS", "1500")
        .spawn();
    let patch = CFG.path("libfoo_slow.so");
    let agent = t.agent_of(t.pid());
    let outs: Vec<CtlOutput> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| hotctl(&agent, &["reload", "--timeout", "3.5", path_str(&patch)])))
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // A success either made a generation or, when the other had already loaded the same bytes,
    // said so and changed nothing (idempotence).
    let ok = outs
        .iter()
        .filter(|o| o.success() && !o.stdout.starts_with("unchanged:"))
        .count();
    for o in outs.iter().filter(|o| !o.success()) {
        assert_eq!(exit_code(o), 2, "{o}");
        assert!(o.stderr.contains("nothing was changed"), "{o}");
    }
    wait_status(&t, "the agent settles", |s| !s.busy);
    assert!(ok >= 1, "{outs:#?}");
    assert_eq!(status(&t).generation as usize, ok, "{outs:#?}");
    expect_foo_calls(&mut t, &V2);
}

/// hotctl committed, then the agent took longer than hotctl waits (a patch constructor that
/// sleeps): the outcome is unknown, and hotctl says so with exit status 3. The reload then
/// completes.
#[test]
fn an_unknown_outcome_has_its_own_exit_status() {
    let mut t = Target::builder(CFG.path("basic"))
        .env("HOTAGENT_TEST_CTOR_MS", "3000")
        .spawn();
    let out = hotctl(
        &t,
        &[
            "reload",
            "--no-probe",
            "--timeout",
            "1",
            path_str(&CFG.path("libfoo_slow.so")),
        ],
    );
    assert_eq!(exit_code(&out), 3, "{out}");
    assert!(out.stderr.contains("outcome unknown"), "{out}");
    wait_status(&t, "the reload completes", |s| s.generation == 1);
    expect_foo_calls(&mut t, &V2);
}

/// `status` answers while a reload runs (its patch constructor sleeps), from the state the reload
/// started from, marked busy: it does not wait behind the reload.
#[test]
fn status_answers_during_a_reload() {
    let mut t = Target::builder(CFG.path("basic"))
        .env("HOTAGENT_TEST_CTOR_MS", "2000")
        .spawn();
    let patch = CFG.path("libfoo_slow.so");
    let agent = t.agent_of(t.pid());
    std::thread::scope(|s| {
        let running = s.spawn(|| hotctl(&agent, &["reload", "--no-probe", path_str(&patch)]));
        wait_status(&t, "status should say a reload runs", |st| {
            st.busy && st.generation == 0
        });
        assert!(
            !running.is_finished(),
            "the reload ended before status saw it"
        );
        let out = running.join().unwrap();
        assert!(out.success(), "{out}");
    });
    assert_eq!(status(&t).generation, 1);
    expect_foo_calls(&mut t, &V2);
}

/// The program forks while a reload runs a slow patch constructor: its fork is not held up by
/// the agent (it used to wait up to 2 s for the agent's lock).
#[test]
fn fork_does_not_wait_for_a_running_reload() {
    let mut t = Target::builder(CFG.path("lively"))
        .env("HOTAGENT_TEST_CTOR_MS", "3000")
        .spawn();
    let patch = CFG.path("libfoo_slow.so");
    let agent = t.agent_of(t.pid());
    std::thread::scope(|s| {
        let running = s.spawn(|| hotctl(&agent, &["reload", "--no-probe", path_str(&patch)]));
        wait_status(&t, "the reload should be running", |st| st.busy);
        let took = t.cmd_i("fork_ms");
        assert!(
            !running.is_finished(),
            "the reload ended before the fork was measured"
        );
        // Far below the constructor's 3 s and the old 2 s wait: the fork did not wait for us.
        assert!(took < 1000, "fork() took {took} ms during a reload");
        assert!(running.join().unwrap().success());
    });
    expect_foo_calls(&mut t, &V2);
}

/// A client that sends one byte a second never times out a single read, but the whole request
/// has 10 s: the agent hangs up on it, and serves others meanwhile.
#[test]
fn a_trickling_client_is_cut_off() {
    let t = basic(CFG);
    let mut c = UnixStream::connect(t.socket_path()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let cut = loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the agent still holds the trickling connection after 20 s"
        );
        // A space is harmless JSON white space: the request is never complete.
        if c.write_all(b" ").is_err() {
            break start.elapsed();
        }
        match c.read(&mut buf) {
            Ok(0) => break start.elapsed(),
            Ok(_) => panic!("the agent answered an incomplete request"),
            Err(_) => {}
        }
        assert_eq!(status(&t).generation, 0, "others are served meanwhile");
        std::thread::sleep(Duration::from_millis(950));
    };
    assert!(cut >= Duration::from_secs(9), "cut off after only {cut:?}");
}

/// Every verb refuses fields it does not know: a rollback "to generation -1" is refused, not
/// carried out.
#[test]
fn unknown_fields_are_refused_by_every_verb() {
    let mut t = basic(CFG);
    reload(&t, &CFG.path("libfoo_v2.so"), &[]);
    for line in [
        &br#"{"op":"rollback","generation":-1}"#[..],
        br#"{"op":"status","verbose":true}"#,
        br#"{"op":"reload","path":"/x","forcefully":true}"#,
    ] {
        let mut req = line.to_vec();
        req.push(b'\n');
        let resp = raw_line(&t, &req);
        let e = expect_error(&resp, &[ErrorCode::BadRequest]);
        assert!(e.message.contains("unknown field"), "{e:?}");
    }
    assert_eq!(status(&t).generation, 1);
    expect_foo_calls(&mut t, &V2);
}

/// Children that `_exit` at once (no exit handlers run) used to leave their sockets behind, about
/// 250 a second from a forking server; the agent now removes those of exited processes.
#[test]
fn children_that_exit_leave_no_sockets_behind() {
    let mut t = Target::spawn(CFG.path("lively"));
    t.expect("forks 200", 200);
    let socks = || {
        std::fs::read_dir(t.socket_dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".sock"))
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while socks() > 1 {
        assert!(
            Instant::now() < deadline,
            "{} sockets left in the folder after the children exited",
            socks()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status(&t).generation, 0);
    expect_foo_calls(&mut t, &V1);
}
