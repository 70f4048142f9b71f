//! The patch file, opened by hotctl and passed to the agent with the request (`SCM_RIGHTS`).
//!
//! A target that dropped its privileges (nginx workers as `nobody`, a daemon with `User=`) may
//! not be able to open a patch the operator can read. hotctl opens it, as the operator, once,
//! without following a link in its last part and without blocking, and hands the agent the
//! descriptor itself: what the agent stages is exactly what hotctl opened.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Opens `path` for passing: a regular file opened `O_RDONLY | O_NOFOLLOW`. None when it cannot
/// be opened or is not a regular file: the path alone is sent then, and the agent names the
/// problem as it sees it (a missing file, a FIFO, a folder ...).
pub fn open_patch(path: &Path) -> Option<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let kind = file.metadata().ok()?.file_type();
    (kind.is_file() && !kind.is_fifo()).then_some(file)
}

/// Sends `bytes` on `stream`, the descriptor `fd` riding with the first of them.
pub fn send_with_fd(stream: &UnixStream, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    let space = cmsg_space();
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below stays alive across sendmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer is CMSG_SPACE(sizeof(int)) bytes, room for one header and one
    // descriptor, which is exactly what is written through CMSG_FIRSTHDR and CMSG_DATA.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), raw);
        libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    // The descriptor went with the first bytes; the rest of a long line follows plainly.
    let mut s = stream;
    s.write_all(&bytes[sent as usize..])
}

fn cmsg_space() -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libx.so");
        std::fs::write(&lib, b"x").unwrap();
        assert!(open_patch(&lib).is_some());
        assert!(open_patch(dir.path()).is_none());
        assert!(open_patch(Path::new("/dev/null")).is_none());
        let link = dir.path().join("l.so");
        std::os::unix::fs::symlink(&lib, &link).unwrap();
        assert!(open_patch(&link).is_none());
        assert!(open_patch(&dir.path().join("missing.so")).is_none());
    }

    #[test]
    fn the_descriptor_arrives_with_the_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libx.so");
        std::fs::write(&lib, b"payload").unwrap();
        let f = open_patch(&lib).unwrap();
        use std::os::fd::AsFd;
        send_with_fd(&a, b"line\n", f.as_fd()).unwrap();
        drop(a);
        let mut got = Vec::new();
        (&b).read_to_end(&mut got).unwrap();
        // A plain read drops the descriptor; the bytes come through whole.
        assert_eq!(got, b"line\n");
    }
}
