//! hotctl as a command-line tool: status, list, path resolution, pid selection, dead targets.

use hotagent_tests::protocol::PROTOCOL_VERSION;
use hotagent_tests::*;
use serde_json::Value;

const CFG: Config = Config::DEFAULT;

#[test]
fn status_of_a_fresh_target() {
    let t = Target::spawn(CFG.path("basic"));
    let s = status(&t);
    assert_eq!(s.protocol, PROTOCOL_VERSION);
    assert_eq!(s.pid, t.pid());
    assert_eq!(s.generation, 0);
    assert!(s.generations.is_empty());
    let exe = std::fs::canonicalize(CFG.path("basic")).unwrap();
    assert_eq!(
        std::fs::canonicalize(&s.exe).ok().as_deref(),
        Some(exe.as_path()),
        "{s:?}"
    );
    assert!(s.modules >= 4, "{s:?}");
}

#[test]
fn status_without_json_is_for_people() {
    let t = Target::spawn(CFG.path("basic"));
    let out = hotctl(&t, &["status"]);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains(&t.pid().to_string()), "{out}");
    assert_eq!(out.stderr, "", "{out}");
}

#[test]
fn reload_json_is_one_document() {
    let t = Target::spawn(CFG.path("basic"));
    let v2 = CFG.path("libfoo_v2.so");
    let v = reload_json(&t, &v2, &[]);
    for field in [
        "generation",
        "dry_run",
        "path",
        "module",
        "slots",
        "symtab_entries",
        "symbols",
        "elapsed_us",
        "phases",
    ] {
        assert!(v.get(field).is_some(), "no {field} in {v}");
    }
    assert_eq!(v["generation"], 1);
    let v = hotctl_json(&t, &["rollback", "--json"]);
    assert_eq!(v["generation"], 0);
    assert_eq!(v["from"], 1);
}

#[test]
fn list_shows_every_agent_in_the_folder() {
    let dir = scratch();
    let a = Target::builder(CFG.path("basic"))
        .socket_dir(dir.path())
        .spawn();
    let b = Target::builder(CFG.path("basic"))
        .socket_dir(dir.path())
        .spawn();
    reload(&b, &CFG.path("libfoo_v2.so"), &[]);

    let out = hotctl_in(dir.path(), None, &["list", "--json"]);
    assert!(out.success(), "{out}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    let entries = v
        .as_array()
        .unwrap_or_else(|| panic!("list is not an array: {v}"));
    assert_eq!(entries.len(), 2, "{v}");
    for (t, generation) in [(&a, 0), (&b, 1)] {
        let e = entries
            .iter()
            .find(|e| e["pid"] == t.pid())
            .unwrap_or_else(|| panic!("pid {} not listed: {v}", t.pid()));
        assert_eq!(e["generation"], generation, "{e}");
        assert!(
            e["exe"].as_str().is_some_and(|x| x.ends_with("basic")),
            "{e}"
        );
        assert_eq!(e["socket"].as_str(), t.socket_path().to_str(), "{e}");
    }

    let out = hotctl_in(dir.path(), None, &["list"]);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains(&a.pid().to_string()), "{out}");
}

#[test]
fn pid_may_be_omitted_with_one_agent() {
    let t = Target::spawn(CFG.path("basic"));
    let out = hotctl_in(t.socket_dir(), None, &["status", "--json"]);
    assert!(out.success(), "{out}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["pid"], t.pid(), "{v}");
}

#[test]
fn relative_path_is_resolved_against_the_cwd() {
    let mut t = Target::spawn(CFG.path("basic"));
    let dir = scratch();
    copy_atomic(&CFG.path("libfoo_v2.so"), &dir.path().join("libfoo_v2.so"));
    let pid = t.pid().to_string();
    let out = hotctl_in(
        t.socket_dir(),
        Some(dir.path()),
        &["--pid", &pid, "reload", "libfoo_v2.so", "--json"],
    );
    assert!(out.success(), "{out}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let want = dir.path().join("libfoo_v2.so");
    assert_eq!(v["path"].as_str(), want.to_str(), "{v}");
    t.expect("version", 2);
    assert_eq!(status(&t).generations[0].path, want.to_str().unwrap());
}

#[test]
fn dead_or_unknown_target_fails_cleanly() {
    let mut t = Target::spawn(CFG.path("basic"));
    let dir = t.socket_dir().to_path_buf();
    let pid = t.pid();
    t.kill();
    // The socket file may still be there; nobody answers on it.
    let agent = AgentRef {
        dir: dir.clone(),
        pid,
    };
    let msg = expect_fail(&agent, &["status"]);
    assert!(
        msg.contains(&pid.to_string()),
        "the message should name the pid: {msg}"
    );
    expect_fail(
        &agent,
        &["reload", CFG.path("libfoo_v2.so").to_str().unwrap()],
    );
    expect_fail(&agent, &["rollback"]);

    // A pid with no socket at all.
    let nobody = AgentRef {
        dir,
        pid: 999_999_999,
    };
    let msg = expect_fail(&nobody, &["status"]);
    assert!(msg.contains("999999999"), "{msg}");
}

#[test]
fn bad_command_lines_fail() {
    let t = Target::spawn(CFG.path("basic"));
    // Usage errors: non-zero exit (clap's own format is allowed here), the target untouched.
    for args in [
        vec!["reload"],
        vec!["frobnicate"],
        vec!["reload", "/x.so", "--replace"],
    ] {
        let out = hotctl(&t, &args);
        assert!(
            out.status.code().is_some_and(|c| c != 0),
            "hotctl {args:?} should fail: {out}"
        );
    }
    assert_eq!(status(&t).generation, 0);
}

/// A forked child that `_exit`s leaves its socket behind (a forking server leaves hundreds a
/// second); `hotctl list` removes it (the invoking user's socket, no such process, nothing
/// listening), quietly, and lists the parent alone.
#[test]
fn list_removes_sockets_of_exited_children() {
    let mut t = Target::spawn(CFG.path("forker"));
    let line = t.cmd("fork");
    let child: u32 = line
        .strip_prefix("child ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer to fork: {line:?}"));
    let proc_dir = std::path::PathBuf::from(format!("/proc/{child}"));
    let alive = || match proc_dir.exists() {
        true => Ok(()),
        false => Err(format!("the forked child {child} is gone")),
    };
    wait_for_agent(t.socket_dir(), child, alive).unwrap();
    // The child leaves through `_exit` and the parent reaps it.
    t.expect("child quit", "bye");
    let stale = t.agent_of(child).socket_path();
    assert!(stale.exists(), "the child's _exit should leave its socket");

    let out = hotctl_in(t.socket_dir(), None, &["list", "--json"]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stderr, "", "{out}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let pids: Vec<&Value> = v.as_array().unwrap().iter().map(|e| &e["pid"]).collect();
    assert_eq!(pids, [&Value::from(t.pid())], "{out}");
    assert!(!stale.exists(), "hotctl list left the stale socket");
    assert!(t.socket_path().exists());
    t.expect("version", 1);
}
