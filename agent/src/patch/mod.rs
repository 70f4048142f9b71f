//! Writing slots: GOT entries, data pointers and symbol-table entries of loaded modules.
//!
//! Each write names the value it expects to find; a slot holding anything else is not touched
//! (the lazy-binding resolver or the program itself may have changed it). Writes are grouped by
//! page so a read-only page costs one `mprotect` pair however many slots it holds. A batch is all
//! or nothing: if one write fails, the ones already made are put back before the error returns.

mod page;

use crate::image::Layout;
use page::PageWriter;

/// How wide a write is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// A pointer-sized slot: one aligned atomic store, so readers see old or new, never a mix.
    U64,
    /// One byte (a symbol's `st_info`).
    U8,
}

/// One intended write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    pub addr: u64,
    pub width: Width,
    pub expected: u64,
    pub value: u64,
}

impl Write {
    pub fn slot(addr: u64, expected: u64, value: u64) -> Write {
        Write {
            addr,
            width: Width::U64,
            expected,
            value,
        }
    }
    fn undo(self) -> Write {
        Write {
            expected: self.value,
            value: self.expected,
            ..self
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("address {addr:#x} is not inside any loaded module")]
    Unmapped { addr: u64 },
    #[error("slot {addr:#x} is misaligned")]
    Misaligned { addr: u64 },
    #[error("slot {addr:#x} changed under us: expected {expected:#x}, found {found:#x}")]
    Changed {
        addr: u64,
        expected: u64,
        found: u64,
    },
    #[error("cannot make the page at {addr:#x} writable: {reason}")]
    Protect { addr: u64, reason: String },
}

/// Applies every write or none. `layouts` must describe the modules the addresses fall in.
pub fn apply(writes: &[Write], layouts: &[Layout]) -> Result<(), PatchError> {
    Batch::new(writes.to_vec()).apply(layouts)
}

/// Writes sorted and room for their undo log made beforehand, so that applying them allocates
/// nothing: the form a write takes while other threads are parked (one of them may hold the
/// allocator's lock).
#[derive(Debug, Clone, Default)]
pub struct Batch {
    writes: Vec<Write>,
    done: Vec<Write>,
}

impl Batch {
    pub fn new(mut writes: Vec<Write>) -> Batch {
        writes.sort_by_key(|w| w.addr);
        let done = Vec::with_capacity(writes.len());
        Batch { writes, done }
    }

    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Applies every write or none. Allocates nothing unless a write fails.
    pub fn apply(&mut self, layouts: &[Layout]) -> Result<(), PatchError> {
        self.done.clear();
        let mut writer = PageWriter::new(layouts);
        for &w in &self.writes {
            let res = match w.width {
                Width::U64 if !w.addr.is_multiple_of(8) => {
                    Err(PatchError::Misaligned { addr: w.addr })
                }
                _ => writer.write(w),
            };
            if let Err(e) = res {
                // Undo in reverse; an undo can only fail if the program rewrote our slot
                // meanwhile, in which case its value wins.
                for d in self.done.iter().rev() {
                    let _ = writer.write(d.undo());
                }
                writer.finish();
                return Err(e);
            }
            self.done.push(w);
        }
        writer.finish();
        Ok(())
    }
}
