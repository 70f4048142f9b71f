//! Connecting without a helper thread: a non-blocking `connect` to a Unix socket either succeeds
//! at once or fails with EAGAIN when the listener's backlog is full (it never waits). Only then
//! is the blocking connect on a helper thread needed, with its deadline; the common case costs
//! no thread creation (tens of µs of hotctl's wall time).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Connects to `path` without blocking: Ok(None) when the backlog is full (try the slow way).
pub fn try_connect(path: &Path) -> io::Result<Option<UnixStream>> {
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path too long or not a C string: {}", path.display()),
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, kind, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned here alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: addr is a valid, NUL-terminated sockaddr_un of `len` bytes, alive for the call.
    let r = unsafe { libc::connect(raw, (&addr as *const libc::sockaddr_un).cast(), len) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINPROGRESS) => Ok(None),
            _ => Err(e),
        };
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(Some(stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn connects_and_gives_a_blocking_stream() {
        let dir = tempfile::tempdir().expect("scratch folder");
        let path = dir.path().join("a.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let mut stream = try_connect(&path)
            .expect("connect")
            .expect("not a full backlog");
        let (mut peer, _) = listener.accept().expect("accept");
        peer.write_all(b"x").expect("write");
        // A non-blocking stream would fail with WouldBlock on a read that must wait.
        let mut byte = [0u8; 2];
        assert_eq!(stream.read(&mut byte).expect("read"), 1);
    }

    /// A listener that never accepts (a stopped target): once its backlog is full, the quick
    /// connect says so at once instead of blocking, so the caller's deadline still holds.
    #[test]
    fn a_full_backlog_is_reported_not_waited_for() {
        let dir = tempfile::tempdir().expect("scratch folder");
        let path = dir.path().join("b.sock");
        let _listener = UnixListener::bind(&path).expect("bind");
        let mut held = Vec::new();
        loop {
            match try_connect(&path).expect("connect") {
                Some(s) => held.push(s),
                None => break,
            }
            assert!(held.len() < 100_000, "the backlog never filled");
        }
        assert!(!held.is_empty());
    }

    #[test]
    fn nothing_listening_is_refused() {
        let dir = tempfile::tempdir().expect("scratch folder");
        let path = dir.path().join("c.sock");
        drop(UnixListener::bind(&path).expect("bind"));
        let err = try_connect(&path).expect_err("nobody listens");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        let missing = dir.path().join("missing.sock");
        assert_eq!(
            try_connect(&missing).expect_err("no file").kind(),
            io::ErrorKind::NotFound
        );
    }
}
