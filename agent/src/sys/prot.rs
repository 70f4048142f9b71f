//! Page protection changes, and the `/proc/self/mem` path that writes without changing them.

use std::io;

/// The system page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// Sets the protection of the page-aligned range `[start, start+len)`.
pub fn mprotect(start: u64, len: u64, prot: i32) -> io::Result<()> {
    // SAFETY: changing protection of mapped pages of loaded modules; the caller restores the
    // original protection and never removes read access from a page the target uses.
    let rc = unsafe { libc::mprotect(start as *mut libc::c_void, len as usize, prot) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes `bytes` at `addr` through `/proc/self/mem`, which the kernel allows on read-only
/// private mappings (it breaks copy-on-write for us) without touching their protection.
pub fn write_through_proc_mem(file: &std::fs::File, addr: u64, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let n = file.write_at(bytes, addr)?;
    if n == bytes.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short write to /proc/self/mem",
        ))
    }
}
