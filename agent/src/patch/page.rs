//! Making one page at a time writable, and restoring it exactly. The stores themselves are
//! `unsafe`: this module is where the "page is mapped and writable now" invariant is established.
#![allow(unsafe_code)]

use super::{PatchError, Width, Write};
use crate::image::{Layout, Prot};
use crate::sys::{mem, mprotect, page, self_mem};

/// Writes into pages of loaded modules, keeping at most one page unprotected at a time.
pub struct PageWriter<'l> {
    layouts: &'l [Layout],
    page_size: u64,
    /// The page currently opened for writing and the protection to put back.
    open: Option<(u64, Prot)>,
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

    fn protection(&self, addr: u64) -> Option<Prot> {
        self.layouts.iter().find_map(|l| l.protection(addr))
    }

    /// Prepares the page of `addr`: directly writable, opened with `mprotect`, or (code pages,
    /// where adding write access may be forbidden) written through `/proc/self/mem`.
    fn prepare(&mut self, addr: u64) -> Result<Path, PatchError> {
        let page = addr & !(self.page_size - 1);
        if let Some((p, _)) = self.open {
            if p == page {
                return Ok(Path::Direct);
            }
        }
        self.close();
        let prot = self.protection(addr).ok_or(PatchError::Unmapped { addr })?;
        if prot.write {
            return Ok(Path::Direct);
        }
        if !prot.exec {
            let rw = Prot {
                write: true,
                read: true,
                ..prot
            };
            // SAFETY: a page of a loaded module (`layouts`, read under the loader lock the
            // caller holds), only gaining write access; `close` puts `prot` back.
            if unsafe { mprotect::mprotect(page, self.page_size, rw.to_mprotect()) }.is_ok() {
                self.open = Some((page, prot));
                return Ok(Path::Direct);
            }
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
        if let Some((page, prot)) = self.open.take() {
            // Restoring exactly what the loader set; failure would leave the page writable,
            // which is safe for the target, so it is only ignored.
            // SAFETY: the page `prepare` opened, given back the protection the loader set.
            let _ = unsafe { mprotect::mprotect(page, self.page_size, prot.to_mprotect()) };
        }
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
