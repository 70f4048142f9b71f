//! The architecture-specific relocation numbers: the only part of the reader that changes on
//! aarch64 (`R_AARCH64_ABS64` 257, `GLOB_DAT` 1025, `JUMP_SLOT` 1026).

#[cfg(target_arch = "x86_64")]
mod numbers {
    pub const R_ABS64: u32 = 1;
    pub const R_GLOB_DAT: u32 = 6;
    pub const R_JUMP_SLOT: u32 = 7;
}

#[cfg(target_arch = "aarch64")]
mod numbers {
    pub const R_ABS64: u32 = 257;
    pub const R_GLOB_DAT: u32 = 1025;
    pub const R_JUMP_SLOT: u32 = 1026;
}

pub use numbers::*;

/// The relocations whose slot holds a symbol's address (IRELATIVE, TLS and RELATIVE do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// A PLT slot: may still hold its lazy-binding stub.
    JumpSlot,
    /// A GOT slot: `-fno-plt` calls, address-of, data references.
    GlobDat,
    /// A pointer stored in data (tables, vtables).
    Abs64,
}

impl SlotKind {
    pub fn from_type(r_type: u32) -> Option<SlotKind> {
        match r_type {
            R_JUMP_SLOT => Some(SlotKind::JumpSlot),
            R_GLOB_DAT => Some(SlotKind::GlobDat),
            R_ABS64 => Some(SlotKind::Abs64),
            _ => None,
        }
    }
}
