//! Making one page at a time writable, and restoring it exactly. The stores themselves are
//! `unsafe`: this module is where the "page is mapped and writable now" invariant is established.
//! Opening a page (`mprotect`) is `sys::mprotect::OpenedPage`'s.
#![allow(unsafe_code)]

use super::{PatchError, Width, Write};
use crate::image::Layout;
use crate::sys::mprotect::OpenedPage;
use crate::sys::{mem, page, self_mem};

/// Writes into pages of loaded modules, keeping at most one page unprotected at a time.
pub struct PageWriter<'l> {
    layouts: &'l [Layout],
    page_size: u64,
    /// The page currently opened for writing (its protection comes back on drop).
    open: Option<OpenedPage>,
    proc_mem: Option<self_mem::ProcMem>,
}

enum Path {
    Direct,
    ProcMem,
}

impl<'l> PageWriter<'l> {
    pub fn new(layouts: &'l [Layout]) -> Self {
        PageWriter {
            layouts,
            page_size: page::page_size(),
            open: None,
            proc_mem: None,
        }
    }

    /// Prepares the page of `addr`: directly writable, opened with `mprotect`, or (code pages,
    /// where adding write access may be forbidden) written through `/proc/self/mem`.
    fn prepare(&mut self, addr: u64) -> Result<Path, PatchError> {
        let page = addr & !(self.page_size - 1);
        if self.open.as_ref().is_some_and(|p| p.start() == page) {
            return Ok(Path::Direct);
        }
        self.close();
        let prot = self
            .layouts
            .iter()
            .find_map(|l| l.protection(addr))
            .ok_or(PatchError::Unmapped { addr })?;
        if prot.write {
            return Ok(Path::Direct);
        }
        if let Some(opened) = OpenedPage::open(self.layouts, addr, self.page_size) {
            self.open = Some(opened);
            return Ok(Path::Direct);
        }
        if self.proc_mem.is_none() {
            let f = self_mem::open_proc_mem();
            self.proc_mem = Some(f.map_err(|e| PatchError::Protect {
                addr,
                reason: e.to_string(),
            })?);
        }
        Ok(Path::ProcMem)
    }

    pub fn write(&mut self, w: Write) -> Result<(), PatchError> {
        match self.prepare(w.addr)? {
            Path::Direct => match w.width {
                Width::U64 => {
                    // SAFETY: the address lies in a mapped page of a loaded module made writable
                    // by `prepare`; U64 writes were checked for alignment by the caller.
                    unsafe { mem::cas_u64(w.addr, w.expected, w.value) }.map_err(|found| {
                        PatchError::Changed {
                            addr: w.addr,
                            expected: w.expected,
                            found,
                        }
                    })
                }
                // SAFETY: as above.
                Width::U8 => unsafe { mem::cas_u8(w.addr, w.expected as u8, w.value as u8) }
                    .map_err(|found| PatchError::Changed {
                        addr: w.addr,
                        expected: w.expected,
                        found: u64::from(found),
                    }),
            },
            Path::ProcMem => {
                // On the stack: this may run while other threads are parked.
                let all = w.value.to_le_bytes();
                let (found, bytes) = match w.width {
                    // SAFETY: the address is in a readable page of a loaded module and aligned.
                    Width::U64 => (unsafe { mem::load_u64(w.addr) }, &all[..]),
                    // SAFETY: the address is in a readable page of a loaded module.
                    Width::U8 => (u64::from(unsafe { mem::load_u8(w.addr) }), &all[..1]),
                };
                if found != w.expected {
                    return Err(PatchError::Changed {
                        addr: w.addr,
                        expected: w.expected,
                        found,
                    });
                }
                let file = self
                    .proc_mem
                    .as_ref()
                    .ok_or(PatchError::Unmapped { addr: w.addr })?;
                self_mem::write_through_proc_mem(file, w.addr, bytes).map_err(|e| {
                    PatchError::Protect {
                        addr: w.addr,
                        reason: e.to_string(),
                    }
                })
            }
        }
    }

    fn close(&mut self) {
        // Dropping it restores exactly what the loader set.
        self.open = None;
    }

    pub fn finish(mut self) {
        self.close();
    }
}

impl Drop for PageWriter<'_> {
    fn drop(&mut self) {
        self.close();
    }
}
