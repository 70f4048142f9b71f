//! The agent preloaded into every process of a host (`/etc/ld.so.preload`) must not give a less
//! privileged user a way into a privileged process: a setuid-root program run by another user,
//! or a process whose real and effective ids differ, runs with the agent loaded but off (no
//! socket, nothing listening); a plain process of the same user still gets its agent.
//!
//! `/etc/ld.so.preload` is written only inside a private mount namespace (an overlay over /etc
//! seen by the test's own process alone), never on the host. Needs root.

use hotagent_tests::protocol::{Request, Response};
use hotagent_tests::*;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;

const CFG: Config = Config::DEFAULT;

/// Runs `exe` as `user` (real ids; the effective ones come from the file's setuid bit) inside a
/// mount namespace whose /etc/ld.so.preload names the agent. `exec` all the way, so the
/// target's pid is the spawned process's.
fn spawn_preloaded_as(user: &User, exe: &Path, socket_dir: Option<&Path>, etc: &Path) -> Target {
    let ids = [
        format!("--reuid={}", user.uid),
        format!("--regid={}", user.gid),
        "--clear-groups".to_string(),
    ];
    spawn_preloaded(&ids, exe, socket_dir, etc)
}

/// [`spawn_preloaded_as`] with any ids `setpriv` can set.
fn spawn_preloaded(
    setpriv: &[String],
    exe: &Path,
    socket_dir: Option<&Path>,
    etc: &Path,
) -> Target {
    let script = "mount -t overlay hotagent-etc -o lowerdir=/etc,upperdir=\"$1/upper\",workdir=\"$1/work\" /etc \
                  && printf '%s\\n' \"$2\" > /etc/ld.so.preload && shift 2 && exec \"$@\"";
    for sub in ["upper", "work"] {
        std::fs::create_dir_all(etc.join(sub)).unwrap();
    }
    let mut b = Target::builder("unshare").without_agent();
    for a in [
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        "sh",
    ] {
        b = b.arg(a);
    }
    b = b.arg(etc).arg(agent_so()).arg("setpriv");
    for a in setpriv {
        b = b.arg(a);
    }
    b = b.arg(exe);
    if let Some(dir) = socket_dir {
        b = b.socket_dir(dir);
    }
    b.spawn()
}

/// Descriptors of `pid` that are sockets (the dropper fixture opens none of its own).
fn socket_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

fn agent_is_mapped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains("libhotagent.so"))
}

/// (real uid, effective uid) as the fixture reports them.
fn uids(t: &mut Target) -> (u32, u32) {
    let line = t.cmd("ids");
    let ids: Vec<u32> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    (ids[0], ids[1])
}

/// Asserts that the agent in `t` is loaded (so the check is not vacuous) but opened nothing.
fn assert_agent_off(t: &mut Target, what: &str) {
    // The agent would have listened in its constructor, before main answered this.
    t.expect("version", 1);
    let pid = t.pid();
    assert!(
        agent_is_mapped(pid),
        "{what}: the agent was not even loaded"
    );
    assert_eq!(socket_fds(pid), 0, "{what}: the agent opened sockets");
    assert!(
        std::os::unix::net::UnixStream::connect(t.socket_path()).is_err(),
        "{what}: something listens on {}",
        t.socket_path().display()
    );
}

fn folder_for(user: &User) -> tempfile::TempDir {
    let dir = scratch();
    chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

#[test]
fn setuid_program_run_by_another_user_opens_no_socket() {
    let Some(user) = test_user() else {
        eprintln!("skipped: needs root");
        return;
    };
    // A setuid-root copy the other user may run: folder 0755, file root-owned 04755.
    let bin = scratch();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = bin.path().join("dropper-suid");
    std::fs::copy(CFG.path("dropper"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let etc = scratch();

    // Its socket folder as root's would be (owned by its effective uid, 0700): an agent that
    // started would listen there.
    let mut t = spawn_preloaded_as(&user, &exe, None, etc.path());
    assert_eq!(uids(&mut t), (user.uid, 0), "the setuid bit did not apply");
    assert_agent_off(&mut t, "setuid-root program run by another user");
    t.finish();

    // The same user's plain program, under the same /etc/ld.so.preload, gets its agent.
    let dir = folder_for(&user);
    let mut plain = spawn_preloaded_as(&user, &CFG.path("dropper"), Some(dir.path()), etc.path());
    assert_eq!(uids(&mut plain), (user.uid, user.uid));
    let agent = AgentRef {
        dir: dir.path().to_path_buf(),
        pid: plain.pid(),
    };
    let pid = plain.pid();
    wait_for_agent(dir.path(), pid, || Ok(())).unwrap();
    match raw_request(&agent, &Request::status()) {
        Response::Status(s) => assert_eq!(s.pid, pid),
        other => panic!("status of the plain program's agent: {other:?}"),
    }
    plain.finish();
}

#[test]
fn differing_real_and_effective_ids_keep_the_agent_off() {
    let Some(user) = test_user() else {
        eprintln!("skipped: needs root");
        return;
    };
    // Real uid root, effective uid the test user: the process can take root back, so the test
    // user, who could drive an agent with its uid in a folder of its own, must not get one.
    // (The kernel marks such an exec AT_SECURE, which drops LD_PRELOAD: /etc/ld.so.preload
    // still applies.)
    let dir = folder_for(&user);
    let etc = scratch();
    let ids = [
        format!("--euid={}", user.uid),
        format!("--egid={}", user.gid),
        "--keep-groups".to_string(),
    ];
    let mut t = spawn_preloaded(&ids, &CFG.path("dropper"), Some(dir.path()), etc.path());
    assert_eq!(uids(&mut t), (0, user.uid), "setpriv did not split the ids");
    assert_agent_off(&mut t, "real uid root, effective uid another user");
    t.finish();
}
