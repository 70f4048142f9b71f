//! The dynamic section of a loaded module.

use super::layout::Layout;
use super::memory::Memory;

const DT_NULL: u64 = 0;
const DT_HASH: u64 = 4;
const DT_STRTAB: u64 = 5;
const DT_SYMTAB: u64 = 6;
const DT_RELA: u64 = 7;
const DT_RELASZ: u64 = 8;
const DT_STRSZ: u64 = 10;
const DT_SONAME: u64 = 14;
const DT_PLTRELSZ: u64 = 2;
const DT_JMPREL: u64 = 23;
const DT_GNU_HASH: u64 = 0x6fff_fef5;
const DT_VERSYM: u64 = 0x6fff_fff0;
const DT_VERDEF: u64 = 0x6fff_fffc;
const DT_VERDEFNUM: u64 = 0x6fff_fffd;
const DT_VERNEED: u64 = 0x6fff_fffe;
const DT_VERNEEDNUM: u64 = 0x6fff_ffff;

/// No module has more dynamic entries than this; a longer walk means a broken image.
const MAX_DYN_ENTRIES: usize = 4096;

/// The dynamic entries the reader needs, as absolute addresses (0 = absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dynamic {
    pub strtab: u64,
    pub strsz: u64,
    pub symtab: u64,
    pub hash: u64,
    pub gnu_hash: u64,
    pub rela: u64,
    pub relasz: u64,
    pub jmprel: u64,
    pub pltrelsz: u64,
    pub versym: u64,
    pub verdef: u64,
    pub verdefnum: u64,
    pub verneed: u64,
    pub verneednum: u64,
    /// Offset of the soname in the string table.
    pub soname: Option<u64>,
}

impl Dynamic {
    /// Reads the dynamic section at `layout.dynamic`.
    pub fn read(mem: &impl Memory, layout: &Layout) -> Option<Dynamic> {
        let mut addr = layout.dynamic?;
        let mut d = Dynamic::default();
        // glibc relocates the pointer entries to absolute addresses, except in the vDSO: a value
        // inside the module is absolute, anything else is relative to the load bias.
        let ptr = |v: u64| {
            if layout.contains(v) {
                v
            } else {
                layout.base.wrapping_add(v)
            }
        };
        for _ in 0..MAX_DYN_ENTRIES {
            let tag = mem.u64(addr)?;
            let val = mem.u64(addr.checked_add(8)?)?;
            match tag {
                DT_NULL => return Some(d),
                DT_HASH => d.hash = ptr(val),
                DT_GNU_HASH => d.gnu_hash = ptr(val),
                DT_STRTAB => d.strtab = ptr(val),
                DT_STRSZ => d.strsz = val,
                DT_SYMTAB => d.symtab = ptr(val),
                DT_RELA => d.rela = ptr(val),
                DT_RELASZ => d.relasz = val,
                DT_JMPREL => d.jmprel = ptr(val),
                DT_PLTRELSZ => d.pltrelsz = val,
                DT_VERSYM => d.versym = ptr(val),
                DT_VERDEF => d.verdef = ptr(val),
                DT_VERDEFNUM => d.verdefnum = val,
                DT_VERNEED => d.verneed = ptr(val),
                DT_VERNEEDNUM => d.verneednum = val,
                DT_SONAME => d.soname = Some(val),
                _ => {}
            }
            addr = addr.checked_add(16)?;
        }
        None
    }
}
