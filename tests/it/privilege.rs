//! Programs that drop root privileges under the agent. glibc makes every thread repeat a set*id
//! call (its SIGSETXID broadcast) and aborts when their results differ; the agent's threads must
//! agree with the program's, and must not keep privileges the program gave up. After the drop
//! the agent keeps answering root, who started it and owns its socket folder, and nobody else.
//!
//! Needs root and `useradd` (the tests make the user `hotagent-test` when it is missing).

use hotagent_tests::*;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const CFG: Config = Config::DEFAULT;
const TEST_USER: &str = "hotagent-test";

/// (uid, gid) of the unprivileged test user, created once if missing.
fn test_user() -> (u32, u32) {
    static USER: OnceLock<(u32, u32)> = OnceLock::new();
    *USER.get_or_init(|| {
        if let Some(ids) = lookup_user() {
            return ids;
        }
        // Another test process may create it at the same moment: whoever loses sees it exist.
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(TEST_USER)
            .status();
        lookup_user().unwrap_or_else(|| panic!("cannot create the user {TEST_USER} (useradd)"))
    })
}

fn lookup_user() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(TEST_USER).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// One thread's credentials, from `/proc/PID/task/TID/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ThreadCreds {
    tid: String,
    name: String,
    uids: String,
    gids: String,
    cap_prm: String,
    cap_eff: String,
}

fn threads(pid: u32) -> Vec<ThreadCreds> {
    let dir = format!("/proc/{pid}/task");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let entry = entry.expect("read a task entry");
        let tid = entry.file_name().to_string_lossy().into_owned();
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue; // exited meanwhile
        };
        let field = |key: &str| -> String {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        out.push(ThreadCreds {
            tid,
            name: field("Name:"),
            uids: field("Uid:"),
            gids: field("Gid:"),
            cap_prm: field("CapPrm:"),
            cap_eff: field("CapEff:"),
        });
    }
    out
}

/// Waits until every thread of `pid` (the agent's included) has the main thread's credentials;
/// returns them. An agent thread follows the main thread's capabilities once the main thread's
/// own call is done, so it may lag that call by a moment (bounded, well under the deadline).
#[track_caller]
fn all_threads_like_main(pid: u32) -> ThreadCreds {
    let start = Instant::now();
    loop {
        let all = threads(pid);
        let main = all
            .iter()
            .find(|t| t.tid == pid.to_string())
            .expect("the main thread")
            .clone();
        assert!(
            all.iter().any(|t| t.name.starts_with("hotagent")),
            "no agent thread in {all:#?}"
        );
        let same = |t: &ThreadCreds| {
            (&t.uids, &t.gids, &t.cap_prm, &t.cap_eff)
                == (&main.uids, &main.gids, &main.cap_prm, &main.cap_eff)
        };
        if all.iter().all(same) {
            return main;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "threads still differ from the main thread after {DEADLINE:?}: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// hotctl run as the test user.
fn hotctl_as_test_user(t: &Target, args: &[&str]) -> std::process::Output {
    let (uid, gid) = test_user();
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(hotctl_bin())
        .arg("--pid")
        .arg(t.pid().to_string())
        .args(args)
        .env("HOTAGENT_SOCKET_DIR", t.socket_dir())
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .output()
        .expect("run hotctl as the test user")
}

/// After a drop: root still gets answers, the test user (now the process's own uid) does not.
fn agent_answers_root_only(t: &mut Target) {
    let st = status(t);
    assert_eq!(st.generation, 0, "{st:?}");
    let out = hotctl_as_test_user(t, &["status"]);
    assert!(
        !out.status.success(),
        "the test user got an answer from a process root started: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    t.expect("version", 1);
}

/// A daemon's drop (`User=`, sshd, cron): setgroups, setgid, setuid from a process with threads
/// of its own. Every thread ends as the test user with no capability left, the agent's too.
#[test]
fn daemon_drop_to_another_user_keeps_running() {
    let (uid, gid) = test_user();
    let mut t = Target::builder(CFG.path("dropper")).arg("3").spawn();
    t.expect(&format!("drop {uid} {gid}"), "dropped");
    t.expect("ids", format!("{uid} {uid} {gid} {gid}"));
    let main = all_threads_like_main(t.pid());
    assert_eq!(main.uids, format!("{uid} {uid} {uid} {uid}"), "{main:?}");
    assert_eq!(main.cap_prm, "0000000000000000", "{main:?}");
    agent_answers_root_only(&mut t);
    t.assert_alive();
}

/// setpriv's way, in a program that keeps running: keep-caps and capset on its one thread
/// between setresuid and setresgid. The agent's thread follows, ends with exactly the main
/// thread's capabilities (no more), and the process does not abort.
#[test]
fn keepcaps_drop_like_setpriv_keeps_running() {
    let (uid, gid) = test_user();
    let mut t = Target::builder(CFG.path("dropper")).spawn();
    t.expect(&format!("keepdrop {uid} {gid}"), "dropped");
    t.expect("ids", format!("{uid} {uid} {gid} {gid}"));
    let main = all_threads_like_main(t.pid());
    assert_eq!(main.uids, format!("{uid} {uid} {uid} {uid}"), "{main:?}");
    assert_ne!(
        main.cap_prm, "0000000000000000",
        "keep-caps kept them: {main:?}"
    );
    // The program then gives its capabilities up on its one thread and makes another set*id
    // call: every thread ends with none.
    t.expect("clearcaps", "cleared");
    let main = all_threads_like_main(t.pid());
    assert_eq!(main.cap_prm, "0000000000000000", "{main:?}");
    // Without capabilities, a way back to root fails on every thread alike: an error for the
    // program, not an abort, and no thread of the process is root again.
    t.expect("drop 0 0", "error setgroups(0, NULL) 1");
    t.expect("ids", format!("{uid} {uid} {gid} {gid}"));
    all_threads_like_main(t.pid());
    agent_answers_root_only(&mut t);
}

/// The real `setpriv` (util-linux) under the agent: `--reuid --regid --clear-groups` used to die
/// of SIGABRT in glibc's setxid_error. Each way is run many times while two threads keep both
/// cores busy: a set*id call reaching the agent's thread before it was known as the agent's (a
/// busy machine starts threads late) aborted most runs so.
#[test]
fn real_setpriv_drops_under_the_agent() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let burners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && std::time::Instant::now() < until
                {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    setpriv_runs(40);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in burners {
        b.join().unwrap();
    }
}

fn setpriv_runs(times: usize) {
    let (uid, gid) = test_user();
    let dir = tempfile::Builder::new()
        .prefix("hotagent-it-")
        .tempdir()
        .expect("a socket folder");
    let uid = uid.to_string();
    let gid = gid.to_string();
    let runs: [&[&str]; 3] = [
        &["--reuid", &uid, "--regid", &gid, "--clear-groups"],
        &["--reuid", &uid],
        &["--regid", &gid, "--reuid", &uid, "--init-groups"],
    ];
    for &args in runs.iter().cycle().take(times * runs.len()) {
        let out = run_with_deadline(
            Command::new("setpriv")
                .args(args)
                .args(["/bin/echo", "hi"])
                .env("LD_PRELOAD", agent_so())
                .env("HOTAGENT_SOCKET_DIR", dir.path())
                .env_remove("HOTAGENT_LOG"),
        );
        assert!(
            out.status.success() && out.stdout == b"hi\n",
            "setpriv {args:?} under the agent: {:?}, stdout {:?}, stderr {:?}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn run_with_deadline(cmd: &mut Command) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start setpriv");
    let start = Instant::now();
    while child.try_wait().expect("wait for setpriv").is_none() {
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("setpriv did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().expect("collect setpriv")
}
