//! Socket facts the standard library does not expose.

/// (device, inode) of what descriptor `fd` refers to now, or None if it is closed.
pub fn fd_identity(fd: i32) -> Option<(u64, u64)> {
    super::fd::fstat(fd).ok().map(|st| (st.dev, st.ino))
}
