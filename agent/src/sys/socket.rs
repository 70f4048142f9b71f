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
