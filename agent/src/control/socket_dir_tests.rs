use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;

/// Linux caps pids far below these: no process has them.
const DEAD: [u32; 3] = [4_000_000_001, 4_000_000_002, 4_000_000_003];

fn me() -> u32 {
    crate::sys::process::euid()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn sock(dir: &Path, pid: u32) -> PathBuf {
    hotagent_protocol::socket_path(dir, pid)
}

/// A socket file with nobody listening, as a process that `_exit`ed leaves it.
fn stale(dir: &Path, pid: u32) -> PathBuf {
    let path = sock(dir, pid);
    drop(UnixListener::bind(&path).unwrap());
    path
}

#[test]
fn creates_private_folder_and_refuses_foreign_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b");
    prepare(&dir, me()).unwrap();
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    let err = prepare(&dir, me().wrapping_add(1)).unwrap_err();
    assert!(matches!(err, SocketDirError::Owner { .. }), "{err}");
    assert!(err.to_string().contains("refusing"), "{err}");
    let file = tmp.path().join("f");
    std::fs::write(&file, b"").unwrap();
    let err = prepare(&file, me()).unwrap_err();
    assert!(err.to_string().contains("is not a folder"), "{err}");
}

#[test]
fn refuses_folders_others_may_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    std::fs::create_dir(&dir).unwrap();
    for mode in [0o777, 0o1777, 0o770, 0o702, 0o720] {
        chmod(&dir, mode);
        let err = prepare(&dir, me()).unwrap_err();
        assert!(matches!(err, SocketDirError::Writable { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("(mode {mode:04o})")) && text.contains("refusing"),
            "{text}"
        );
        assert!(listen(&dir, 7, me()).is_err());
        assert!(
            !sock(&dir, 7).exists(),
            "a socket was made in a {mode:o} folder"
        );
    }
    // Read and search for others are fine: the socket itself is 0600.
    for mode in [0o700, 0o755, 0o711] {
        chmod(&dir, mode);
        prepare(&dir, me()).unwrap();
    }
}

#[test]
fn refuses_a_symlinked_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    prepare(&real, me()).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    for path in [link.clone(), link.join("")] {
        let err = prepare(&path, me()).unwrap_err();
        assert!(matches!(err, SocketDirError::Symlink { .. }), "{err}");
        assert!(listen(&path, 7, me()).is_err());
    }
    assert!(!sock(&real, 7).exists());
    // A dangling symlink is not created through either.
    let dangling = tmp.path().join("dangling");
    std::os::unix::fs::symlink(tmp.path().join("nowhere"), &dangling).unwrap();
    assert!(matches!(
        prepare(&dangling, me()),
        Err(SocketDirError::Symlink { .. })
    ));
    assert!(!tmp.path().join("nowhere").exists());
}

#[test]
fn listens_on_a_private_socket_replacing_a_leftover() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sockets");
    prepare(&dir, me()).unwrap();
    let path = stale(&dir, 4242);
    let listener = listen(&dir, 4242, me()).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.uid(), me());
    let _client = UnixStream::connect(&path).unwrap();
    let (_conn, _) = listener.accept().unwrap();
}

#[test]
fn sweep_removes_only_dead_processes_unheard_sockets_of_the_uid() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let gone = [stale(dir, DEAD[0]), stale(dir, DEAD[1])];
    // A listener still holds this one (its pid was reused, or its fd passed on).
    let live_path = sock(dir, DEAD[2]);
    let _live = UnixListener::bind(&live_path).unwrap();
    // Named after a live process: not ours to judge.
    let alive = stale(dir, 1);
    let mine = stale(dir, std::process::id());
    // Not sockets, or not agent names.
    let file = sock(dir, 4_000_000_004);
    std::fs::write(&file, b"").unwrap();
    let link = sock(dir, 4_000_000_005);
    std::os::unix::fs::symlink(&gone[0], &link).unwrap();
    let odd = [
        dir.join("04000000006.sock"),
        dir.join("x.sock"),
        dir.join("4000000007.sock.bak"),
    ];
    for path in &odd {
        drop(UnixListener::bind(path).unwrap());
    }

    assert_eq!(sweep_stale(dir, me()), 2);
    for path in &gone {
        assert!(!path.exists(), "{} was kept", path.display());
    }
    for path in [&live_path, &alive, &mine, &file, &link]
        .into_iter()
        .chain(&odd)
    {
        assert!(
            std::fs::symlink_metadata(path).is_ok(),
            "{} was removed",
            path.display()
        );
    }
    assert_eq!(sweep_stale(dir, me()), 0);
}

#[test]
fn sweep_keeps_other_uids_sockets_and_untrusted_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    prepare(&dir, me()).unwrap();
    let path = stale(&dir, DEAD[0]);
    // Another uid's folder, or one others may write: not swept at all.
    assert_eq!(sweep_stale(&dir, me().wrapping_add(1)), 0);
    chmod(&dir, 0o777);
    assert_eq!(sweep_stale(&dir, me()), 0);
    chmod(&dir, 0o700);
    assert!(path.exists());
    if me() == 0 {
        // A socket of another uid in our folder.
        std::os::unix::fs::lchown(&path, Some(65534), None).unwrap();
        assert_eq!(sweep_stale(&dir, me()), 0);
        assert!(path.exists());
        std::os::unix::fs::lchown(&path, Some(0), None).unwrap();
    }
    assert_eq!(sweep_stale(&dir, me()), 1);
    assert!(!path.exists());
    assert_eq!(sweep_stale(&tmp.path().join("missing"), me()), 0);
}

#[test]
fn pid_names() {
    assert_eq!(pid_of(b"123.sock"), Some(123));
    assert_eq!(pid_of(b"4294967295.sock"), Some(u32::MAX));
    for bad in [
        &b"4294967296.sock"[..],
        b"0.sock",
        b"0123.sock",
        b"+12.sock",
        b".sock",
        b"12.sock.bak",
        b"12",
    ] {
        assert_eq!(pid_of(bad), None, "{}", String::from_utf8_lossy(bad));
    }
}
