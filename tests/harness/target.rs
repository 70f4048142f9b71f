//! A fixture program running under the agent, driven line by line.

use crate::paths::agent_so;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a target may take to answer a command, or its agent to come up.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Something with an agent to talk to: a [`Target`], or any process given by folder and pid.
pub trait HasAgent {
    /// The `HOTAGENT_SOCKET_DIR` of the process.
    fn socket_dir(&self) -> &Path;
    fn pid(&self) -> u32;
    /// `<dir>/<pid>.sock`.
    fn socket_path(&self) -> PathBuf {
        hotagent_protocol::socket_path(self.socket_dir(), self.pid())
    }
}

/// An agent named by its socket folder and pid (e.g. a forked child of a target).
#[derive(Debug, Clone)]
pub struct AgentRef {
    pub dir: PathBuf,
    pub pid: u32,
}

impl HasAgent for AgentRef {
    fn socket_dir(&self) -> &Path {
        &self.dir
    }
    fn pid(&self) -> u32 {
        self.pid
    }
}

/// Waits until `<dir>/<pid>.sock` exists and accepts a connection. `alive` is asked between tries
/// and may give up early (the process died) by returning an error text.
pub fn wait_for_agent(
    dir: &Path,
    pid: u32,
    mut alive: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let path = hotagent_protocol::socket_path(dir, pid);
    let start = Instant::now();
    loop {
        if path.exists() && UnixStream::connect(&path).is_ok() {
            return Ok(());
        }
        alive()?;
        if start.elapsed() > DEADLINE {
            return Err(format!(
                "the agent of pid {pid} did not listen on {} within {DEADLINE:?}",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Options for starting a [`Target`].
pub struct TargetBuilder {
    exe: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    preload: bool,
    wait_for_agent: bool,
    socket_dir: Option<PathBuf>,
}

impl TargetBuilder {
    /// Preload the agent but expect it to stay off (e.g. it refuses the socket folder): do not
    /// wait for its socket.
    pub fn agent_off(mut self) -> Self {
        self.wait_for_agent = false;
        self
    }

    /// Use this socket folder (which must exist, owned by us, mode 0700) instead of a fresh one,
    /// e.g. to run several targets in one folder for `hotctl list`.
    pub fn socket_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.socket_dir = Some(dir.into());
        self
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Run without the agent (no LD_PRELOAD, no waiting for a socket).
    pub fn without_agent(mut self) -> Self {
        self.preload = false;
        self
    }

    pub fn spawn(self) -> Target {
        let (dir, own_dir) = match self.socket_dir {
            Some(dir) => (dir, None),
            None => {
                let own = tempfile::Builder::new()
                    .prefix("hotagent-it-")
                    .tempdir()
                    .expect("create a socket folder");
                (own.path().to_path_buf(), Some(own))
            }
        };
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.args)
            .env_remove("HOTAGENT_LOG")
            .env_remove("LD_PRELOAD")
            .env("HOTAGENT_SOCKET_DIR", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.preload {
            cmd.env("LD_PRELOAD", agent_so());
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.exe.display()));
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");

        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let captured = Arc::new(Mutex::new(Vec::new()));
        let sink = captured.clone();
        let stderr_thread = std::thread::spawn(move || {
            let mut stderr = stderr;
            let mut buf = [0u8; 4096];
            loop {
                match stderr.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]),
                }
            }
        });

        let name = self
            .exe
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut t = Target {
            child,
            pid,
            dir,
            _own_dir: own_dir,
            stdin,
            lines,
            stderr: captured,
            stderr_thread: Some(stderr_thread),
            name,
        };
        if self.preload && self.wait_for_agent {
            let dir = t.dir.clone();
            let r = wait_for_agent(&dir, pid, || t.check_alive());
            if let Err(why) = r {
                panic!("{why}\n{}", t.describe());
            }
        }
        t
    }
}

/// What a target left behind once it exited.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// Lines printed after the answer to `quit`.
    pub extra_stdout: Vec<String>,
    pub stderr: String,
}

impl Finished {
    /// Asserts a clean end: a successful exit, nothing printed after `bye`, nothing on stderr.
    #[track_caller]
    pub fn assert_clean(&self) {
        assert!(self.status.success(), "exit: {:?}", self.status);
        assert!(
            self.extra_stdout.is_empty(),
            "unexpected stdout lines: {:?}",
            self.extra_stdout
        );
        assert_eq!(self.stderr, "", "something wrote to the target's stderr");
    }
}

/// A fixture program started with the agent preloaded, in its own socket folder.
pub struct Target {
    child: Child,
    pid: u32,
    dir: PathBuf,
    _own_dir: Option<tempfile::TempDir>,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<JoinHandle<()>>,
    name: String,
}

impl HasAgent for Target {
    fn socket_dir(&self) -> &Path {
        &self.dir
    }
    fn pid(&self) -> u32 {
        self.pid
    }
}

impl Target {
    /// Starts `exe` with the agent and waits for the agent's socket.
    pub fn spawn(exe: impl AsRef<Path>) -> Target {
        Target::builder(exe).spawn()
    }

    pub fn builder(exe: impl AsRef<Path>) -> TargetBuilder {
        TargetBuilder {
            exe: exe.as_ref().to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            preload: true,
            wait_for_agent: true,
            socket_dir: None,
        }
    }

    /// The agent of another process in this target's socket folder (e.g. a forked child).
    pub fn agent_of(&self, pid: u32) -> AgentRef {
        AgentRef {
            dir: self.dir.clone(),
            pid,
        }
    }

    /// Everything the target wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    fn describe(&mut self) -> String {
        let state = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited: {status}"),
            Ok(None) => "still running".to_string(),
            Err(e) => format!("unknown state: {e}"),
        };
        format!(
            "[target {} pid {}: {state}; stderr: {:?}]",
            self.name,
            self.pid,
            self.stderr_text()
        )
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            _ => Err(format!("the target died\n{}", self.describe())),
        }
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Panics (with the target's state) unless it is still running.
    pub fn assert_alive(&mut self) {
        if let Err(why) = self.check_alive() {
            panic!("{why}");
        }
    }

    /// Until at least `count` threads of the target are asleep in one of `syscalls` (numbers, as
    /// `/proc/PID/task/TID/syscall` names them), 10 s at most: a thread just created may not have
    /// reached its wait yet.
    #[track_caller]
    pub fn wait_asleep_in(&self, syscalls: &[u32], count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let asleep = std::fs::read_dir(format!("/proc/{}/task", self.pid))
                .map(|tasks| {
                    tasks
                        .filter_map(|e| {
                            std::fs::read_to_string(e.ok()?.path().join("syscall")).ok()
                        })
                        .filter(|l| {
                            let nr = l.split(' ').next().and_then(|n| n.parse::<u32>().ok());
                            nr.is_some_and(|nr| syscalls.contains(&nr))
                        })
                        .count()
                })
                .unwrap_or(0);
            if asleep >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} threads of {} asleep in system calls {syscalls:?} after 10 s",
                asleep,
                self.name
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends one command line without waiting for an answer.
    pub fn send(&mut self, line: &str) {
        let r = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(format!("{line}\n").as_bytes())
                .and_then(|()| stdin.flush()),
            None => Err(std::io::Error::other("stdin closed")),
        };
        if let Err(e) = r {
            panic!("cannot send {line:?}: {e}\n{}", self.describe());
        }
    }

    /// Reads the next answer line.
    pub fn read_line(&mut self, what: &str) -> String {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "no answer to {what:?} within {DEADLINE:?}\n{}",
                    self.describe()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                // Give the exit status a moment to be collectable for the message.
                let _ = wait_timeout(&mut self.child, Duration::from_secs(2));
                panic!(
                    "the target closed stdout instead of answering {what:?}\n{}",
                    self.describe()
                )
            }
        }
    }

    /// Sends a command and returns its one-line answer.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.read_line(line)
    }

    /// Sends a command whose answer is a number.
    pub fn cmd_i(&mut self, line: &str) -> i64 {
        let answer = self.cmd(line);
        answer
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("answer to {line:?} is not a number: {answer:?}"))
    }

    /// Asks a command whose answer is a number until it reaches `at_least` or [`DEADLINE`] has
    /// passed; returns the last answer.
    pub fn wait_for_count(&mut self, line: &str, at_least: i64) -> i64 {
        let start = Instant::now();
        loop {
            let n = self.cmd_i(line);
            if n >= at_least || start.elapsed() > DEADLINE {
                return n;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asserts the answer to a command.
    #[track_caller]
    pub fn expect(&mut self, line: &str, want: impl std::fmt::Display) {
        let got = self.cmd(line);
        let want = want.to_string();
        assert_eq!(
            got, want,
            "answer to {line:?} of target {} (pid {})",
            self.name, self.pid
        );
    }

    /// Sends `quit`, expects `bye`, waits for the exit and collects what is left.
    pub fn finish(mut self) -> Finished {
        self.expect("quit", "bye");
        drop(self.stdin.take());
        let status = match wait_timeout(&mut self.child, DEADLINE) {
            Some(s) => s,
            None => panic!("the target did not exit after quit\n{}", self.describe()),
        };
        let mut extra_stdout = Vec::new();
        // The reader thread ends at EOF, which follows the exit (unless a forked child holds the
        // pipe: then stop at the deadline).
        let start = Instant::now();
        loop {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => extra_stdout.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) if start.elapsed() > DEADLINE => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        if let Some(h) = self.stderr_thread.take() {
            let _ = h.join();
        }
        Finished {
            status,
            extra_stdout,
            stderr: self.stderr_text(),
        }
    }

    /// Kills the process and waits for it (what drop does), returning how it ended.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a child with a deadline; `None` when it is still running then.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}
