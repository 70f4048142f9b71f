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
    let mut order: Vec<usize> = (0..writes.len()).collect();
    order.sort_by_key(|&i| writes[i].addr);
    let mut writer = PageWriter::new(layouts);
    let mut done: Vec<Write> = Vec::with_capacity(writes.len());
    for &i in &order {
        let w = writes[i];
        let res = match w.width {
            Width::U64 if !w.addr.is_multiple_of(8) => Err(PatchError::Misaligned { addr: w.addr }),
            _ => writer.write(w),
        };
        if let Err(e) = res {
            // Undo in reverse; an undo can only fail if the program rewrote our slot meanwhile,
            // in which case its value wins.
            for d in done.iter().rev() {
                let _ = writer.write(d.undo());
            }
            writer.finish();
            return Err(e);
        }
        done.push(w);
    }
    writer.finish();
    Ok(())
}
