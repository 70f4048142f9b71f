//! Socket facts the standard library does not expose.

use std::os::fd::AsRawFd;

/// The uid of the process at the other end of a connected Unix socket (`SO_PEERCRED`).
pub fn peer_uid(stream: &impl AsRawFd) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if rc == 0 {
        Ok(cred.uid)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Closes a raw descriptor inherited across fork that this process must not use.
pub fn close_fd(fd: i32) {
    // SAFETY: fd is a descriptor this library opened (the parent's listener), unused in the child.
    unsafe { libc::close(fd) };
}

/// (device, inode) of what descriptor `fd` refers to now, or None if it is closed.
pub fn fd_identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: stat is plain data; fstat writes it fully on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } == 0 {
        Some((st.st_dev, st.st_ino))
    } else {
        None
    }
}
