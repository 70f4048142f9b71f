//! `hotctl watch PATH`: the real hotctl watches a library file while `basic` runs under the agent;
//! rebuilds are written into the file (slowly, in two halves; by rename; a broken one) and the
//! target's answers follow only the complete, good builds.

use crate::common::{assert_foo, basic, V1, V2, V3};
use hotagent_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const CFG: Config = Config::DEFAULT;

/// `hotctl --pid PID watch ARGS` as a child, its output read line by line.
struct Watch {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    stderr_seen: Vec<String>,
}

fn lines_of(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Watch {
    fn start(t: &Target, path: &Path) -> Watch {
        Watch::start_for(&[t], path)
    }

    /// `hotctl --pid A --pid B ... watch PATH`: the targets share one socket folder.
    fn start_for(targets: &[&Target], path: &Path) -> Watch {
        let pids: Vec<String> = targets.iter().map(|t| t.pid().to_string()).collect();
        let mut args: Vec<&str> = Vec::new();
        for pid in &pids {
            args.extend(["--pid", pid.as_str()]);
        }
        args.extend(["watch", "--debounce", "100ms"]);
        let mut child = Command::new(hotctl_bin())
            .args(args)
            .arg(path)
            .env("HOTAGENT_SOCKET_DIR", targets[0].socket_dir())
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hotctl watch");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let mut w = Watch {
            child,
            stdout,
            stderr,
            stderr_seen: Vec::new(),
        };
        // Files written before the watch is in place would go unseen.
        w.stderr_line("hotctl: watching ");
        w
    }

    /// The next line on stdout, within the deadline.
    fn line(&mut self) -> String {
        match self.stdout.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(e) => panic!(
                "no line from hotctl watch ({e}); stderr: {:?}",
                self.stderr_seen
            ),
        }
    }

    /// Waits for a stderr line starting with `prefix`, within the deadline.
    fn stderr_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no {prefix:?} from hotctl watch ({e}): {:?}",
                    self.stderr_seen
                ),
            }
        }
    }

    /// Sends `sig`; returns the exit code and the stdout lines not read yet.
    fn stop(mut self, sig: libc::c_int) -> (Option<i32>, Vec<String>) {
        // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        let status = target::wait_timeout(&mut self.child, DEADLINE).expect("watch exits");
        let mut rest = Vec::new();
        // The pipe's reader ends at EOF, which follows the exit.
        while let Ok(line) = self.stdout.recv_timeout(DEADLINE) {
            rest.push(line);
        }
        (status.code(), rest)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(CFG.path(name)).expect("fixture built")
}

fn watched(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap().join("libfoo.so")
}

#[track_caller]
fn assert_generation(t: &mut Target, want: u32) {
    t.assert_alive();
    assert_eq!(status(t).generation, want);
}

#[test]
fn a_rebuild_written_in_two_halves_is_loaded_only_once_complete_and_sigterm_ends_it() {
    let dir = scratch();
    let path = watched(dir.path());
    let mut t = basic(CFG);
    let mut w = Watch::start(&t, &path);

    // The first half, written slowly and closed: stable, closed, and still not a whole library.
    let v2 = fixture("libfoo_v2.so");
    let (first, second) = v2.split_at(v2.len() / 2);
    let mut f = std::fs::File::create(&path).unwrap();
    for chunk in first.chunks(first.len() / 4 + 1) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    drop(f);
    let note = w.stderr_line("hotctl: waiting: ");
    assert!(note.contains("not a complete shared library yet"), "{note}");
    assert_foo(&mut t, &V1);
    assert_generation(&mut t, 0);

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(second).unwrap();
    drop(f);
    let line = w.line();
    assert!(
        line.starts_with(&format!("generation 1: {} reloaded (", path.display()))
            && line.contains("/libfoo.so replaced, 7 symbols, "),
        "{line}"
    );
    assert_foo(&mut t, &V2);
    assert_generation(&mut t, 1);

    assert_eq!(w.stop(libc::SIGTERM), (Some(0), vec![]));
    assert_foo(&mut t, &V2);
}

#[test]
fn a_broken_build_is_refused_in_one_line_and_the_last_good_generation_stays() {
    let dir = scratch();
    let path = watched(dir.path());
    let mut t = basic(CFG);
    let mut w = Watch::start(&t, &path);

    write_atomic(&path, &fixture("libfoo_v2.so"));
    assert!(w.line().starts_with("generation 1: "));
    assert_foo(&mut t, &V2);

    // Complete, but the agent refuses it (an undefined symbol): one line, nothing changes.
    write_atomic(&path, &fixture("libbad_undef.so"));
    let line = w.line();
    assert!(
        line.starts_with(&format!("refused: {}: ", path.display())),
        "{line}"
    );
    assert!(line.contains("nobody_defines_this_function"), "{line}");
    assert!(line.ends_with("(generation 1 stays)"), "{line}");
    assert_foo(&mut t, &V2);
    assert_generation(&mut t, 1);

    // The next good build goes on top of the last good one; the same bytes again are not loaded.
    let v3 = fixture("libfoo_v3.so");
    write_atomic(&path, &v3);
    assert!(
        w.line().starts_with("generation 2: "),
        "the refusal took one line"
    );
    write_atomic(&path, &v3);
    w.stderr_line(&format!("hotctl: {} unchanged", path.display()));
    assert_foo(&mut t, &V3);
    assert_generation(&mut t, 2);

    // The unchanged build printed nothing on stdout.
    assert_eq!(w.stop(libc::SIGINT), (Some(0), vec![]));
}

#[test]
fn every_selected_process_gets_each_rebuild_with_a_line_of_its_own() {
    let sockets = scratch();
    let dir = scratch();
    let path = watched(dir.path());
    let spawn = || {
        Target::builder(CFG.path("basic"))
            .socket_dir(sockets.path())
            .spawn()
    };
    let (mut a, mut b) = (spawn(), spawn());
    let mut w = Watch::start_for(&[&a, &b], &path);
    write_atomic(&path, &fixture("libfoo_v2.so"));
    let mut lines = [w.line(), w.line()];
    lines.sort();
    let mut want: Vec<String> = [&a, &b]
        .iter()
        .map(|t| format!("pid {}: generation 1: ", t.pid()))
        .collect();
    want.sort();
    for (line, prefix) in lines.iter().zip(&want) {
        assert!(
            line.starts_with(prefix.as_str()),
            "{line:?} (want {prefix:?})"
        );
    }
    assert_foo(&mut a, &V2);
    assert_foo(&mut b, &V2);
    let (code, rest) = w.stop(libc::SIGTERM);
    assert_eq!(code, Some(0));
    assert!(rest.is_empty(), "{rest:?}");
}
