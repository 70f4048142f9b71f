//! Raw reads and atomic stores into the live image.

use super::phdr::LoaderLock;
use crate::image::{Layout, Memory, Segment};

/// The readable memory of the loaded modules: reads outside a module's readable `PT_LOAD`
/// segments are refused instead of faulting. Borrows the loader lock's token, so it cannot
/// outlive the lock that keeps those modules mapped.
pub struct LiveMemory<'l> {
    ranges: Vec<Segment>,
    _lock: &'l LoaderLock,
}

impl<'l> LiveMemory<'l> {
    /// `ranges` must be readable segments of modules in the list read under `lock` (see
    /// `sys::phdr::with_modules_locked`).
    pub fn new(lock: &'l LoaderLock, mut ranges: Vec<Segment>) -> Self {
        ranges.sort_by_key(|r| r.start);
        LiveMemory {
            ranges,
            _lock: lock,
        }
    }
}

impl Memory for LiveMemory<'_> {
    fn tail(&self, addr: u64) -> Option<&[u8]> {
        let i = self.ranges.partition_point(|r| r.start <= addr);
        let r = self.ranges.get(i.checked_sub(1)?)?;
        if addr >= r.end {
            return None;
        }
        let len = usize::try_from(r.end - addr).ok()?;
        // SAFETY: [addr, r.end) lies inside a readable PT_LOAD segment of a module that stays
        // mapped while `self` lives: it borrows the token of the loader lock it was read under. The bytes may be written by
        // other threads only where they are GOT slots, which are read through `slot` instead.
        Some(unsafe { std::slice::from_raw_parts(addr as *const u8, len) })
    }

    fn slot(&self, addr: u64) -> Option<u64> {
        if !addr.is_multiple_of(8) || self.tail(addr)?.len() < 8 {
            return None;
        }
        // SAFETY: aligned, and the 8 bytes lie in a readable segment of a mapped module.
        Some(unsafe { load_u64(addr) })
    }
}

/// Atomically reads the 8-byte slot at `addr`.
///
/// # Safety
/// `addr` must be 8-byte aligned and readable.
pub unsafe fn load_u64(addr: u64) -> u64 {
    // SAFETY: the caller guarantees an aligned, readable address.
    unsafe { std::sync::atomic::AtomicU64::from_ptr(addr as *mut u64) }
        .load(std::sync::atomic::Ordering::Acquire)
}

/// Atomically replaces `expected` by `new` at `addr`; on mismatch returns the value found.
///
/// # Safety
/// `addr` must be 8-byte aligned and writable right now.
pub unsafe fn cas_u64(addr: u64, expected: u64, new: u64) -> Result<(), u64> {
    use std::sync::atomic::{AtomicU64, Ordering};
    // SAFETY: the caller guarantees an aligned, writable address.
    let slot = unsafe { AtomicU64::from_ptr(addr as *mut u64) };
    slot.compare_exchange(expected, new, Ordering::AcqRel, Ordering::Acquire)
        .map(|_| ())
}

/// Atomically replaces the byte `expected` by `new` at `addr`; on mismatch returns the byte found.
///
/// # Safety
/// `addr` must be writable right now.
pub unsafe fn cas_u8(addr: u64, expected: u8, new: u8) -> Result<(), u8> {
    use std::sync::atomic::{AtomicU8, Ordering};
    // SAFETY: the caller guarantees a writable address.
    let slot = unsafe { AtomicU8::from_ptr(addr as *mut u8) };
    slot.compare_exchange(expected, new, Ordering::AcqRel, Ordering::Acquire)
        .map(|_| ())
}

/// Reads one byte.
///
/// # Safety
/// `addr` must be readable.
pub unsafe fn load_u8(addr: u64) -> u8 {
    use std::sync::atomic::{AtomicU8, Ordering};
    // SAFETY: the caller guarantees a readable address.
    unsafe { AtomicU8::from_ptr(addr as *mut u8) }.load(Ordering::Acquire)
}

/// The address of a byte inside this library's own image, to recognise our module.
pub fn own_address() -> u64 {
    static MARKER: u8 = 0;
    &MARKER as *const u8 as u64
}

/// A page of our own, mapped read-write near an address: code to be filled and then made
/// executable, or data that stays read-write. It is never unmapped: code in it may be running at
/// any time, and running code reads its data. Its fields are private, so the range written by
/// `fill` and `store_u64` is always this mapping, and `writable` says truly whether it may be.
#[derive(Debug)]
pub struct OwnPage {
    addr: u64,
    len: u64,
    writable: bool,
}

impl OwnPage {
    /// Maps `len` bytes exactly at `addr` (page-aligned), failing rather than replacing anything:
    /// read-write, or read+execute when `exec` (to be filled through `/proc/self/mem`, for a
    /// process that may not turn writable memory executable).
    pub fn map_at(addr: u64, len: u64, exec: bool) -> std::io::Result<OwnPage> {
        let prot = if exec {
            libc::PROT_READ | libc::PROT_EXEC
        } else {
            libc::PROT_READ | libc::PROT_WRITE
        };
        super::raw::map_anonymous_at(addr, len, prot).map_err(std::io::Error::from_raw_os_error)?;
        Ok(OwnPage {
            addr,
            len,
            writable: !exec,
        })
    }

    /// Where the page starts.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Copies `bytes` at offset `off`; ignored when out of range or when the page was mapped
    /// read+execute (it is filled through `/proc/self/mem` then).
    pub fn fill(&mut self, off: u64, bytes: &[u8]) {
        if !self.writable || off.saturating_add(bytes.len() as u64) > self.len {
            return;
        }
        // SAFETY: the range lies inside our own mapping, read-write (`writable`, and `seal`,
        // which takes that away, consumes the page).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), (self.addr + off) as *mut u8, bytes.len())
        };
    }

    /// Atomically stores `value` in the aligned 8-byte slot at offset `off` (ignored when out of
    /// range, misaligned or not writable). Allocates nothing: fine while threads are parked.
    pub fn store_u64(&self, off: u64, value: u64) {
        if !self.writable || !off.is_multiple_of(8) || off.saturating_add(8) > self.len {
            return;
        }
        // SAFETY: aligned, inside our own mapping, which is read-write (`writable`; data pages
        // are never sealed) and mapped for the life of the process.
        unsafe { std::sync::atomic::AtomicU64::from_ptr((self.addr + off) as *mut u64) }
            .store(value, std::sync::atomic::Ordering::Release);
    }

    /// Atomically reads the aligned 8-byte slot at offset `off` (0 when out of range).
    pub fn load_u64(&self, off: u64) -> u64 {
        if !off.is_multiple_of(8) || off.saturating_add(8) > self.len {
            return 0;
        }
        // SAFETY: as in `store_u64`.
        unsafe { load_u64(self.addr + off) }
    }

    /// Unmaps a page nothing was ever placed in.
    pub fn discard(self) {
        // SAFETY: our own mapping, never handed out, so nothing references it.
        let _ = unsafe { super::raw::munmap(self.addr, self.len) };
    }

    /// Makes the page read+execute for good.
    pub fn seal(self) -> std::io::Result<u64> {
        // SAFETY: our own mapping; nothing runs in it or reads it yet.
        let r = unsafe {
            super::mprotect::mprotect(self.addr, self.len, libc::PROT_READ | libc::PROT_EXEC)
        };
        if r.is_err() {
            // Never executable, so nobody can be running in it.
            // SAFETY: our own mapping, which nothing references yet.
            let _ = unsafe { super::raw::munmap(self.addr, self.len) };
        }
        r.map(|()| self.addr)
    }
}

/// Copies each run `(addr, bytes)` back into `module`'s writable data, one byte at a time: no
/// `memcpy` (a patch may replace libc's), no allocation, no lock, so it runs while the other
/// threads are parked. A run not wholly inside one writable segment (outside RELRO) of `module`
/// is skipped. Returns how many bytes were written.
///
/// `module` must be mapped as it says while this runs (callers hold the loader's list lock, see
/// `sys::phdr::with_modules_locked`), and the caller must have parked every thread that could be
/// using the bytes mid-way.
pub fn restore_runs(module: &Layout, runs: &[(u64, Vec<u8>)]) -> u64 {
    let mut written = 0;
    for (addr, bytes) in runs {
        let Some(last) = addr
            .checked_add(bytes.len() as u64)
            .and_then(|e| e.checked_sub(1))
        else {
            continue;
        };
        let writable = |a| module.protection(a).is_some_and(|p| p.write);
        if bytes.is_empty()
            || !writable(*addr)
            || !writable(last)
            || !module.same_segment(*addr, last)
        {
            continue;
        }
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: inside one writable, non-RELRO segment of a module that stays mapped (the
            // contract above); volatile keeps the compiler from turning the loop into `memcpy`.
            unsafe { std::ptr::write_volatile((addr + i as u64) as *mut u8, b) };
        }
        written += bytes.len() as u64;
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page-aligned address with nothing mapped there right now.
    fn free_address(len: u64) -> u64 {
        // SAFETY: a fresh anonymous mapping, unmapped at once; only its address is kept.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            libc::munmap(p, len as usize);
            p as u64
        }
    }

    #[test]
    fn own_page_writes_only_when_mapped_writable() {
        let len = super::super::page::page_size();
        let mut data = OwnPage::map_at(free_address(len), len, false).unwrap();
        data.fill(0, &[1, 2, 3]);
        data.store_u64(8, 42);
        assert_eq!(data.load_u64(0) & 0xff_ffff, 0x03_0201);
        assert_eq!(data.load_u64(8), 42);
        data.fill(len - 1, &[1, 2]);
        data.store_u64(len, 1);
        // A read+execute page: before `writable`, `fill` and `store_u64` wrote into it and the
        // test process died of SIGSEGV.
        let mut code = OwnPage::map_at(free_address(len), len, true).unwrap();
        code.fill(0, &[0xcc]);
        code.store_u64(0, 7);
        assert_eq!(code.load_u64(0), 0);
        assert!(code.addr().is_multiple_of(len));
        code.discard();
    }
}
