//! Socket facts the standard library does not expose.

/// (device, inode) of what descriptor `fd` refers to now, or None if it is closed.
pub fn fd_identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: stat is plain data; fstat writes it fully on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable buffer of the kernel's struct stat on this architecture.
    let r = unsafe {
        super::raw::syscall(
            libc::SYS_fstat,
            &[fd as usize, &mut st as *mut libc::stat as usize],
        )
    };
    r.ok().map(|_| (st.st_dev, st.st_ino))
}

/// A listening Unix stream socket bound at `path` (mode 0600), non-blocking and close-on-exec,
/// made with raw system calls: a forked child of a patched program binds its own.
pub fn listen_unix(path: &std::path::Path) -> std::io::Result<i32> {
    use super::raw;
    use std::os::unix::ffi::OsStrExt;
    let err = std::io::Error::from_raw_os_error;
    // SAFETY: an all-zero sockaddr_un is valid; the path is copied in below, bounded.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(std::io::Error::other(format!(
            "socket path {} is too long for a Unix socket",
            path.display()
        )));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: no memory arguments.
    let fd = unsafe {
        raw::syscall(
            libc::SYS_socket,
            &[
                libc::AF_UNIX as usize,
                (libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) as usize,
                0,
            ],
        )
    }
    .map_err(err)? as i32;
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: addr is a valid sockaddr_un of at least `len` bytes; fd is ours.
    let bound = unsafe {
        raw::syscall(
            libc::SYS_bind,
            &[fd as usize, &addr as *const libc::sockaddr_un as usize, len],
        )
    };
    // Group and others have no business with it; the folder is private too.
    let c_path = std::ffi::CString::new(bytes).map_err(std::io::Error::other)?;
    let ready = bound.and_then(|_| {
        // SAFETY: c_path is a valid C string.
        unsafe {
            raw::syscall(
                libc::SYS_fchmodat,
                &[libc::AT_FDCWD as usize, c_path.as_ptr() as usize, 0o600, 0],
            )
        }?;
        // SAFETY: no memory arguments.
        unsafe { raw::syscall(libc::SYS_listen, &[fd as usize, 128]) }
    });
    match ready {
        Ok(_) => Ok(fd),
        Err(e) => {
            raw::close(fd);
            Err(err(e))
        }
    }
}
