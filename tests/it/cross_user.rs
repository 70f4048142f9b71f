//! Root finds every user's agents without being told where they listen: a target run by another
//! user with no socket variables at all listens in that user's registry folder
//! (`/tmp/hotagent-<uid>`), and a plain root hotctl (no `HOTAGENT_SOCKET_DIR`, no
//! `XDG_RUNTIME_DIR`) finds it by pid, lists it with its user, and drives it.

use hotagent_tests::users::test_user;
use hotagent_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const CFG: Config = Config::DEFAULT;

/// `basic` run by the test user under the agent, with no socket variable of any kind.
struct Theirs(Child);

impl Drop for Theirs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_as_test_user() -> (Theirs, u32) {
    let user = test_user().expect("the cross-user tests run as root (as CI does)");
    let mut child = Command::new(CFG.path("basic"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LD_PRELOAD", agent_so())
        .env("LD_LIBRARY_PATH", CFG.dir())
        .uid(user.uid)
        .gid(user.gid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start basic as the test user");
    // Its first answer proves it runs (and its agent's constructor is done).
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"version\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "1", "basic answered {line:?}");
    (Theirs(child), user.uid)
}

/// A root hotctl with none of the variables that name a socket folder.
fn plain_hotctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(hotctl_bin())
        .args(args)
        .env_remove("HOTAGENT_SOCKET_DIR")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .output()
        .expect("run hotctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn root_finds_drives_and_lists_another_users_agent() {
    let (theirs, uid) = start_as_test_user();
    let pid = theirs.0.id().to_string();
    // The agent may still be binding its socket when the program first answers.
    let until = Instant::now() + DEADLINE;
    let status = loop {
        let (ok, out, err) = plain_hotctl(&["--pid", &pid, "status", "--json"]);
        if ok {
            break serde_json::from_str::<serde_json::Value>(&out).expect("a status document");
        }
        assert!(Instant::now() < until, "root never found pid {pid}: {err}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status["pid"].to_string(), pid, "{status}");
    assert!(
        std::path::Path::new(&format!("/tmp/hotagent-{uid}/{pid}.sock")).exists(),
        "the agent does not listen in its user's registry folder"
    );
    let (ok, out, err) = plain_hotctl(&["list", "--json"]);
    assert!(ok, "list failed: {err}");
    assert!(
        out.contains(&format!("\"pid\":{pid}")) || out.contains(&format!("\"pid\": {pid}")),
        "list does not show pid {pid}: {out}"
    );
    assert!(
        out.contains("hotagent-test"),
        "list does not name its user: {out}"
    );
    // And root drives it: a reload and a rollback.
    let v2 = CFG.path("libfoo_v2.so");
    let (ok, out, err) = plain_hotctl(&["--pid", &pid, "reload", path_str(&v2), "--json"]);
    assert!(ok, "reload failed: {err}");
    assert!(out.contains("\"generation\":1"), "{out}");
    let (ok, _, err) = plain_hotctl(&["--pid", &pid, "rollback"]);
    assert!(ok, "rollback failed: {err}");
}

/// hotctl run by the test user, with `env` added to an otherwise empty environment.
fn their_hotctl(env: &[(&str, &std::path::Path)], args: &[&str]) -> std::process::Output {
    let user = test_user().expect("the cross-user tests run as root (as CI does)");
    let mut cmd = Command::new(hotctl_bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .uid(user.uid)
        .gid(user.gid)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run hotctl as the test user")
}

#[test]
fn another_user_is_told_who_owns_the_process_in_words() {
    let t = Target::spawn(CFG.path("basic"));
    let pid = t.pid().to_string();
    // Without any variable: the socket is not in their folders, and the message says whose it is.
    let out = their_hotctl(&[], &["--pid", &pid, "status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(
        err.contains(&format!("process {pid} belongs to")) && err.contains("root"),
        "{err}"
    );
    // Pointed at the folder itself: refused, in words, never a raw OS error.
    let out = their_hotctl(
        &[("HOTAGENT_SOCKET_DIR", t.socket_dir())],
        &["--pid", &pid, "status", "--json"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(!err.contains("os error"), "a raw OS error: {err}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json gives no error document ({e}): {err}"));
    assert!(doc["error"]["message"].is_string(), "{doc}");
}

/// Root's selectors reach every user's agents: one `reload --exe COPY` switches the test user's
/// process and root's own, and `rollback` takes both back. The executable is a private copy, so
/// the selection cannot reach any other test's processes (tests run in parallel).
#[test]
fn root_reloads_every_users_processes_of_an_executable_at_once() {
    let user = test_user().expect("the cross-user tests run as root (as CI does)");
    let dir = tempfile::Builder::new()
        .prefix("hotagent-fleet-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let exe = dir.path().join("basic");
    copy_atomic(&CFG.path("basic"), &exe);
    let start = |uid: u32, gid: u32| {
        let mut child = Command::new(&exe)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LD_PRELOAD", agent_so())
            .env("LD_LIBRARY_PATH", CFG.dir())
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the copy of basic");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        (Theirs(child), stdin, stdout)
    };
    let ask = |p: &mut (
        Theirs,
        std::process::ChildStdin,
        BufReader<std::process::ChildStdout>,
    )| {
        p.1.write_all(b"version\n").unwrap();
        let mut line = String::new();
        p.2.read_line(&mut line).unwrap();
        line.trim().to_string()
    };
    let mut theirs = start(user.uid, user.gid);
    let mut ours = start(0, 0);
    assert_eq!(ask(&mut theirs), "1");
    assert_eq!(ask(&mut ours), "1");
    let pids = [theirs.0 .0.id(), ours.0 .0.id()];
    let exe_arg = path_str(&exe);
    // Both agents may still be binding their sockets when their programs first answer.
    let until = Instant::now() + DEADLINE;
    loop {
        let (_, out, _) = plain_hotctl(&["status", "--exe", exe_arg, "--json"]);
        let found = serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|d| d["results"].as_array().map(Vec::len));
        if found == Some(2) {
            break;
        }
        assert!(
            Instant::now() < until,
            "root never saw both processes: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let v2 = CFG.path("libfoo_v2.so");
    let (ok, out, err) = plain_hotctl(&["reload", path_str(&v2), "--exe", exe_arg, "--json"]);
    assert!(ok, "reload failed: {err}\n{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    let mut switched: Vec<u64> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "switched")
        .map(|r| r["pid"].as_u64().unwrap())
        .collect();
    switched.sort();
    let mut want: Vec<u64> = pids.iter().map(|&p| u64::from(p)).collect();
    want.sort();
    assert_eq!(switched, want, "{doc}");
    assert_eq!(ask(&mut theirs), "2");
    assert_eq!(ask(&mut ours), "2");
    let (ok, out, err) = plain_hotctl(&["rollback", "--exe", exe_arg]);
    assert!(ok, "rollback failed: {err}\n{out}");
    assert!(
        out.ends_with("2 rolled back, 0 skipped, 0 failed\n"),
        "{out}"
    );
    assert_eq!(ask(&mut theirs), "1");
    assert_eq!(ask(&mut ours), "1");
}
