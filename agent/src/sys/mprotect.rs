//! Page protection changes on the write path of reload and rollback. They enter the kernel through
//! `sys::raw`, never through libc, whose `mprotect` a patch may have replaced.

use super::page::page_size;
use super::raw;
use std::io;

/// Sets the protection of the page-aligned range `[start, start+len)`.
///
/// # Safety
/// The range is the caller's own mapping, or pages of a loaded module that stays mapped meanwhile
/// (the loader's list lock is held) whose original protection the caller puts back; no access
/// the target's code relies on is ever taken away from a page it uses.
pub unsafe fn mprotect(start: u64, len: u64, prot: i32) -> io::Result<()> {
    // SAFETY: the caller's contract above; no memory argument.
    unsafe { raw::mprotect(start, len, prot) }.map_err(io::Error::from_raw_os_error)
}

/// Writes `bytes` into code at `addr` by making its pages writable (keeping them executable:
/// other threads may run code on them) and putting `prot` back. Allocates nothing.
///
/// Still a safe fn that relies on its callers (entry switching and private-data redirects,
/// outside `sys`): `[addr, addr + bytes.len())` must lie in a loaded module kept mapped (loader
/// lock held), `prot` be what its program headers give those pages, and no thread execute the
/// bytes being replaced. Making it `unsafe` waits for a sys-side type those callers can hold.
pub fn poke_code_mprotect(addr: u64, bytes: &[u8], prot: i32) -> Result<(), i32> {
    let page = page_size();
    let start = addr & !(page - 1);
    let end = (addr + bytes.len() as u64 + page - 1) & !(page - 1);
    let len = end - start;
    let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
    // SAFETY: adds write access to code pages of a loaded module (the caller's contract) for the
    // instant of the write; read and execute stay, so threads running there are unaffected.
    unsafe { raw::mprotect(start, len, rwx) }?;
    for (i, b) in bytes.iter().enumerate() {
        // SAFETY: the page was just made writable and belongs to a loaded module that the
        // caller keeps mapped, with no thread running the bytes (the caller's contract).
        unsafe { std::ptr::write_volatile((addr + i as u64) as *mut u8, *b) };
    }
    // SAFETY: puts back the protection the module's program headers give the page (the
    // caller's contract).
    unsafe { raw::mprotect(start, len, prot) }
}
