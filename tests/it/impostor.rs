//! Impostor sockets. Whoever listens where hotctl looks must prove to be the target's agent
//! before hotctl sends it a byte, and the agent refuses a socket folder anyone else could write
//! in. Each test runs the real attack with `impostor` (tests/fixtures/impostor.c), which answers
//! anything with a replayed genuine reload report and records what it was sent. The attacks by
//! another user run as `hotagent-test` (made with `useradd`) and need root; without root they
//! say they skipped.

use hotagent_tests::protocol::Response;
use hotagent_tests::*;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Instant;

const CFG: Config = Config::DEFAULT;

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A scratch folder others may enter (the test user must reach what is inside).
fn open_scratch() -> tempfile::TempDir {
    let dir = scratch();
    chmod(dir.path(), 0o755);
    dir
}

/// A genuine reload report as an agent sends it: what the impostor replays to look successful.
fn fake_success() -> &'static str {
    static LINE: OnceLock<String> = OnceLock::new();
    LINE.get_or_init(|| {
        let t = Target::spawn(CFG.path("basic"));
        let mut report = reload_json(&t, &CFG.path("libfoo_v2.so"), &[]);
        report["kind"] = "reload".into();
        let line = report.to_string();
        let decoded: Response = serde_json::from_str(&line).expect("a reload answer");
        assert!(matches!(decoded, Response::Reload(_)));
        line
    })
}

/// The impostor program, listening on a socket path of its choice.
struct Impostor {
    child: Child,
    pid: u32,
    socket: PathBuf,
    record: PathBuf,
    _files: tempfile::TempDir,
}

impl Impostor {
    /// Starts it on `socket`, as `user` (None: as the tests' own user), and waits until it listens.
    fn start(socket: &Path, user: Option<&User>) -> Impostor {
        let files = open_scratch();
        let bin = files.path().join("impostor");
        copy_atomic(&CFG.path("impostor"), &bin);
        chmod(&bin, 0o755);
        let record = files.path().join("record");
        fs::write(&record, "").unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg(socket)
            .arg(&record)
            .arg(fake_success())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(user) = user {
            std::os::unix::fs::chown(&record, Some(user.uid), Some(user.gid)).unwrap();
            std::os::unix::process::CommandExt::uid(&mut cmd, user.uid);
            std::os::unix::process::CommandExt::gid(&mut cmd, user.gid);
        }
        let mut child = cmd.spawn().expect("start the impostor");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let ready = rx.recv_timeout(DEADLINE);
        assert_eq!(
            ready.as_deref().map(str::trim),
            Ok("ready"),
            "the impostor did not start listening on {}",
            socket.display()
        );
        Impostor {
            pid: child.id(),
            child,
            socket: socket.to_owned(),
            record,
            _files: files,
        }
    }

    /// What each client sent it, one `got <n>: <line>` per connection. A round trip of our own
    /// first makes sure every earlier connection has been recorded.
    fn received(&self) -> Vec<String> {
        let mut s = UnixStream::connect(&self.socket).expect("reach the impostor");
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.write_all(b"SENTINEL\n").unwrap();
        read_reply(&mut s).expect("the impostor's reply to our sentinel");
        const SENTINEL: &str = "got 9: SENTINEL";
        let text = fs::read_to_string(&self.record).unwrap();
        assert_eq!(text.lines().last(), Some(SENTINEL), "{text:?}");
        text.lines()
            .filter(|l| *l != SENTINEL)
            .map(String::from)
            .collect()
    }

    /// Asserts that no client sent it a byte (a connection closed unused is fine: hotctl must
    /// connect to learn who listens).
    #[track_caller]
    fn assert_nothing_sent(&self) {
        for line in self.received() {
            assert_eq!(line, "got 0: ", "the impostor was sent a request");
        }
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts hotctl refused (exit 2, one `hotctl: ` line) with a message holding each of
/// `mentions`; returns the message.
#[track_caller]
fn refused(out: &CtlOutput, mentions: &[&str]) -> String {
    let msg = check_failure(out);
    assert_eq!(out.status.code(), Some(2), "{out}");
    for m in mentions {
        assert!(msg.contains(m), "the message should name {m:?}:\n{out}");
    }
    msg
}

/// Every verb, by pid and by discovery, is refused with `mentions`.
#[track_caller]
fn every_verb_refused(dir: &Path, pid: u32, mentions: &[&str]) {
    let pid = pid.to_string();
    let v2 = CFG.path("libfoo_v2.so");
    for args in [
        &["--pid", &pid, "reload", path_str(&v2)][..],
        &["--pid", &pid, "rollback"],
        &["--pid", &pid, "status", "--json"],
        &["reload", path_str(&v2)],
        &["list"],
    ] {
        refused(&hotctl_in(dir, None, args), mentions);
    }
}

/// Waits until the target's stderr holds `needle`.
#[track_caller]
fn wait_for_stderr(t: &Target, needle: &str) {
    let start = Instant::now();
    while !t.stderr_text().contains(needle) {
        assert!(
            start.elapsed() < DEADLINE,
            "no {needle:?} on the target's stderr: {:?}",
            t.stderr_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A target whose agent must refuse `dir`: it runs on as v1 without a socket, having said why.
fn refusing_target(dir: &Path, why: &str) -> Target {
    let mut t = Target::builder(CFG.path("basic"))
        .socket_dir(dir)
        .agent_off()
        .spawn();
    t.expect("version", 1);
    wait_for_stderr(
        &t,
        &format!("hotagent disabled: socket folder {}", dir.display()),
    );
    wait_for_stderr(&t, why);
    assert!(
        !t.socket_path().exists(),
        "the agent made a socket in a folder it should refuse"
    );
    t
}

macro_rules! need_test_user {
    () => {
        match test_user() {
            Some(user) => user,
            None => {
                eprintln!("skipped: needs root to run an impostor as another user");
                return;
            }
        }
    };
}

/// Another user made the folder before the target started, and listens in it on the target's
/// socket name. The agent refuses the folder; hotctl refuses it too and sends nothing.
#[test]
fn folder_made_by_another_user() {
    let user = need_test_user!();
    let parent = open_scratch();
    let dir = parent.path().join("sockets");
    fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
    let mut t = refusing_target(&dir, &format!("belongs to uid {}, not to us", user.uid));
    let imp = Impostor::start(&t.socket_path(), Some(&user));
    let owner = format!("it belongs to uid {}, not to you (uid 0) or root", user.uid);
    every_verb_refused(&dir, t.pid(), &[&dir.display().to_string(), &owner]);
    imp.assert_nothing_sent();
    t.expect("version", 1);
}

/// The folder's path is a symlink (made by another user) to a folder where they listen.
#[test]
fn symlinked_folder() {
    let user = need_test_user!();
    let parent = open_scratch();
    let real = parent.path().join("real");
    fs::create_dir(&real).unwrap();
    std::os::unix::fs::chown(&real, Some(user.uid), Some(user.gid)).unwrap();
    let link = parent.path().join("sockets");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(user.uid), Some(user.gid)).unwrap();
    let mut t = refusing_target(&link, "is a symlink");
    assert!(!hotagent_tests::protocol::socket_path(&real, t.pid()).exists());
    let imp = Impostor::start(
        &hotagent_tests::protocol::socket_path(&real, t.pid()),
        Some(&user),
    );
    let why = format!("refusing socket folder {}: it is a symlink", link.display());
    every_verb_refused(&link, t.pid(), &[&why]);
    imp.assert_nothing_sent();
    t.expect("version", 1);
}

/// A symlink named after a target's pid, in a good folder, points at another user's socket.
/// Asked by pid, hotctl refuses; `list` skips it with a warning and lists the real agent.
#[test]
fn symlinked_socket() {
    let user = need_test_user!();
    let mut t = Target::spawn(CFG.path("basic"));
    let mut victim = Target::builder(CFG.path("basic")).without_agent().spawn();
    let theirs = open_scratch();
    let evil = theirs.path().join("evil");
    fs::create_dir(&evil).unwrap();
    std::os::unix::fs::chown(&evil, Some(user.uid), Some(user.gid)).unwrap();
    let imp = Impostor::start(&evil.join("x.sock"), Some(&user));
    let link = t.agent_of(victim.pid()).socket_path();
    std::os::unix::fs::symlink(&imp.socket, &link).unwrap();

    let why = format!("refusing {}: it is a symlink", link.display());
    let pid = victim.pid().to_string();
    let v2 = CFG.path("libfoo_v2.so");
    refused(
        &hotctl_in(
            t.socket_dir(),
            None,
            &["--pid", &pid, "reload", path_str(&v2)],
        ),
        &[&why],
    );
    refused(
        &hotctl_in(t.socket_dir(), None, &["--pid", &pid, "status"]),
        &[&why],
    );
    list_skips(&t, &why, "symlink");
    imp.assert_nothing_sent();
    victim.expect("version", 1);
    assert_eq!(status(&t).generation, 0);
    t.expect("version", 1);
}

/// A folder anyone may write in (0777, and sticky 1777): the agent refuses it and stays off;
/// another user puts their socket there under the target's name; hotctl refuses the folder.
#[test]
fn world_writable_folder() {
    let user = need_test_user!();
    for mode in [0o777, 0o1777] {
        let parent = open_scratch();
        let dir = parent.path().join("sockets");
        fs::create_dir(&dir).unwrap();
        chmod(&dir, mode);
        let why = format!("is writable by group or others (mode {mode:04o})");
        let mut t = refusing_target(&dir, &why);
        let imp = Impostor::start(&t.socket_path(), Some(&user));
        let why = format!("group or others may write in it (mode {mode:04o})");
        every_verb_refused(&dir, t.pid(), &[&dir.display().to_string(), &why]);
        imp.assert_nothing_sent();
        t.expect("version", 1);
    }
}

/// Same user, good folder, but the socket named after one process is another's: the listener's
/// pid gives it away. `list` skips it with a warning and lists the real agent.
#[test]
fn socket_named_after_another_process() {
    let t = Target::spawn(CFG.path("basic"));
    let mut victim = Target::builder(CFG.path("basic")).without_agent().spawn();
    let socket = t.agent_of(victim.pid()).socket_path();
    let imp = Impostor::start(&socket, None);
    let pid = victim.pid().to_string();
    let why = format!("its listener is pid {} with uid", imp.pid);
    let expected = format!("expected pid {pid} with uid");
    let v2 = CFG.path("libfoo_v2.so");
    for args in [
        &["--pid", &pid, "reload", path_str(&v2)][..],
        &["--pid", &pid, "rollback"],
        &["--pid", &pid, "status"],
    ] {
        let msg = refused(&hotctl_in(t.socket_dir(), None, args), &[&why, &expected]);
        assert!(msg.contains(&socket.display().to_string()), "{msg}");
        assert!(msg.contains("nothing was sent"), "{msg}");
    }
    list_skips(&t, &why, "impostor");
    // hotctl connected to learn who listens, and hung up without a word.
    let connections = imp.received();
    assert!(!connections.is_empty());
    imp.assert_nothing_sent();
    victim.expect("version", 1);
    assert_eq!(status(&t).generation, 0);
}

/// `hotctl list` shows the real agent alone, and warns about the socket it refused (`why`).
#[track_caller]
fn list_skips(t: &Target, why: &str, what: &str) {
    let out = hotctl_in(t.socket_dir(), None, &["list", "--json"]);
    assert!(out.success(), "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(listed[0]["pid"], t.pid(), "{out}");
    assert!(
        out.stderr.contains(why),
        "no warning about the {what}:\n{out}"
    );
}
