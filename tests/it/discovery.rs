//! Finding agents wherever their environment put them (the per-uid registry), one candidate per
//! program behind a wrapper script, and failures in words (and in JSON with `--json`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hotagent_tests::*;

const CFG: Config = Config::DEFAULT;

/// hotctl with no override: `HOTAGENT_SOCKET_DIR` empty counts as unset.
fn plain_hotctl(args: &[&str]) -> CtlOutput {
    hotctl_in(Path::new(""), None, args)
}

fn my_registry() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    hotagent_protocol::registry_dir(unsafe { libc::geteuid() })
}

#[test]
fn a_target_with_its_own_runtime_folder_is_found_by_a_plain_hotctl() {
    let xdg = scratch();
    let own = xdg.path().join("hotagent");
    let mut t = Target::builder(CFG.path("basic"))
        .socket_dir(&own)
        .env("HOTAGENT_SOCKET_DIR", "")
        .env("XDG_RUNTIME_DIR", xdg.path())
        .spawn();
    let pid = t.pid();
    wait_for_agent(&my_registry(), pid, || Ok(())).unwrap();

    let pid_text = pid.to_string();
    let out = plain_hotctl(&["--pid", &pid_text, "status", "--json"]);
    assert!(out.success(), "{out}");
    let listed = plain_hotctl(&["list", "--json"]);
    assert!(listed.success(), "{listed}");
    let agents: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let pids: Vec<u64> = agents
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["pid"].as_u64())
        .collect();
    assert!(pids.contains(&u64::from(pid)), "{listed}");

    let v2 = CFG.path("libfoo_v2.so");
    let out = plain_hotctl(&["--pid", &pid_text, "reload", path_str(&v2)]);
    assert!(out.success(), "{out}");
    t.expect("version", 2);

    // Both sockets go with the process.
    let registered = hotagent_protocol::socket_path(&my_registry(), pid);
    assert!(t.finish().status.success());
    assert!(!registered.exists(), "{} left behind", registered.display());
    assert!(!hotagent_protocol::socket_path(&own, pid).exists());
}

#[test]
fn a_pid_without_agent_names_the_folders_searched_and_the_variable() {
    let mut t = Target::builder(CFG.path("basic")).without_agent().spawn();
    let pid_text = t.pid().to_string();
    let out = plain_hotctl(&["--pid", &pid_text, "status"]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    let registry = my_registry();
    assert!(out.stderr.contains(path_str(&registry)), "{out}");
    assert!(out.stderr.contains("HOTAGENT_SOCKET_DIR"), "{out}");
    assert!(out.stderr.contains("the process runs"), "{out}");
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{out}");
    assert!(out.stdout.is_empty(), "{out}");

    // With --json the same failure is one document on stdout too.
    let out = plain_hotctl(&["--pid", &pid_text, "status", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(message.contains("HOTAGENT_SOCKET_DIR"), "{out}");
    assert!(doc["error"]["code"].is_string(), "{out}");
    t.assert_alive();
}

#[test]
fn an_agent_refusal_is_json_on_stdout_with_the_agents_code() {
    let t = Target::spawn(CFG.path("basic"));
    let out = hotctl(&t, &["reload", "/nonexistent/libfoo.so", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert!(doc["error"]["code"].is_string(), "{out}");
    assert!(!out.stderr.contains("os error"), "{out}");
}

/// `#!/bin/sh` that runs its arguments and waits (no exec): the shell stays, with an agent.
fn wrapper(folder: &Path) -> PathBuf {
    let script = folder.join("wrap.sh");
    std::fs::write(&script, "#!/bin/sh\n\"$@\"\nexit $?\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn a_shell_wrapper_is_not_a_second_candidate() {
    let folder = scratch();
    let mut t = Target::builder(wrapper(folder.path()))
        .arg(CFG.path("basic"))
        .spawn();
    let program = u32::try_from(t.cmd_i("pid")).unwrap();
    assert_ne!(program, t.pid());
    wait_for_agent(t.socket_dir(), program, || Ok(())).unwrap();

    let listed = hotctl_in(t.socket_dir(), None, &["list", "--json"]);
    let agents: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(agents.as_array().unwrap().len(), 2, "{listed}");

    // Without --pid: the program, not the shell.
    let out = hotctl_in(t.socket_dir(), None, &["status", "--json"]);
    assert!(out.success(), "{out}");
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status["pid"], program, "{out}");
    let v2 = CFG.path("libfoo_v2.so");
    let out = hotctl_in(t.socket_dir(), None, &["reload", path_str(&v2)]);
    assert!(out.success(), "{out}");
    t.expect("version", 2);
}

#[test]
fn hotagent_skip_keeps_the_wrappers_agent_off_and_not_the_programs() {
    let folder = scratch();
    let mut t = Target::builder(wrapper(folder.path()))
        .arg(CFG.path("basic"))
        .env("HOTAGENT_SKIP", "1")
        .agent_off()
        .spawn();
    let program = u32::try_from(t.cmd_i("pid")).unwrap();
    wait_for_agent(t.socket_dir(), program, || Ok(())).unwrap();
    let listed = hotctl_in(t.socket_dir(), None, &["list", "--json"]);
    let agents: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let agents = agents.as_array().unwrap();
    assert_eq!(agents.len(), 1, "{listed}");
    assert_eq!(agents[0]["pid"], program, "{listed}");
    let shell = hotagent_protocol::socket_path(t.socket_dir(), t.pid());
    assert!(!shell.exists());
}
