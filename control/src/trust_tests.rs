use super::*;
use crate::client::{ExchangeError, Target, QUICK_TIMEOUT};
use crate::discover;
use crate::testing::{fake_agent, foreign_listener, status_agent};
use hotagent_protocol::Request;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

const NO_SUCH_PID: u32 = 4_000_000_000;

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A live process of ours that is not listening anywhere: its pid names an impostor's socket.
fn bystander() -> (tempfile::TempDir, u32) {
    let elsewhere = tempfile::tempdir().unwrap();
    let (listener, target) = foreign_listener(elsewhere.path());
    drop(listener);
    (elsewhere, target.pid)
}

/// A listener in this process at `<dir>/<pid>.sock`: it answers nothing and reports what its
/// first client sent.
fn impostor(dir: &Path, pid: u32) -> Receiver<Vec<u8>> {
    let listener = UnixListener::bind(socket_path(dir, pid)).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        let _ = tx.send(got);
    });
    rx
}

/// A fake agent that reports each request it receives.
fn recording_agent(dir: &Path) -> (Target, Receiver<Request>) {
    let (tx, rx) = mpsc::channel();
    let target = fake_agent(dir, move |request| {
        tx.send(request).unwrap();
        None
    });
    (target, rx)
}

fn refusal(target: &Target) -> (Distrust, String) {
    match target.exchange(&Request::status(), QUICK_TIMEOUT) {
        Err(err @ ExchangeError::Untrusted { .. }) => {
            let text = err.to_string();
            let ExchangeError::Untrusted { why, .. } = err else {
                unreachable!()
            };
            (why, text)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn uids_parse_and_admit() {
    let status = "Name:\tx\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
    let uids = Uids::parse(status).unwrap();
    assert_eq!(
        uids,
        Uids {
            real: 1000,
            effective: 0,
            saved: 0,
            fs: 0
        }
    );
    assert_eq!(
        uids.to_string(),
        "uids 1000/0/0/0 (real/effective/saved/fs)"
    );
    let plain = Uids::parse("Uid:\t7\t7\t7\t7\n").unwrap();
    assert_eq!(plain.to_string(), "uid 7");
    assert!(plain.admit(7) && plain.admit(0) && !plain.admit(8));
    assert_eq!(Uids::parse("Uid:\t1\t2\n"), None);
    assert_eq!(Uids::parse("Gid:\t1\t2\t3\t4\n"), None);
    let me = Uids::of(std::process::id()).unwrap();
    assert_eq!(me.effective, my_uid());
    assert_eq!(Uids::of(NO_SUCH_PID), None);
}

#[test]
fn peer_rules() {
    let path = Path::new("/run/x/10.sock");
    let user = Uids::parse("Uid:\t1000\t1000\t1000\t1000\n");
    assert!(check_peer(path, 10, user, (10, 1000)).is_ok());
    // An agent that started as root and dropped privileges keeps root's listener.
    assert!(check_peer(path, 10, user, (10, 0)).is_ok());
    let text = |r: Result<(), Distrust>| r.unwrap_err().to_string();
    assert_eq!(
        text(check_peer(path, 10, user, (10, 1001))),
        "refusing /run/x/10.sock: its listener is pid 10 with uid 1001, expected pid 10 with uid \
         1000 or root"
    );
    assert_eq!(
        text(check_peer(path, 10, user, (11, 1000))),
        "refusing /run/x/10.sock: its listener is pid 11 with uid 1000, expected pid 10 with uid \
         1000 or root"
    );
    // The listener's process is gone (pid 0), or the target is.
    assert!(check_peer(path, 10, user, (0, 1000)).is_err());
    assert_eq!(
        text(check_peer(path, 10, None, (10, 0))),
        "refusing /run/x/10.sock: its listener is pid 10 with uid 0, expected pid 10, which is \
         not running"
    );
}

#[test]
fn a_listener_that_is_not_the_named_process_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_elsewhere, pid) = bystander();
    let received = impostor(dir.path(), pid);
    let target = Target {
        pid,
        socket: socket_path(dir.path(), pid),
    };
    let (why, text) = refusal(&target);
    assert!(matches!(why, Distrust::Peer { .. }), "{why:?}");
    let me = std::process::id();
    let expected = format!(
        "refusing {}: its listener is pid {me} with uid {}, expected pid {pid} with uid {} or \
         root; nothing was sent to process {pid}",
        target.socket.display(),
        my_uid(),
        my_uid()
    );
    assert_eq!(text, expected);
    let got = received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(got.is_empty(), "the impostor received {got:?}");
}

#[test]
fn a_symlinked_socket_is_refused() {
    let real = tempfile::tempdir().unwrap();
    let (agent, requests) = recording_agent(real.path());
    let dir = tempfile::tempdir().unwrap();
    let link = socket_path(dir.path(), agent.pid);
    std::os::unix::fs::symlink(&agent.socket, &link).unwrap();
    let (why, text) = refusal(&Target {
        pid: agent.pid,
        socket: link.clone(),
    });
    assert!(matches!(why, Distrust::SocketSymlink { .. }), "{why:?}");
    assert!(
        text.starts_with(&format!("refusing {}: it is a symlink", link.display())),
        "{text}"
    );
    assert!(requests.try_recv().is_err());
}

#[test]
fn a_symlinked_folder_is_refused() {
    let real = tempfile::tempdir().unwrap();
    let (agent, requests) = recording_agent(real.path());
    let parent = tempfile::tempdir().unwrap();
    let link = parent.path().join("sockets");
    std::os::unix::fs::symlink(real.path(), &link).unwrap();
    for dir in [link.clone(), link.join("")] {
        let (why, text) = refusal(&Target {
            pid: agent.pid,
            socket: socket_path(&dir, agent.pid),
        });
        assert!(matches!(why, Distrust::FolderSymlink { .. }), "{why:?}");
        assert!(
            text.starts_with(&format!(
                "refusing socket folder {}: it is a symlink",
                link.display()
            )),
            "{text}"
        );
        let err = format!("{:#}", discover::scan(&dir).unwrap_err());
        assert!(err.contains("is a symlink"), "{err}");
    }
    assert!(requests.try_recv().is_err());
}

#[test]
fn a_folder_others_may_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, requests) = recording_agent(dir.path());
    for mode in [0o777, 0o1777, 0o720, 0o702] {
        chmod(dir.path(), mode);
        let (why, text) = refusal(&agent);
        assert!(matches!(why, Distrust::FolderWritable { .. }), "{why:?}");
        assert!(text.contains(&format!("(mode {mode:04o})")), "{text}");
        assert!(discover::scan(dir.path()).is_err());
    }
    // Read and search bits are no danger.
    chmod(dir.path(), 0o755);
    let _ = agent.exchange(&Request::status(), QUICK_TIMEOUT);
    assert_eq!(requests.try_recv().unwrap(), Request::status());
    assert!(requests.try_recv().is_err());
}

#[test]
fn other_users_folders_and_sockets_are_refused() {
    if my_uid() != 0 {
        eprintln!("skipped: needs root to give files away");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (agent, requests) = recording_agent(dir.path());
    std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
    let (why, text) = refusal(&agent);
    assert!(matches!(why, Distrust::FolderOwner { .. }), "{why:?}");
    assert!(
        text.contains("belongs to uid 65534, not to you (uid 0) or root"),
        "{text}"
    );
    std::os::unix::fs::chown(dir.path(), Some(0), None).unwrap();

    std::os::unix::fs::lchown(&agent.socket, Some(65534), None).unwrap();
    let (why, text) = refusal(&agent);
    assert!(matches!(why, Distrust::SocketOwner { .. }), "{why:?}");
    assert!(
        text.contains(&format!(
            "belongs to uid 65534, not to process {} (uid 0) or root",
            agent.pid
        )),
        "{text}"
    );
    assert!(requests.try_recv().is_err());
}

#[test]
fn list_mentions_impostors_and_talks_only_to_agents() {
    let dir = tempfile::tempdir().unwrap();
    let agent = status_agent(dir.path(), "/usr/bin/a");
    let (_elsewhere, pid) = bystander();
    let received = impostor(dir.path(), pid);
    // A listener on the name of a process that is gone: not stale, not removed, not trusted.
    let _held = UnixListener::bind(socket_path(dir.path(), NO_SUCH_PID)).unwrap();

    let scan = discover::scan(dir.path()).unwrap();
    let pids: Vec<u32> = scan.agents.iter().map(|a| a.target.pid).collect();
    assert_eq!(pids, [agent.pid]);
    let mut skipped: Vec<(u32, &str)> = scan
        .unanswered
        .iter()
        .map(|(t, why)| (t.pid, why.as_str()))
        .collect();
    skipped.sort();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(skipped[0].0, pid);
    assert!(skipped[0].1.contains("its listener is pid"), "{skipped:?}");
    assert_eq!(skipped[1].0, NO_SUCH_PID);
    assert!(skipped[1].1.contains("not running"), "{skipped:?}");
    assert_eq!(scan.removed, 0);
    assert!(socket_path(dir.path(), NO_SUCH_PID).exists());
    let got = received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(got.is_empty(), "the impostor received {got:?}");
}

#[test]
fn stale_sockets_of_ours_are_removed_others_kept() {
    let dir = tempfile::tempdir().unwrap();
    let stale = socket_path(dir.path(), NO_SUCH_PID);
    drop(UnixListener::bind(&stale).unwrap());
    let folder = Folder::open(dir.path()).unwrap();
    if my_uid() == 0 {
        std::os::unix::fs::lchown(&stale, Some(65534), None).unwrap();
        assert!(!folder.remove_if_stale(NO_SUCH_PID));
        std::os::unix::fs::lchown(&stale, Some(0), None).unwrap();
    }
    // Named after a live process: its own business.
    let (_elsewhere, pid) = bystander();
    let alive = socket_path(dir.path(), pid);
    drop(UnixListener::bind(&alive).unwrap());
    assert!(!folder.remove_if_stale(pid));
    assert!(alive.exists());
    let scan = discover::scan(dir.path()).unwrap();
    assert_eq!(scan.removed, 1);
    assert!(!stale.exists());
    assert!(alive.exists());
}
