//! The patch file as an attack surface (issue 8): another user racing the agent in a shared
//! folder, a path swapped for a FIFO or `/dev/zero`, a symbolic link, a huge file; and the state a
//! patch cannot carry over (a thread-local variable that grew).

use crate::common::{assert_foo, basic, V2, V3};
use hotagent_tests::protocol::{ErrorCode, ReloadRequest, Request, Response};
use hotagent_tests::users::test_user;
use hotagent_tests::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const CFG: Config = Config::DEFAULT;

/// How the agent refuses a file it cannot use.
const FILE_ERRORS: [ErrorCode; 2] = [ErrorCode::FileUnreadable, ErrorCode::BadElf];

/// How long the agent may take to refuse a bad file: a refusal is immediate, a hang is not.
const QUICK: Duration = Duration::from_secs(5);

/// A field of `/proc/PID/status`, in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A scratch folder others may enter, with a world-writable, non-sticky folder `shared` in it.
fn shared_folder() -> (tempfile::TempDir, PathBuf) {
    let root = scratch();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = root.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    (root, shared)
}

/// Sends a request on the socket and waits at most [`QUICK`] for the answer.
#[track_caller]
fn quick_request(t: &impl HasAgent, req: &Request) -> Response {
    let start = Instant::now();
    let mut s = UnixStream::connect(t.socket_path()).unwrap();
    s.set_read_timeout(Some(QUICK)).unwrap();
    s.write_all(&protocol::encode_line(req)).unwrap();
    let mut reply = Vec::new();
    if let Err(e) = s.read_to_end(&mut reply) {
        panic!(
            "no answer within {QUICK:?} ({e}; {:?} elapsed): the agent hangs on the file",
            start.elapsed()
        );
    }
    decode_reply(&reply)
}

fn reload_of(path: &Path) -> Request {
    Request::Reload(reload_request(path))
}

/// The agent still serves: status answers at once and a good reload goes through.
#[track_caller]
fn still_serves(t: &mut Target) {
    match quick_request(t, &Request::status()) {
        Response::Status(s) => assert_eq!(s.generation, 0, "{s:?}"),
        other => panic!("expected a status, got {other:?}"),
    }
    reload(t, &CFG.path("libfoo_v2.so"), &[]);
    assert_foo(t, &V2);
}

/// The other user's racer (`racer.c`), killed when dropped.
struct Racer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Racer {
    fn start(dir: &Path, guesses: &[String]) -> Racer {
        let user = test_user().expect("the race tests run as root (as CI does)");
        let (uid, gid) = (user.uid, user.gid);
        let mut child = Command::new(CFG.path("racer"))
            .arg(dir)
            .arg(CFG.path("libevil.so"))
            .arg("60")
            .args(guesses)
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the racer");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let r = Racer { child, lines };
        assert_eq!(r.line(), "ready");
        // It works: a file that appears is replaced by its library at once.
        let canary = dir.join(format!("canary-{}", guesses.len()));
        std::fs::write(&canary, b"canary").unwrap();
        let evil = std::fs::read(CFG.path("libevil.so")).unwrap();
        let deadline = Instant::now() + DEADLINE;
        while std::fs::read(&canary).unwrap() != evil {
            assert!(
                Instant::now() < deadline,
                "the racer did not swap the canary"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        r
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .expect("the racer did not answer")
    }

    /// Stops it; returns how many files it swapped.
    fn stop(mut self) -> usize {
        drop(self.child.stdin.take());
        let line = self.line();
        let n = line.strip_prefix("swapped ").and_then(|n| n.parse().ok());
        n.unwrap_or_else(|| panic!("racer: {line:?}"))
    }
}

impl Drop for Racer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A root target reloads from a world-writable, non-sticky folder while another user renames
/// their own library over every file that appears there (the attack of issue 8 on the copy
/// staged beside the patch), and then also plants the staged names it can guess: their
/// constructor never runs, the target runs our builds, and the agent creates nothing there.
#[test]
fn another_user_cannot_swap_the_staged_copy() {
    let mut t = basic(CFG);
    let (root, shared) = shared_folder();
    let patch = shared.join("libfoo.so");
    std::fs::copy(CFG.path("libfoo_v2.so"), &patch).unwrap();

    let racer = Racer::start(&shared, &[]);
    reload(&t, &patch, &[]);
    assert_foo(&mut t, &V2);
    assert_eq!(racer.stop(), 1, "only the canary may have appeared");

    std::fs::copy(CFG.path("libfoo_v3.so"), &patch).unwrap();
    let guesses: Vec<String> = (1..=16)
        .map(|n| format!(".libfoo.so.hotagent-{}-{n}", t.pid()))
        .collect();
    let racer = Racer::start(&shared, &guesses);
    reload(&t, &patch, &[]);
    assert_foo(&mut t, &V3);
    assert_eq!(racer.stop(), 1, "only the canary may have appeared");

    let ran: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("evil-ran-"))
        .collect();
    assert!(ran.is_empty(), "the other user's constructor ran: {ran:?}");
    let uid = test_user().expect("the race tests run as root").uid;
    for e in std::fs::read_dir(&shared).unwrap() {
        let e = e.unwrap();
        let owner = e.metadata().unwrap().uid();
        assert!(
            e.file_name() == "libfoo.so" || owner == uid,
            "{:?} (owner {owner}) was created in the shared folder",
            e.file_name()
        );
    }
    t.assert_alive();
}

fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}

/// A FIFO is refused at once, by name, and leaves the agent free (it used to block in the read,
/// holding the reload lock, when the FIFO was swapped in after the agent's stat).
#[test]
fn a_fifo_is_refused_at_once() {
    let mut t = basic(CFG);
    let dir = scratch();
    let fifo = dir.path().join("libfoo.so");
    mkfifo(&fifo);
    let start = Instant::now();
    let msg = expect_fail(&t, &["reload", path_str(&fifo)]);
    assert!(msg.contains("is a FIFO"), "{msg}");
    let e = expect_error(
        &quick_request(&t, &reload_of(&fifo)),
        &[ErrorCode::FileUnreadable],
    );
    assert!(e.message.contains("is a FIFO (named pipe)"), "{e:?}");
    assert!(start.elapsed() < QUICK, "{:?}", start.elapsed());
    still_serves(&mut t);
}

/// Swaps `path` back and forth between a hard link of `good` and what `bad` makes at a temporary
/// name, until dropped.
struct Swapper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Swapper {
    fn start(
        path: &Path,
        good: &Path,
        bad: impl Fn(&Path) -> std::io::Result<()> + Send + 'static,
    ) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let (path, good, flag) = (path.to_path_buf(), good.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            let (tmp_good, tmp_bad) = (path.with_extension("good"), path.with_extension("bad"));
            let mut swaps = 0;
            // Stops at the first failure too (the test ended and took the folder with it).
            while !flag.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(&tmp_good);
                let _ = std::fs::remove_file(&tmp_bad);
                let step = std::fs::hard_link(&good, &tmp_good)
                    .and_then(|()| std::fs::rename(&tmp_good, &path))
                    .and_then(|()| bad(&tmp_bad))
                    .and_then(|()| std::fs::rename(&tmp_bad, &path));
                if step.is_err() {
                    break;
                }
                swaps += 1;
            }
            swaps
        });
        Swapper {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Dry runs (check, no probe: as fast as the agent goes) of a path another thread keeps swapping
/// between a good library and `bad`: each answers within [`QUICK`], a success or a refusal that
/// names `refusal`; both happen.
fn race_dry_runs(
    t: &Target,
    path: &Path,
    bad: impl Fn(&Path) -> std::io::Result<()> + Send + 'static,
    refusal: &str,
) {
    let good = path.with_extension("v2");
    std::fs::copy(CFG.path("libfoo_v2.so"), &good).unwrap();
    std::fs::copy(&good, path).unwrap();
    let swapper = Swapper::start(path, &good, bad);
    let req = Request::Reload(ReloadRequest {
        dry_run: true,
        no_probe: true,
        ..reload_request(path)
    });
    let (mut ok, mut refused, mut named) = (0, 0, 0);
    let start = Instant::now();
    while ok + refused < 600 && start.elapsed() < Duration::from_secs(20) {
        match quick_request(t, &req) {
            Response::Reload(r) => {
                assert!(r.dry_run);
                ok += 1;
            }
            Response::Error(e) if FILE_ERRORS.contains(&e.code) => {
                refused += 1;
                named += usize::from(e.message.contains(refusal));
            }
            other => panic!("expected a dry run or a refusal of the file: {other:?}"),
        }
    }
    let swaps = swapper.stop();
    eprintln!("{refusal}: {ok} dry runs, {refused} refusals ({named} naming it), {swaps} swaps");
    assert!(
        ok > 0 && named > 0,
        "the race never hit both: {ok} ok, {named} refused as {refusal:?}"
    );
}

/// The FIFO swapped in at any moment (after hotctl resolved the path, after the agent looked at
/// it): every request is answered at once, and the agent serves on.
#[test]
fn a_path_swapped_for_a_fifo_never_blocks_the_agent() {
    let mut t = basic(CFG);
    let dir = scratch();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let path = dir.path().join("libfoo.so");
    race_dry_runs(
        &t,
        &path,
        move |tmp| std::fs::hard_link(&fifo, tmp),
        "is a FIFO",
    );
    still_serves(&mut t);
}

/// `/dev/zero` (named, or through a link hotctl resolves, or swapped in as a link) is refused
/// without reading it: the target's memory does not move.
#[test]
fn dev_zero_is_refused_and_costs_nothing() {
    let mut t = basic(CFG);
    // Should the fix regress, the target fails an allocation instead of eating the machine.
    let limit = status_kb(t.pid(), "VmSize") * 1024 + (1 << 30);
    let pid = t.pid().to_string();
    let capped = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--as={limit}")])
        .status()
        .unwrap();
    assert!(capped.success());
    let rss = status_kb(t.pid(), "VmRSS");
    let e = expect_error(
        &quick_request(&t, &reload_of(Path::new("/dev/zero"))),
        &[ErrorCode::FileUnreadable],
    );
    assert!(
        e.message.contains("/dev/zero is a character device"),
        "{e:?}"
    );
    let dir = scratch();
    let link = dir.path().join("libfoo.so");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let msg = expect_fail(&t, &["reload", path_str(&link)]);
    assert!(msg.contains("character device"), "{msg}");

    let path = dir.path().join("libswap.so");
    race_dry_runs(
        &t,
        &path,
        |tmp| std::os::unix::fs::symlink("/dev/zero", tmp),
        "is a symbolic link",
    );
    let grown = status_kb(t.pid(), "VmRSS").saturating_sub(rss);
    assert!(grown < 16 * 1024, "the target's RSS grew by {grown} kB");
    still_serves(&mut t);
}

/// A symbolic link as the last part of the path (hotctl sends resolved paths; a raw client or a
/// link swapped in after hotctl resolved it) is not followed.
#[test]
fn a_final_symlink_is_not_followed() {
    let mut t = basic(CFG);
    let dir = scratch();
    let link = dir.path().join("libfoo.so");
    std::os::unix::fs::symlink(CFG.path("libfoo_v2.so"), &link).unwrap();
    let e = expect_error(
        &quick_request(&t, &reload_of(&link)),
        &[ErrorCode::FileUnreadable],
    );
    assert!(
        e.message.contains(path_str(&link)) && e.message.contains("is a symbolic link"),
        "{e:?}"
    );
    crate::common::assert_unchanged(&mut t);
    // hotctl resolves the link itself and sends the file's own path.
    reload(&t, &link, &[]);
    assert_foo(&mut t, &V2);
}

/// A 200 MB library (a real patch padded with a section the loader never maps) reloads without
/// passing through the target's memory: its peak RSS rises by far less than the file's size.
#[test]
fn a_big_library_stays_out_of_the_heap() {
    let mut t = basic(CFG);
    let dir = scratch();
    let zeros = dir.path().join("zeros");
    std::fs::File::create(&zeros)
        .unwrap()
        .set_len(200 << 20)
        .unwrap();
    let big = dir.path().join("libfoo.so");
    let padded = Command::new("objcopy")
        .arg(format!("--add-section=.hotagent_pad={}", zeros.display()))
        .arg(CFG.path("libfoo_v2.so"))
        .arg(&big)
        .status()
        .unwrap();
    assert!(padded.success());
    let size = std::fs::metadata(&big).unwrap().len();
    assert!(size > 200 << 20, "{size}");
    status(&t);
    let before = status_kb(t.pid(), "VmHWM");
    reload(&t, &big, &[]);
    assert_foo(&mut t, &V2);
    let after = status_kb(t.pid(), "VmHWM");
    eprintln!(
        "a {} MB library: peak RSS {before} kB before, {after} kB after",
        size >> 20
    );
    assert!(
        after.saturating_sub(before) < 50 * 1024,
        "peak RSS rose from {before} kB to {after} kB for a {size}-byte file"
    );
}

/// A thread-local variable that grew (16 → 128 bytes) is refused, naming it and both sizes: the
/// new code would be bound to the old, smaller block of every thread. The target runs on.
#[test]
fn a_grown_thread_local_is_refused() {
    let mut t = Target::spawn(CFG.path("tls"));
    t.expect("set 7", "ok");
    let msg = expect_fail(&t, &["reload", path_str(&CFG.path("libtls_grow.so"))]);
    for part in ["thread-local variable tls_buf", "16 bytes", "128"] {
        assert!(msg.contains(part), "{part:?} missing: {msg}");
    }
    let e = expect_error(
        &quick_request(&t, &reload_of(&CFG.path("libtls_grow.so"))),
        &[ErrorCode::IncompatibleSymbol],
    );
    assert!(e.message.contains("tls_buf"), "{e:?}");
    t.expect("version", 1);
    t.expect("get", 7);
    assert_eq!(status(&t).generation, 0);
}

/// The same size reloads, with a warning naming the variable (the new library has a copy of its
/// own); its code reaches the old copy through the symbol, so this thread's value is kept.
#[test]
fn a_same_size_thread_local_warns() {
    let mut t = Target::spawn(CFG.path("tls"));
    t.expect("set 7", "ok");
    let r = reload(&t, &CFG.path("libtls_v2.so"), &[]);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("thread-local variable tls_buf")),
        "{:?}",
        r.warnings
    );
    t.expect("version", 2);
    t.expect("get", 7);
}

/// A program that closes a descriptor it did not open (a daemon does) frees the number of a
/// loaded generation's copy; the next copy may get that number, whose name the loader knows: it
/// must get a fresh one, never the older generation's module.
#[test]
fn a_closed_copy_number_never_brings_back_an_old_generation() {
    let mut t = Target::spawn(CFG.path("tls"));
    reload(&t, &CFG.path("libtls_v2.so"), &[]);
    let first = status(&t).generations[0].staged.clone();
    let fd = first
        .strip_prefix("/proc/self/fd/")
        .unwrap_or_else(|| panic!("staged as {first:?}"));
    t.expect(&format!("close {fd}"), "ok");
    reload(&t, &CFG.path("libtls_v3.so"), &[]);
    t.expect("version", 3);
    let st = status(&t);
    assert_ne!(st.generations[1].staged, first, "{st:?}");
    rollback(&t);
    t.expect("version", 2);
    rollback(&t);
    t.expect("version", 1);
}
