//! Kinds of attack found by attacking the agent as an adversary would, beyond issue 8's list:
//! a program (or a patch's constructor) that closes the agent's descriptors and opens files of
//! its own under the same numbers; the agent's own library sent as a patch; patches of the libc
//! functions Rust's standard library reads the clock and its random seeds through; a client that
//! answers `ready` with silence and a far deadline; a commit read after the deadline; a patch
//! whose constructor starts a helper process.

use crate::common::{basic, monotonic_ms};
use hotagent_tests::protocol::{encode_line, ErrorCode, ReloadRequest, Request, Response};
use hotagent_tests::target::TargetBuilder;
use hotagent_tests::*;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

const CFG: Config = Config::DEFAULT;

fn adversary() -> TargetBuilder {
    Target::builder(CFG.path("adversary"))
}

/// The target's descriptors that name `file`.
fn fds_naming(t: &Target, file: &Path) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", t.pid()))
        .expect("read the target's descriptors")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l == file)
        .count()
}

fn thread_named(t: &Target, name: &str) -> bool {
    std::fs::read_dir(format!("/proc/{}/task", t.pid()))
        .expect("read the target's threads")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .any(|comm| comm.trim_end() == name)
}

/// Whether every thread of the target is stopped (state `T` in its `stat`).
fn all_stopped(t: &Target) -> bool {
    std::fs::read_dir(format!("/proc/{}/task", t.pid()))
        .expect("read the target's threads")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .all(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
        })
}

fn size(file: &Path) -> u64 {
    std::fs::metadata(file).map(|m| m.len()).unwrap_or(0)
}

/// A daemon closes every descriptor it did not open, then opens its log files, which get the
/// numbers the agent held. Each later `fork` made the agent wake its (gone) I/O thread through
/// its old eventfd number: 8 bytes of binary written into the program's log per fork.
#[test]
fn fork_after_closefds_writes_nothing_into_the_programs_files() {
    let dir = scratch();
    let logs: Vec<_> = (0..3).map(|i| dir.path().join(format!("log{i}"))).collect();
    // The agent's own log file too: its descriptor is closed and handed to the program's files.
    let agent_log = dir.path().join("agent.log");
    let mut t = adversary()
        .env(
            "HOTAGENT_LOG",
            format!("debug,file={}", agent_log.display()),
        )
        .spawn();
    t.expect("closefds", "ok");
    for log in &logs {
        let fd = t.cmd_i(&format!("open {}", log.display()));
        assert!(fd >= 3, "open {}: {fd}", log.display());
    }
    for _ in 0..3 {
        t.expect("fork", "ok");
    }
    for log in &logs {
        assert_eq!(size(log), 0, "the agent wrote into {}", log.display());
    }
    t.expect("version", 1);
    // The agents of the three children, started after the program took the log's number, logged
    // into the agent's own file (opened again), as the parent did before.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&agent_log).unwrap_or_default();
        if text.matches("hotagent listening").count() >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "agent log:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A patch whose constructor closes every descriptor and opens a file of its own eight times:
/// the agent's client connection, wake-up pair, listener and private copy of the patch now name
/// the program's file. The agent must neither write to nor close any of them (it closed two of
/// the program's descriptors and wrote into its file before).
#[test]
fn a_constructor_that_takes_the_agents_descriptors_keeps_its_files() {
    let dir = scratch();
    let file = dir.path().join("stolen");
    let mut t = adversary().env("FD_THIEF_FILE", &file).spawn();
    let out = hotctl(
        &t,
        &[
            "reload",
            path_str(&CFG.path("libfd_thief.so")),
            "--no-probe",
        ],
    );
    // The connection is gone with the constructor: hotctl cannot know the outcome.
    assert_eq!(out.status.code(), Some(3), "{out}");
    // hotctl returns when the constructor closes its connection: wait for the constructor to
    // finish, and for the agent's worker to finish the request and end (its I/O thread stops
    // when it finds its descriptors gone).
    let deadline = Instant::now() + Duration::from_secs(10);
    while fds_naming(&t, &file) < 8 || thread_named(&t, "hotagent-work") {
        assert!(
            Instant::now() < deadline,
            "the agent still works, or closed a descriptor of the program: {} of 8 left",
            fds_naming(&t, &file)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t.assert_alive();
    t.expect("fork", "ok");
    t.expect("fork", "ok");
    assert_eq!(size(&file), 0, "the agent wrote into the program's file");
    t.expect("version", 1);
}

/// The agent's own library sent as a patch: its constructor would start a second agent, which
/// takes over the socket and hides the first one's generations. Refused before it is loaded.
#[test]
fn the_agent_itself_is_refused_as_a_patch() {
    let mut t = basic(CFG);
    let threads = || {
        std::fs::read_dir(format!("/proc/{}/task", t.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // The agent's worker thread starts with its first request.
    expect_fail(&t, &["reload", "/nonexistent/libfoo.so"]);
    let before = threads();
    let msg = expect_fail(&t, &["reload", path_str(&agent_so())]);
    assert!(msg.contains("build of hotagent itself"), "{msg}");
    assert_eq!(threads(), before, "a second agent started");
    assert!(hotctl(&t, &["status"]).success());
    t.expect("version", 1);
}

/// A patch of libc's `clock_gettime` that fails: the agent's own clock reads (Rust's `Instant`,
/// the log's timestamps, even in its panic hook) went through it, and the target died with
/// SIGABRT ("thread panicked while processing panic").
#[test]
fn a_patch_of_the_clock_is_refused() {
    let mut t = basic(CFG);
    let patch = CFG.path("libc_clock.so");
    let msg = expect_fail(&t, &["reload", path_str(&patch), "--replace", "libc.so.6"]);
    assert!(msg.contains("clock_gettime"), "{msg}");
    t.assert_alive();
    assert!(hotctl(&t, &["status"]).success());
    t.expect("version", 1);
}

/// A patch of libc's `getrandom` that fails: every later status was an internal fault (Rust's
/// `HashMap` seeds itself from it in a new thread).
#[test]
fn a_patch_of_getrandom_is_refused() {
    let mut t = basic(CFG);
    let patch = CFG.path("libc_random.so");
    let msg = expect_fail(&t, &["reload", path_str(&patch), "--replace", "libc.so.6"]);
    assert!(msg.contains("getrandom"), "{msg}");
    t.assert_alive();
    t.expect("version", 1);
}

fn confirmed(path: &Path, deadline_ms: u64) -> Vec<u8> {
    encode_line(&Request::Reload(ReloadRequest {
        no_probe: true,
        confirm: true,
        deadline_ms: Some(deadline_ms),
        ..reload_request(path)
    }))
}

/// Sends `req` and reads the `ready` answer.
fn ready(t: &Target, req: &[u8]) -> UnixStream {
    let mut c = UnixStream::connect(t.socket_path()).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(req).unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        assert_eq!(
            std::io::Read::read(&mut c, &mut byte).unwrap(),
            1,
            "{line:?}"
        );
        line.extend_from_slice(&byte);
    }
    assert_eq!(decode_reply(&line), Response::Ready);
    c
}

/// A client that asks for a far deadline, takes the `ready` answer and then says nothing held
/// the worker, and the lock every reload and rollback needs, for as long as it liked: rollback
/// was impossible. The agent now waits for a commit 10 s at most.
#[test]
fn a_silent_client_after_ready_does_not_hold_the_agent() {
    let t = basic(CFG);
    let mut c = ready(&t, &confirmed(&CFG.path("libfoo_v2.so"), u64::MAX / 2));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match raw_request(&t, &Request::status()) {
            Response::Status(s) if !s.busy => break,
            Response::Status(_) => {}
            other => panic!("status: {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the silent client still holds the agent"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let reply = read_reply(&mut c).expect("the agent answers the silent client");
    let e = expect_error(&decode_reply(&reply), &[ErrorCode::Abandoned]);
    assert!(e.message.contains("did not commit"), "{e:?}");
    let msg = expect_fail(&t, &["rollback"]);
    assert!(msg.contains("nothing to roll back"), "{msg}");
}

/// A commit sent before the deadline but read after it (the target was stopped meanwhile) used
/// to start the change anyway, past the deadline. Nothing changes now.
#[test]
fn a_commit_read_after_the_deadline_changes_nothing() {
    let mut t = basic(CFG);
    let deadline = monotonic_ms() + 2000;
    let mut c = ready(&t, &confirmed(&CFG.path("libfoo_v2.so"), deadline));
    // SAFETY: kill(2) on our own child, which the Target keeps unreaped while it lives.
    assert_eq!(unsafe { libc::kill(t.pid() as i32, libc::SIGSTOP) }, 0);
    // Every thread, the agent's worker included, must be stopped before the commit is sent.
    let until = Instant::now() + Duration::from_secs(10);
    while !all_stopped(&t) {
        assert!(Instant::now() < until, "the target does not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
    c.write_all(&encode_line(&Request::commit())).unwrap();
    while monotonic_ms() <= deadline + 100 {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(t.pid() as i32, libc::SIGCONT) }, 0);
    let reply = read_reply(&mut c).expect("the agent answers");
    let e = expect_error(&decode_reply(&reply), &[ErrorCode::Abandoned]);
    assert!(e.message.contains("after the request's deadline"), "{e:?}");
    t.expect("version", 1);
    match raw_request(&t, &Request::status()) {
        Response::Status(s) => assert_eq!(s.generation, 0),
        other => panic!("status: {other:?}"),
    }
}

/// A patch whose constructor starts a helper process (a library that runs its own daemon): the
/// helper inherits the probe's answer pipe and outlives the probe's copy, and the probe waited
/// for the pipe's end until its 10 s were up, then refused a good library ("the probe load did
/// not finish"). The copy's exit ends its answer now.
#[test]
fn a_constructor_that_starts_a_helper_passes_the_probe() {
    let mut t = basic(CFG);
    let started = Instant::now();
    let r = reload(&t, &CFG.path("libhelper_ctor.so"), &[]);
    assert_eq!(r.generation, 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the probe waited for the helper: {:?}",
        started.elapsed()
    );
    t.expect("version", 2);
    // The helper the real load started is a child of the target's thread that loaded it: end
    // it with the test.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", t.pid())).expect("read the threads");
    let children: Vec<i32> = tasks
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    for pid in children {
        // SAFETY: kill(2) on a helper the target started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// `HOTAGENT_SIGNAL=15` made the agent take SIGTERM for its stop signal: `kill PID` no longer
/// ended the program. Only a real-time signal is taken; another is refused with a warning.
#[test]
fn a_stop_signal_that_is_not_real_time_is_refused() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut t = Target::builder(CFG.path("basic"))
            .env("HOTAGENT_SIGNAL", sig.to_string())
            .spawn();
        t.expect("version", 1);
        // SAFETY: kill(2) on our own child, which the Target keeps unreaped while it lives.
        assert_eq!(unsafe { libc::kill(t.pid() as i32, sig) }, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while t.is_alive() {
            assert!(
                Instant::now() < deadline,
                "signal {sig} did not end the program: the agent took it"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The harness collects the target's stderr on its own thread.
        while !t.stderr_text().contains("is not a real-time signal") {
            assert!(Instant::now() < deadline, "no warning: {}", t.stderr_text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A log file that cannot be opened sent the whole log (`info` and all) to the target's stderr,
/// which is the program's. Now one warning names the file, and only warnings follow.
#[test]
fn an_unopenable_log_file_keeps_the_targets_stderr_quiet() {
    let mut t = Target::builder(CFG.path("basic"))
        .env("HOTAGENT_LOG", "debug,file=/nonexistent/hotagent/log")
        .spawn();
    t.expect("version", 1);
    assert!(hotctl(&t, &["status"]).success());
    t.expect("version", 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t
        .stderr_text()
        .contains("cannot open /nonexistent/hotagent/log")
    {
        assert!(Instant::now() < deadline, "no warning: {}", t.stderr_text());
        std::thread::sleep(Duration::from_millis(10));
    }
    let text = t.stderr_text();
    assert!(
        !text.contains("INFO") && !text.contains("DEBUG"),
        "the log went to the target's stderr: {text}"
    );
}
