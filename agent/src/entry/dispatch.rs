//! Dispatch stubs: for each replaced symbol, near its old entries, a stub `jmp [slot]` and a data
//! slot holding the symbol's current code. Every old entry of the symbol jumps to the stub, so a
//! reload or rollback retargets all of them with one atomic store into the slot, instead of
//! rewriting one entry per generation while the threads are held.
//!
//! Stubs come in pairs of pages mapped next to the code: a code page filled with one stub per
//! slot of its data page, made executable once and never written again, and a data page that
//! stays read-write. Neither is ever unmapped (a thread may be passing through at any time).

use super::arch;
use super::error::{EntryError, Errno};
use crate::sys::mem::OwnPage;
use crate::sys::{page, self_mem};

/// One symbol's stub and slot near one region of code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatch {
    pub stub: u64,
    page: usize,
    index: usize,
}

#[derive(Debug)]
struct StubPage {
    code: u64,
    data: OwnPage,
    used: usize,
    capacity: usize,
}

#[derive(Debug, Default)]
pub struct Dispatches {
    pages: Vec<StubPage>,
    /// (symbol, dispatch) for every stub handed out.
    given: Vec<(usize, Dispatch)>,
}

impl Dispatches {
    /// Symbol `symbol`'s dispatch within jump reach of `window`, made on first use with its slot
    /// pointing at `target`.
    pub fn near(
        &mut self,
        symbol: usize,
        window: u64,
        target: u64,
    ) -> Result<Dispatch, EntryError> {
        if let Some(&(_, d)) = self
            .given
            .iter()
            .find(|(s, d)| *s == symbol && reachable(window, d.stub))
        {
            return Ok(d);
        }
        let page = match self
            .pages
            .iter()
            .position(|p| p.used < p.capacity && reachable(window, p.code))
        {
            Some(i) => i,
            None => {
                self.pages.push(map_pair(window)?);
                self.pages.len() - 1
            }
        };
        let p = &mut self.pages[page];
        let index = p.used;
        p.used += 1;
        p.data.store_u64(index as u64 * 8, target);
        let d = Dispatch {
            stub: p.code + (index * arch::STUB_LEN) as u64,
            page,
            index,
        };
        self.given.push((symbol, d));
        Ok(d)
    }

    /// Where the stub at `stub` jumps now.
    pub fn target_of_stub(&self, stub: u64) -> Option<u64> {
        let &(_, d) = self.given.iter().find(|(_, d)| d.stub == stub)?;
        Some(self.target(d))
    }

    pub fn target(&self, d: Dispatch) -> u64 {
        self.pages[d.page].data.load_u64(d.index as u64 * 8)
    }

    /// Points the stub at `target`: one atomic store, no allocation.
    pub fn retarget(&self, d: Dispatch, target: u64) {
        self.pages[d.page]
            .data
            .store_u64(d.index as u64 * 8, target);
    }
}

fn reachable(window: u64, stub: u64) -> bool {
    window.abs_diff(stub) < arch::REACH
}

/// Maps a code page near `window` and a data page next to it, and fills the code page with one
/// stub per data slot: mapped executable and written through `/proc/self/mem` where that works
/// (a process under `MemoryDenyWriteExecute` may not make writable memory executable), else
/// filled while writable and then sealed.
fn map_pair(window: u64) -> Result<StubPage, EntryError> {
    let page = page::page_size();
    let mut gaps = free_ranges();
    let code_at = map_near(&mut gaps, window, page, true)?;
    let data = map_near(&mut gaps, code_at.addr() + page, page, false)?;
    let capacity = (page as usize / arch::STUB_LEN).min(page as usize / 8);
    let mut stubs = vec![0u8; capacity * arch::STUB_LEN];
    for (i, chunk) in stubs.chunks_mut(arch::STUB_LEN).enumerate() {
        let at = code_at.addr() + (i * arch::STUB_LEN) as u64;
        let bytes = arch::stub(at, data.addr() + i as u64 * 8).ok_or(EntryError::StubOutOfReach)?;
        chunk.copy_from_slice(&bytes);
    }
    let through_proc_mem = self_mem::open_proc_mem()
        .is_ok_and(|f| self_mem::write_through_proc_mem(&f, code_at.addr(), &stubs).is_ok());
    let code = if through_proc_mem {
        code_at.addr()
    } else {
        // Nothing was placed in it: replaced by a writable mapping at the same place.
        let at = code_at.addr();
        code_at.discard();
        let mut code = OwnPage::map_at(at, page, false)
            .or_else(|_| map_near(&mut gaps, window, page, false))
            .map_err(|e| EntryError::StubUnmappable(Box::new(e)))?;
        code.fill(0, &stubs);
        code.seal()
            .map_err(|e| EntryError::StubUnsealable(Errno::of(&e)))?
    };
    Ok(StubPage {
        code,
        data,
        used: 0,
        capacity,
    })
}

/// Unmapped ranges of the address space, from `/proc/self/maps`.
fn free_ranges() -> Vec<(u64, u64)> {
    // Read with raw system calls: libc's `open` and `read` may be what is being rolled back.
    let maps = crate::sys::raw::read_file(c"/proc/self/maps").unwrap_or_default();
    let maps = String::from_utf8_lossy(&maps);
    let mut used: Vec<(u64, u64)> = maps
        .lines()
        .filter_map(|l| {
            let range = l.split_whitespace().next()?;
            let (a, b) = range.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect();
    used.sort_unstable();
    let mut free = Vec::new();
    // Stay clear of the null page region and of the top of the user address space.
    let mut cursor = 0x1_0000u64;
    for (a, b) in used {
        if a > cursor {
            free.push((cursor, a));
        }
        cursor = cursor.max(b);
    }
    free.push((cursor, 0x7fff_ffff_0000));
    free
}

/// Maps a page as close to `near` as the free ranges allow, within jump reach of it.
fn map_near(
    gaps: &mut Vec<(u64, u64)>,
    near: u64,
    page: u64,
    exec: bool,
) -> Result<OwnPage, EntryError> {
    let mut candidates: Vec<u64> = gaps
        .iter()
        .filter(|&&(a, b)| b - a >= page)
        .map(|&(a, b)| {
            // The page-aligned address in [a, b - page] closest to `near`.
            let lo = (a + page - 1) & !(page - 1);
            let hi = (b - page) & !(page - 1);
            (near & !(page - 1)).clamp(lo, hi.max(lo))
        })
        .filter(|&at| reachable(near, at))
        .collect();
    candidates.sort_by_key(|&at| at.abs_diff(near));
    for at in candidates {
        if let Ok(p) = OwnPage::map_at(at, page, exec) {
            let mut split = Vec::with_capacity(gaps.len() + 1);
            for &(a, b) in gaps.iter() {
                if a <= at && at < b {
                    split.extend([(a, at), (at + page, b)].into_iter().filter(|(x, y)| x < y));
                } else {
                    split.push((a, b));
                }
            }
            *gaps = split;
            return Ok(p);
        }
    }
    Err(EntryError::NoFreePage { near })
}
