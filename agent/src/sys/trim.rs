//! After start-up, the process gives back its page-table entries for the agent's read-only
//! segments (code, read-only data, relocation tables).
//!
//! The start-up touches code all over the library, and the kernel maps the neighbouring pages of
//! each fault too (fault-around): about 1.8 MiB of the agent's file ended up in every target's
//! RSS, although the agent then sleeps until a client comes. Those pages are clean copies of the
//! file, shared through the page cache: dropping our entries (`MADV_DONTNEED` on a private file
//! mapping) leaves the cache alone, and the next use faults them back in. Nothing is lost —
//! unless a page was copied on write (a debugger's breakpoint), which `MADV_DONTNEED` would
//! discard: `/proc/self/pagemap` is read first, and any present page that is not the file's own
//! leaves the whole segment as it is. Writable segments (relocated data) are never touched.

use super::{phdr, raw};

/// Pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
const FILE_OR_SHARED: u64 = 1 << 61;
/// Pagemap entries read per system call.
const CHUNK: usize = 512;

/// Drops this process's entries for the agent's own read-only segments; the bytes released.
pub fn release_own_pages() -> u64 {
    let page = super::page::page_size();
    let me = release_own_pages as *const () as usize as u64;
    let Some(module) = phdr::snapshot()
        .into_iter()
        .find(|m| m.text_ranges().any(|(lo, hi)| lo <= me && me < hi))
    else {
        return 0;
    };
    let Ok(pagemap) = raw::open(c"/proc/self/pagemap", libc::O_RDONLY) else {
        return 0;
    };
    let mut released = 0;
    for p in module
        .phdrs
        .iter()
        .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_W == 0)
    {
        let start = module.base.wrapping_add(p.p_vaddr);
        // Whole pages only: a page shared with a writable segment is not ours to drop.
        let lo = start.div_ceil(page) * page;
        let hi = (start.wrapping_add(p.p_memsz) / page) * page;
        if lo >= hi || !all_from_file(pagemap, lo, hi, page) {
            continue;
        }
        if dont_need(lo, hi - lo).is_ok() {
            released += hi - lo;
        }
    }
    // SAFETY: opened by this function, used no more.
    unsafe { raw::close(pagemap) };
    released
}

/// True when every present page of `[lo, hi)` is the file's own (none copied on write, none
/// swapped out as anonymous memory).
fn all_from_file(pagemap: i32, lo: u64, hi: u64, page: u64) -> bool {
    let mut entries = [0u64; CHUNK];
    let mut vpn = lo / page;
    let end = hi / page;
    while vpn < end {
        let n = ((end - vpn) as usize).min(CHUNK);
        let Ok(got) = pread(pagemap, &mut entries[..n], vpn * 8) else {
            return false;
        };
        if got == 0 {
            return false;
        }
        let bad = entries[..got]
            .iter()
            .any(|&e| (e & PRESENT != 0 && e & FILE_OR_SHARED == 0) || e & SWAPPED != 0);
        if bad {
            return false;
        }
        vpn += got as u64;
    }
    true
}

/// `pread64` of whole pagemap entries; how many were read.
fn pread(fd: i32, out: &mut [u64], offset: u64) -> Result<usize, raw::Errno> {
    // SAFETY: `out` is writable for its whole length in bytes; the kernel checks the offset.
    let n = unsafe {
        raw::syscall(
            libc::SYS_pread64,
            &[
                fd as usize,
                out.as_mut_ptr() as usize,
                std::mem::size_of_val(out),
                offset as usize,
            ],
        )
    }?;
    Ok(n / 8)
}

fn dont_need(addr: u64, len: u64) -> Result<(), raw::Errno> {
    // SAFETY: [addr, addr+len) is a read-only, private file mapping of the agent whose present
    // pages were all just seen to be the file's own: dropping them loses nothing, the next
    // access reads the same bytes back from the page cache.
    unsafe {
        raw::syscall(
            libc::SYS_madvise,
            &[addr as usize, len as usize, libc::MADV_DONTNEED as usize],
        )
    }
    .map(|_| ())
}
