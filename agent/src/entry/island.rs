//! Islands: small absolute jumps placed within `jmp rel32` reach of an entry whose new target is
//! farther away. Pages are mapped next to the code, filled, then made executable once and never
//! unmapped (a thread may be passing through an island at any time). An island is reused by any
//! later entry within reach of it that needs the same target.

use super::arch;
use crate::sys::mem::OwnPage;
use crate::sys::prot;

#[derive(Debug, Default)]
pub struct Islands {
    /// (target, island address) of every sealed island.
    sealed: Vec<(u64, u64)>,
}

/// Islands being placed by one batch, sealed together.
struct Open {
    page: OwnPage,
    used: u64,
    /// (index into the batch's requests, offset)
    placed: Vec<(usize, u64)>,
}

impl Islands {
    /// An island for each `(window, target)` request: an existing one within reach, or a new one.
    pub fn prepare(&mut self, requests: &[(u64, u64)]) -> Vec<Result<u64, String>> {
        let page_size = prot::page_size();
        let mut out: Vec<Result<u64, String>> = vec![Err(String::new()); requests.len()];
        let mut open: Vec<Open> = Vec::new();
        let mut gaps: Option<Vec<(u64, u64)>> = None;
        for (i, &(window, target)) in requests.iter().enumerate() {
            if let Some(&(_, at)) = self
                .sealed
                .iter()
                .find(|&&(t, at)| t == target && within_reach(window, at))
            {
                out[i] = Ok(at);
                continue;
            }
            let slot = open.iter_mut().find(|o| {
                o.used + arch::ISLAND_LEN as u64 <= o.page.len && within_reach(window, o.page.addr)
            });
            let slot = match slot {
                Some(o) => o,
                None => {
                    let gaps = gaps.get_or_insert_with(free_ranges);
                    match map_near(gaps, window, page_size) {
                        Ok(page) => {
                            open.push(Open {
                                page,
                                used: 0,
                                placed: Vec::new(),
                            });
                            open.last_mut().expect("just pushed")
                        }
                        Err(e) => {
                            out[i] = Err(e);
                            continue;
                        }
                    }
                }
            };
            let off = slot.used;
            slot.page.fill(off, &arch::island(target));
            slot.used += arch::ISLAND_LEN as u64;
            slot.placed.push((i, off));
        }
        for o in open {
            match o.page.seal() {
                Ok(addr) => {
                    for (i, off) in o.placed {
                        self.sealed.push((requests[i].1, addr + off));
                        out[i] = Ok(addr + off);
                    }
                }
                Err(e) => {
                    for (i, _) in o.placed {
                        out[i] = Err(format!("cannot make a jump island executable: {e}"));
                    }
                }
            }
        }
        out
    }
}

fn within_reach(window: u64, island: u64) -> bool {
    window.abs_diff(island) < arch::REACH
}

/// Unmapped ranges of the address space, from `/proc/self/maps`.
fn free_ranges() -> Vec<(u64, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
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

/// Maps a page as close to `window` as the free ranges allow, within reach.
fn map_near(gaps: &mut Vec<(u64, u64)>, window: u64, page: u64) -> Result<OwnPage, String> {
    let mut candidates: Vec<u64> = gaps
        .iter()
        .filter(|&&(a, b)| b - a >= page)
        .map(|&(a, b)| {
            // The page-aligned address in [a, b - page] closest to the window.
            let lo = (a + page - 1) & !(page - 1);
            let hi = (b - page) & !(page - 1);
            (window & !(page - 1)).clamp(lo, hi.max(lo))
        })
        .filter(|&at| within_reach(window, at))
        .collect();
    candidates.sort_by_key(|&at| at.abs_diff(window));
    for at in candidates {
        if let Ok(p) = OwnPage::map_at(at, page) {
            // Later requests of this batch must not try the same place.
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
    Err(format!(
        "no free page within ±2 GiB of {window:#x} for a jump island"
    ))
}
