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

/// This process's memory as a file: writes go through the kernel, which allows them on read-only
/// private mappings (it breaks copy-on-write for us) without touching their protection. Opened
/// afresh by each user: a descriptor kept across `fork` would write into the parent.
pub fn open_proc_mem() -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")
}

/// Writes `bytes` at `addr` through `/proc/self/mem` (see `open_proc_mem`).
pub fn write_through_proc_mem(file: &std::fs::File, addr: u64, bytes: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    poke_proc_mem(file.as_raw_fd(), addr, bytes).map_err(io::Error::from_raw_os_error)
}

/// `pwrite` of `bytes` at `addr` of `/proc/self/mem` (open as `fd`), reporting the raw errno:
/// allocates nothing, so it may run while other threads are parked.
pub fn poke_proc_mem(fd: std::os::fd::RawFd, addr: u64, bytes: &[u8]) -> Result<(), i32> {
    // SAFETY: `bytes` is a valid buffer for its length; the kernel checks `addr`.
    let n = unsafe { libc::pwrite(fd, bytes.as_ptr().cast(), bytes.len(), addr as libc::off_t) };
    match n {
        n if n == bytes.len() as isize => Ok(()),
        n if n >= 0 => Err(libc::EIO),
        _ => Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)),
    }
}

/// Writes `bytes` into code at `addr` by making its pages writable (keeping them executable:
/// other threads may run code on them) and putting `prot` back. Allocates nothing.
pub fn poke_code_mprotect(addr: u64, bytes: &[u8], prot: i32) -> Result<(), i32> {
    let page = page_size();
    let start = addr & !(page - 1);
    let end = (addr + bytes.len() as u64 + page - 1) & !(page - 1);
    let len = end - start;
    let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
    if let Err(e) = mprotect(start, len, rwx) {
        return Err(e.raw_os_error().unwrap_or(libc::EACCES));
    }
    for (i, b) in bytes.iter().enumerate() {
        // SAFETY: the page was just made writable and belongs to a loaded module that the
        // caller keeps mapped (it holds the loader's list lock).
        unsafe { std::ptr::write_volatile((addr + i as u64) as *mut u8, *b) };
    }
    mprotect(start, len, prot).map_err(|e| e.raw_os_error().unwrap_or(libc::EACCES))
}

const MEMBARRIER_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 6;
const MEMBARRIER_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 5;
/// The process that registered (a forked child must register again), and whether it could.
static SYNC_CORE_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static SYNC_CORE_OK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Registers this process for `sync_cores`, once. Slow (the kernel waits for an RCU grace
/// period: the first entry write pays ~10 ms for it), so it is done before threads are stopped,
/// never while they are — and not at start-up either, where a thread stuck in it delays the exit
/// of every short-lived program run with the agent by as long.
pub fn sync_cores_prepare() {
    use std::sync::atomic::Ordering;
    let pid = std::process::id();
    if SYNC_CORE_PID.load(Ordering::Acquire) == pid {
        return;
    }
    // SAFETY: membarrier takes plain integer arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
            0,
            0,
        )
    };
    SYNC_CORE_OK.store(rc == 0, Ordering::Release);
    SYNC_CORE_PID.store(pid, Ordering::Release);
}

/// Makes every CPU running a thread of this process execute a serialising instruction before it
/// returns to user space, so no core keeps executing code we just rewrote from a stale pipeline.
/// Without registration (or kernel support) it is left to the serialisation of the signal return.
pub fn sync_cores() {
    use std::sync::atomic::Ordering;
    if SYNC_CORE_OK.load(Ordering::Acquire)
        && SYNC_CORE_PID.load(Ordering::Acquire) == std::process::id()
    {
        // SAFETY: membarrier takes plain integer arguments.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_PRIVATE_EXPEDITED_SYNC_CORE,
                0,
                0,
            )
        };
    }
}
