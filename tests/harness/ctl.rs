//! Driving agents: the real `hotctl` binary, and raw requests on the socket.

use crate::paths::hotctl_bin;
use crate::target::HasAgent;
use hotagent_protocol::{
    encode_line, ErrorCode, ErrorReply, ReloadReport, ReloadRequest, Request, Response,
    RollbackReport, StatusReport,
};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long one hotctl run may take.
pub const HOTCTL_DEADLINE: Duration = Duration::from_secs(60);

/// What one hotctl run printed.
#[derive(Debug)]
pub struct CtlOutput {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl std::fmt::Display for CtlOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hotctl {}\n  -> {}\n  stdout: {:?}\n  stderr: {:?}",
            self.args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `hotctl ARGS` with `HOTAGENT_SOCKET_DIR=dir`, in `cwd` if given, with a deadline.
pub fn hotctl_in(dir: &Path, cwd: Option<&Path>, args: &[&str]) -> CtlOutput {
    hotctl_env(&[("HOTAGENT_SOCKET_DIR", dir)], cwd, args)
}

/// Runs hotctl with `HOTAGENT_STATE_DIR` set to `state` (the journal's verbs), in the default
/// socket folder.
pub fn hotctl_state(state: &Path, args: &[&str]) -> CtlOutput {
    hotctl_env(&[("HOTAGENT_STATE_DIR", state)], None, args)
}

fn hotctl_env(env: &[(&str, &Path)], cwd: Option<&Path>, args: &[&str]) -> CtlOutput {
    let mut cmd = Command::new(hotctl_bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let child = cmd.spawn().expect("start hotctl");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(HOTCTL_DEADLINE) {
        Ok(out) => out.expect("wait for hotctl"),
        Err(_) => {
            // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own child, which
            // has not been reaped (its waiting thread has not returned), so the pid is not reused.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!(
                "hotctl {} did not finish within {HOTCTL_DEADLINE:?}",
                args.join(" ")
            );
        }
    };
    CtlOutput {
        args: args.iter().map(|s| s.to_string()).collect(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `hotctl --pid PID ARGS` against a target's agent.
pub fn hotctl(agent: &impl HasAgent, args: &[&str]) -> CtlOutput {
    let pid = agent.pid().to_string();
    let mut full = vec!["--pid", pid.as_str()];
    full.extend_from_slice(args);
    hotctl_in(agent.socket_dir(), None, &full)
}

/// Runs hotctl, asserts it succeeded and printed exactly one JSON document, and returns it.
#[track_caller]
pub fn hotctl_json(agent: &impl HasAgent, args: &[&str]) -> Value {
    let out = hotctl(agent, args);
    assert!(out.success(), "hotctl failed:\n{out}");
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("hotctl did not print one JSON document ({e}):\n{out}"))
}

/// A path as the `&str` hotctl arguments and requests take (test paths are UTF-8).
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// `hotctl reload PATH EXTRA... --json`, asserted to succeed.
#[track_caller]
pub fn reload_json(agent: &impl HasAgent, path: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["reload", path_str(path)];
    args.extend_from_slice(extra);
    args.push("--json");
    hotctl_json(agent, &args)
}

/// Like [`reload_json`], decoded as the protocol's [`ReloadReport`].
#[track_caller]
pub fn reload(agent: &impl HasAgent, path: &Path, extra: &[&str]) -> ReloadReport {
    let v = reload_json(agent, path, extra);
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("reload output is not a ReloadReport ({e}): {v}"))
}

/// `hotctl rollback --json`, asserted to succeed.
#[track_caller]
pub fn rollback(agent: &impl HasAgent) -> RollbackReport {
    rollback_with(agent, &[])
}

/// `hotctl rollback EXTRA.. --json`, asserted to succeed.
#[track_caller]
pub fn rollback_with(agent: &impl HasAgent, extra: &[&str]) -> RollbackReport {
    let args = [&["rollback"][..], extra, &["--json"]].concat();
    let v = hotctl_json(agent, &args);
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("rollback output is not a RollbackReport ({e}): {v}"))
}

/// `hotctl status --json`, asserted to succeed.
#[track_caller]
pub fn status(agent: &impl HasAgent) -> StatusReport {
    let v = hotctl_json(agent, &["status", "--json"]);
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("status output is not a StatusReport ({e}): {v}"))
}

/// Runs hotctl and asserts it failed the documented way: a non-zero exit (not a signal) and one
/// line `hotctl: <message>` on stderr. Returns the message.
#[track_caller]
pub fn expect_fail(agent: &impl HasAgent, args: &[&str]) -> String {
    let out = hotctl(agent, args);
    check_failure(&out)
}

/// The checks of [`expect_fail`] on an output already collected.
#[track_caller]
pub fn check_failure(out: &CtlOutput) -> String {
    assert!(
        out.status.code().is_some_and(|c| c != 0),
        "hotctl should have failed with an exit code:\n{out}"
    );
    let err = out.stderr.trim_end();
    assert_eq!(
        err.lines().count(),
        1,
        "hotctl should print one error line:\n{out}"
    );
    let msg = err
        .strip_prefix("hotctl: ")
        .unwrap_or_else(|| panic!("the error line should start with `hotctl: `:\n{out}"));
    assert!(!msg.trim().is_empty(), "empty error message:\n{out}");
    msg.to_string()
}

/// Connects to the agent, sends `bytes` as they are, and reads until the agent closes (with a
/// deadline). An I/O error is returned as is (e.g. a reset after an oversized request).
pub fn raw_exchange(agent: &impl HasAgent, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(agent.socket_path())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(bytes)?;
    read_reply(&mut s)
}

/// Reads until the agent closes. A reset that comes after a complete line (an agent that closes
/// without reading everything we sent, e.g. when it answers "busy") still counts as that reply.
pub fn read_reply(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return Ok(reply),
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) if reply.ends_with(b"\n") => return Ok(reply),
            Err(e) => return Err(e),
        }
    }
}

/// Decodes an agent's reply: exactly one line holding one [`Response`].
#[track_caller]
pub fn decode_reply(reply: &[u8]) -> Response {
    let text = String::from_utf8_lossy(reply);
    assert!(
        text.ends_with('\n'),
        "the reply should end with a newline: {text:?}"
    );
    assert_eq!(
        text.lines().count(),
        1,
        "the reply should be one line: {text:?}"
    );
    serde_json::from_str(text.trim_end())
        .unwrap_or_else(|e| panic!("the reply is not a Response ({e}): {text:?}"))
}

/// Sends raw bytes and decodes the single reply line.
#[track_caller]
pub fn raw_line(agent: &impl HasAgent, bytes: &[u8]) -> Response {
    let reply = raw_exchange(agent, bytes)
        .unwrap_or_else(|e| panic!("exchange with the agent failed: {e}"));
    decode_reply(&reply)
}

/// The reload request hotctl sends for `hotctl reload PATH`: the module chosen by name, a real
/// reload, with the probe. Other options by struct update: `ReloadRequest { dry_run: true,
/// ..reload_request(path) }`.
pub fn reload_request(path: &Path) -> ReloadRequest {
    ReloadRequest {
        path: path_str(path).to_string(),
        replace: None,
        dry_run: false,
        no_probe: false,
        got_only: false,
        fresh_state: false,
        changed_only: false,
        checkpoint: false,
        deadline_ms: None,
        confirm: false,
        settle_ms: None,
        hook_timeout_ms: None,
        probation_ms: None,
        persist: false,
        on_next_start: false,
        force: false,
    }
}

/// Sends a request on the socket (bypassing hotctl) and returns the agent's response.
#[track_caller]
pub fn raw_request(agent: &impl HasAgent, req: &Request) -> Response {
    raw_line(agent, &encode_line(req))
}

/// Asserts that a response is an error, with one of the given codes; returns it.
#[track_caller]
pub fn expect_error(resp: &Response, codes: &[ErrorCode]) -> ErrorReply {
    match resp {
        Response::Error(e) => {
            assert!(
                codes.contains(&e.code),
                "expected an error coded {codes:?}, got {:?}: {}",
                e.code,
                e.message
            );
            assert!(
                !e.message.trim().is_empty(),
                "error without a message: {e:?}"
            );
            e.clone()
        }
        other => panic!("expected an error coded {codes:?}, got {other:?}"),
    }
}

/// `make example-NAME` from the repository root, asserted to pass within two minutes (its
/// run.sh checks its own output and prints `EXAMPLE PASSED`); returns what it printed. The agent
/// and hotctl are the ones the harness checked are fresh: make is told not to rebuild them.
#[track_caller]
pub fn run_example(name: &str) -> String {
    let _ = (crate::paths::agent_so(), hotctl_bin());
    let target = format!("example-{name}");
    let child = Command::new("make")
        .args(["-s", "--no-print-directory", "-o", "build", target.as_str()])
        .current_dir(crate::paths::repo_root())
        .env_remove("LD_PRELOAD")
        // cargo test puts target/release first in the library path, where the Rust example's
        // own libcounter.so lies: the example programs must find theirs through their run path.
        .env_remove("LD_LIBRARY_PATH")
        .env("EXAMPLE_PACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run make");
    let pid = child.id();
    // Collected on another thread, so a full pipe cannot stall make while we wait.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.expect("collect make's output"),
        Err(_) => {
            // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own child, not
            // reaped yet (its waiting thread has not returned), so the pid is not reused.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("make {target} did not finish within 120 s");
        }
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("EXAMPLE PASSED"),
        "make {target}: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}
