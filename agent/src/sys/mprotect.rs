//! Page protection changes on the write path of reload and rollback. They enter the kernel through
//! `sys::raw`, never through libc, whose `mprotect` a patch may have replaced.

use super::page::page_size;
use super::raw;
use std::io;

/// Sets the protection of the page-aligned range `[start, start+len)`.
pub fn mprotect(start: u64, len: u64, prot: i32) -> io::Result<()> {
    // SAFETY: changing protection of mapped pages of loaded modules; the caller restores the
    // original protection and never removes read access from a page the target uses.
    unsafe { raw::mprotect(start, len, prot) }.map_err(io::Error::from_raw_os_error)
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
