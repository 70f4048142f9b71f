//! The symbols a loaded module exports.

use super::memory::Memory;
use super::reader::{Image, SYM_SIZE};

const STT_OBJECT: u8 = 1;
const STT_FUNC: u8 = 2;
const STT_TLS: u8 = 6;
const STT_GNU_IFUNC: u8 = 10;
const STB_GLOBAL: u8 = 1;
const STB_WEAK: u8 = 2;
const STB_GNU_UNIQUE: u8 = 10;
const STV_HIDDEN: u8 = 2;
const SHN_ABS: u16 = 0xfff1;
const STV_INTERNAL: u8 = 1;

/// What an exported symbol is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymKind {
    Function,
    /// A GNU indirect function: its value is a resolver that picks the implementation.
    Ifunc,
    Object,
    /// A thread-local variable: its value is an offset into each thread's block of the module.
    ThreadLocal,
}

impl SymKind {
    pub fn from_type(t: u8) -> Option<SymKind> {
        match t {
            STT_FUNC => Some(SymKind::Function),
            STT_GNU_IFUNC => Some(SymKind::Ifunc),
            STT_OBJECT => Some(SymKind::Object),
            STT_TLS => Some(SymKind::ThreadLocal),
            _ => None,
        }
    }
    pub fn is_code(self) -> bool {
        matches!(self, SymKind::Function | SymKind::Ifunc)
    }
}

/// One exported definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub name: String,
    pub version: Option<String>,
    /// False for a hidden (non-default, `name@VER`) version.
    pub default_version: bool,
    pub kind: SymKind,
    pub index: u32,
    /// Absolute address of the definition (the resolver, for an IFUNC).
    pub addr: u64,
    pub size: u64,
    /// `st_info` as it is in memory now.
    pub info: u8,
    /// Absolute address of the symbol-table entry.
    pub entry: u64,
}

/// `STT_FUNC` with the binding of `info` kept: what an IFUNC entry becomes once it points at a
/// chosen implementation.
pub fn as_plain_function(info: u8) -> u8 {
    (info & 0xf0) | STT_FUNC
}

/// Every defined, visible function and variable of `image` whose name `wanted` accepts (names
/// are checked before anything else is decoded: libc alone has thousands of symbols).
pub fn exports<M: Memory>(image: &Image<'_, M>, wanted: impl Fn(&[u8]) -> bool) -> Vec<Export> {
    let count = image.symbol_count().unwrap_or(0);
    let mut out = Vec::new();
    for index in 1..count {
        let Some(sym) = image.symbol(index) else {
            // The table is contiguous: once an entry runs past readable memory the count (from a
            // hash table) was wrong and every later entry is unreadable too. Without this stop, a
            // corrupted count of four billion had every index tried (a minute under the fuzzer).
            if image
                .sym_entry(index)
                .and_then(|e| image.mem.bytes(e, SYM_SIZE as usize))
                .is_none()
            {
                break;
            }
            continue;
        };
        if !wanted(sym.name) {
            continue;
        }
        let visible = !matches!(sym.other & 3, STV_HIDDEN | STV_INTERNAL);
        let global = matches!(sym.binding(), STB_GLOBAL | STB_WEAK | STB_GNU_UNIQUE);
        let Some(kind) = SymKind::from_type(sym.kind()) else {
            continue;
        };
        // SHN_ABS symbols are version nodes or constants, never code or storage.
        if !sym.is_defined() || sym.shndx == SHN_ABS || !visible || !global || sym.name.is_empty() {
            continue;
        }
        let (version, default_version) = match image.version(index, true) {
            Some((v, hidden)) => (Some(String::from_utf8_lossy(v).into_owned()), !hidden),
            None => (None, true),
        };
        let Some(entry) = image.sym_entry(index) else {
            continue;
        };
        out.push(Export {
            name: String::from_utf8_lossy(sym.name).into_owned(),
            version,
            default_version,
            kind,
            index,
            addr: image.layout.base.wrapping_add(sym.value),
            size: sym.size,
            info: sym.info,
            entry,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::synthetic::Synthetic;
    use crate::image::{Dynamic, SliceMemory, R_GLOB_DAT};
    use std::cell::Cell;

    /// Memory that fails the test at the first sign of a runaway walk, rather than spinning.
    struct Bounded<'a> {
        inner: SliceMemory<'a>,
        reads: Cell<u32>,
    }

    impl Memory for Bounded<'_> {
        fn tail(&self, addr: u64) -> Option<&[u8]> {
            self.reads.set(self.reads.get() + 1);
            assert!(
                self.reads.get() < 10_000,
                "runaway walk over the symbol table"
            );
            self.inner.tail(addr)
        }
    }

    /// Found by the `image_reader` fuzz target: a hash table claiming four billion symbols made
    /// `exports` try every index, long after the table ran out of memory.
    #[test]
    fn a_corrupted_symbol_count_stops_where_memory_ends() {
        let base = 0x40_0000;
        let mut syn = Synthetic::new(base, &[("foo", R_GLOB_DAT, 0)]);
        let mem = SliceMemory {
            base,
            bytes: &syn.bytes,
        };
        let hash = Dynamic::read(&mem, &syn.layout).unwrap().hash;
        let nchain = (hash - base + 4) as usize;
        syn.bytes[nchain..nchain + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mem = Bounded {
            inner: SliceMemory {
                base,
                bytes: &syn.bytes,
            },
            reads: Cell::new(0),
        };
        let image = Image::new(&mem, &syn.layout).unwrap();
        assert_eq!(image.symbol_count(), Some(u32::MAX));
        let saw_foo = Cell::new(false);
        let found = exports(&image, |name| {
            saw_foo.set(saw_foo.get() || name == b"foo");
            true
        });
        assert!(found.is_empty(), "the only symbol is an import");
        assert!(saw_foo.get());
    }
}
