//! Page protection changes, and the `/proc/self/mem` path that writes without changing them.
//!
//! These are the write path of reload and rollback: they enter the kernel through `sys::raw`,
//! never through libc, whose `mprotect`, `pwrite`, `open` or `syscall` a patch may have replaced.

use super::raw;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

static PAGE_SIZE: AtomicU64 = AtomicU64::new(0);

/// The system page size: asked once (the agent asks at start, before any patch), then cached.
pub fn page_size() -> u64 {
    match PAGE_SIZE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions.
            let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let n = if n > 0 { n as u64 } else { 4096 };
            PAGE_SIZE.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// Sets the protection of the page-aligned range `[start, start+len)`.
pub fn mprotect(start: u64, len: u64, prot: i32) -> io::Result<()> {
    // SAFETY: changing protection of mapped pages of loaded modules; the caller restores the
    // original protection and never removes read access from a page the target uses.
    unsafe { raw::mprotect(start, len, prot) }.map_err(io::Error::from_raw_os_error)
}

/// This process's memory as a file: writes go through the kernel, which allows them on read-only
/// private mappings (it breaks copy-on-write for us) without touching their protection. Opened
/// afresh by each user: a descriptor kept across `fork` would write into the parent.
#[derive(Debug)]
pub struct ProcMem(i32);

impl ProcMem {
    pub fn as_raw_fd(&self) -> i32 {
        self.0
    }
}

impl Drop for ProcMem {
    fn drop(&mut self) {
        raw::close(self.0);
    }
}

/// Opens `/proc/self/mem` for writing (see `ProcMem`).
pub fn open_proc_mem() -> io::Result<ProcMem> {
    raw::open(c"/proc/self/mem", libc::O_RDWR)
        .map(ProcMem)
        .map_err(io::Error::from_raw_os_error)
}

/// Writes `bytes` at `addr` through `/proc/self/mem` (see `open_proc_mem`).
pub fn write_through_proc_mem(file: &ProcMem, addr: u64, bytes: &[u8]) -> io::Result<()> {
    poke_proc_mem(file.as_raw_fd(), addr, bytes).map_err(io::Error::from_raw_os_error)
}

/// `pwrite` of `bytes` at `addr` of `/proc/self/mem` (open as `fd`), reporting the raw errno:
/// allocates nothing, so it may run while other threads are parked.
pub fn poke_proc_mem(fd: i32, addr: u64, bytes: &[u8]) -> Result<(), i32> {
    match raw::pwrite(fd, bytes, addr) {
        Ok(n) if n == bytes.len() => Ok(()),
        Ok(_) => Err(libc::EIO),
        Err(e) => Err(e),
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
    // SAFETY: adds write access to code pages of a loaded module for the instant of the write;
    // read and execute stay, so threads running there are unaffected.
    unsafe { raw::mprotect(start, len, rwx) }?;
    for (i, b) in bytes.iter().enumerate() {
        // SAFETY: the page was just made writable and belongs to a loaded module that the
        // caller keeps mapped (it holds the loader's list lock).
        unsafe { std::ptr::write_volatile((addr + i as u64) as *mut u8, *b) };
    }
    // SAFETY: puts back the protection the module's program headers give the page.
    unsafe { raw::mprotect(start, len, prot) }
}

/// Writes `bytes` into loaded code or read-only data at `addr`: through `/proc/self/mem` (`fd`,
/// or -1 when it could not be opened), else by making the page writable for the instant and
/// putting `prot` back. Ok(true) when `/proc/self/mem` took it; the error names why both failed.
pub fn poke_code(fd: i32, addr: u64, bytes: &[u8], prot: i32) -> Result<bool, String> {
    let through_proc = if fd >= 0 {
        match poke_proc_mem(fd, addr, bytes) {
            Ok(()) => return Ok(true),
            Err(e) => io::Error::from_raw_os_error(e).to_string(),
        }
    } else {
        "cannot be opened".to_string()
    };
    poke_code_mprotect(addr, bytes, prot)
        .map(|()| false)
        .map_err(|e| {
            format!(
                "/proc/self/mem: {through_proc}; mprotect: {}",
                io::Error::from_raw_os_error(e)
            )
        })
}
