//! Reading loaded modules in memory: layout, dynamic section, symbols, versions, relocations.
//!
//! Everything here is safe code over the [`Memory`] trait, so the same reader serves the live image
//! (`sys::mem::LiveMemory`) and byte buffers in tests. Every read is bounds-checked; a malformed or
//! unexpected image gives an error or `None`, never a fault.

mod arch;
mod dynamic;
mod exports;
mod layout;
mod memory;
mod reader;
/// Also built outside tests: the criterion benches and the fuzz targets use it.
pub mod synthetic;

pub use arch::{SlotKind, R_ABS64, R_GLOB_DAT, R_JUMP_SLOT};
pub use dynamic::Dynamic;
pub use exports::{as_plain_function, exports, Export, SymKind};
pub use layout::{file_name, Layout, Prot, Segment};
pub use memory::{Memory, SliceMemory};
pub use reader::{Image, ImageError, Reloc, Sym};
