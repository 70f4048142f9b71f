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
/// Callers outside `sys` hold a [`super::code_window::CodeWindow`], which makes the promise.
///
/// # Safety
/// `[addr, addr + bytes.len())` lies in a loaded module that stays mapped, `prot` is what its
/// program headers give those pages, and no thread executes the bytes being replaced.
pub(super) unsafe fn poke_code_mprotect(addr: u64, bytes: &[u8], prot: i32) -> Result<(), i32> {
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

/// A data page of a loaded module opened for writing; the protection the loader gave it is put
/// back on drop.
#[derive(Debug)]
pub struct OpenedPage {
    start: u64,
    len: u64,
    restore: i32,
}

impl OpenedPage {
    /// Adds write access to the page (of `page_size` bytes) holding `addr`, a byte of a module
    /// of `layouts` that is neither writable nor executable (read-only data: code pages go
    /// through `/proc/self/mem`, where adding write access may be forbidden). None when it is
    /// not such a byte or `mprotect` refused.
    pub fn open(layouts: &[crate::image::Layout], addr: u64, page_size: u64) -> Option<OpenedPage> {
        super::code_window::CodeWindow::within(layouts, addr, 1)?;
        let restore = layouts.iter().find_map(|l| l.protection(addr))?;
        if restore.exec {
            return None;
        }
        let page = addr & !(page_size - 1);
        let rw = crate::image::Prot {
            read: true,
            write: true,
            ..restore
        };
        // SAFETY: the page of a byte of a loaded module (the window proves it), only gaining
        // write access; drop puts back the protection the loader gave it.
        unsafe { mprotect(page, page_size, rw.to_mprotect()) }.ok()?;
        Some(OpenedPage {
            start: page,
            len: page_size,
            restore: restore.to_mprotect(),
        })
    }

    pub fn start(&self) -> u64 {
        self.start
    }
}

impl Drop for OpenedPage {
    fn drop(&mut self) {
        // Failure would leave the page writable, which is safe for the target: only ignored.
        // SAFETY: the page `open` opened, given back the protection the loader set.
        let _ = unsafe { mprotect(self.start, self.len, self.restore) };
    }
}
