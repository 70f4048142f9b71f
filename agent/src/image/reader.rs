//! Symbols, versions and relocations of one loaded module.

use super::dynamic::Dynamic;
use super::layout::Layout;
use super::memory::Memory;

pub(super) const SYM_SIZE: u64 = 24;
const RELA_SIZE: u64 = 24;
const VERSYM_HIDDEN: u16 = 0x8000;
const VER_FLG_BASE: u16 = 0x1;
/// Walks over version chains stop here: a longer chain means a corrupt image.
const MAX_VERSIONS: u64 = 1 << 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    NoDynamic,
    NoSymbolTable,
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageError::NoDynamic => f.write_str("no readable dynamic section"),
            ImageError::NoSymbolTable => f.write_str("no dynamic symbol table"),
        }
    }
}

/// One dynamic symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sym<'m> {
    pub name: &'m [u8],
    pub info: u8,
    pub other: u8,
    pub shndx: u16,
    pub value: u64,
    pub size: u64,
}

impl Sym<'_> {
    pub fn is_defined(&self) -> bool {
        self.shndx != 0
    }
    pub fn kind(&self) -> u8 {
        self.info & 0xf
    }
    pub fn binding(&self) -> u8 {
        self.info >> 4
    }
}

/// One relocation with a symbol: its slot's absolute address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloc {
    pub slot: u64,
    pub r_type: u32,
    pub sym: u32,
    pub addend: i64,
}

/// A loaded module, ready to be read.
pub struct Image<'m, M: Memory> {
    pub mem: &'m M,
    pub layout: &'m Layout,
    pub dynamic: Dynamic,
}

impl<'m, M: Memory> Image<'m, M> {
    pub fn new(mem: &'m M, layout: &'m Layout) -> Result<Self, ImageError> {
        let dynamic = Dynamic::read(mem, layout).ok_or(ImageError::NoDynamic)?;
        if dynamic.symtab == 0 || dynamic.strtab == 0 {
            return Err(ImageError::NoSymbolTable);
        }
        Ok(Image {
            mem,
            layout,
            dynamic,
        })
    }

    /// A string from the dynamic string table.
    pub fn string(&self, offset: u64) -> Option<&'m [u8]> {
        if self.dynamic.strsz != 0 && offset >= self.dynamic.strsz {
            return None;
        }
        self.mem.cstr(self.dynamic.strtab.checked_add(offset)?)
    }

    pub fn soname(&self) -> Option<&'m [u8]> {
        self.string(self.dynamic.soname?)
    }

    /// The address of symbol `index`'s table entry (where `st_info` and `st_value` live).
    pub fn sym_entry(&self, index: u32) -> Option<u64> {
        self.dynamic
            .symtab
            .checked_add(u64::from(index).checked_mul(SYM_SIZE)?)
    }

    pub fn symbol(&self, index: u32) -> Option<Sym<'m>> {
        let e = self.sym_entry(index)?;
        let raw = self.mem.bytes(e, SYM_SIZE as usize)?;
        let name_off = u32::from_le_bytes(raw[0..4].try_into().ok()?);
        Some(Sym {
            name: self.string(u64::from(name_off))?,
            info: raw[4],
            other: raw[5],
            shndx: u16::from_le_bytes(raw[6..8].try_into().ok()?),
            value: u64::from_le_bytes(raw[8..16].try_into().ok()?),
            size: u64::from_le_bytes(raw[16..24].try_into().ok()?),
        })
    }

    /// How many dynamic symbols there are, from the hash tables (the dynamic section has no count).
    pub fn symbol_count(&self) -> Option<u32> {
        if self.dynamic.gnu_hash != 0 {
            return self.gnu_hash_count();
        }
        if self.dynamic.hash != 0 {
            return self.mem.u32(self.dynamic.hash.checked_add(4)?);
        }
        None
    }

    fn gnu_hash_count(&self) -> Option<u32> {
        let h = self.dynamic.gnu_hash;
        let nbuckets = self.mem.u32(h)?;
        let symoffset = self.mem.u32(h + 4)?;
        let bloom_size = self.mem.u32(h + 8)?;
        let buckets = h
            .checked_add(16)?
            .checked_add(u64::from(bloom_size).checked_mul(8)?)?;
        let mut last = 0u32;
        for i in 0..u64::from(nbuckets) {
            last = last.max(self.mem.u32(buckets.checked_add(i * 4)?)?);
        }
        if last < symoffset {
            return Some(symoffset);
        }
        let chains = buckets.checked_add(u64::from(nbuckets) * 4)?;
        let mut idx = last;
        loop {
            let entry = self
                .mem
                .u32(chains.checked_add(u64::from(idx - symoffset) * 4)?)?;
            if entry & 1 != 0 {
                return idx.checked_add(1);
            }
            idx = idx.checked_add(1)?;
        }
    }

    /// The version name attached to symbol `index`, and whether it is a hidden (non-default) one.
    /// Defined symbols take their version from `DT_VERDEF`, undefined ones from `DT_VERNEED`.
    pub fn version(&self, index: u32, defined: bool) -> Option<(&'m [u8], bool)> {
        if self.dynamic.versym == 0 {
            return None;
        }
        let vs = self
            .mem
            .u16(self.dynamic.versym.checked_add(u64::from(index) * 2)?)?;
        let hidden = vs & VERSYM_HIDDEN != 0;
        let ndx = vs & !VERSYM_HIDDEN;
        if ndx <= 1 {
            return None;
        }
        let name = if defined {
            self.verdef_name(ndx)
        } else {
            self.verneed_name(ndx)
        };
        name.map(|n| (n, hidden))
    }

    fn verdef_name(&self, ndx: u16) -> Option<&'m [u8]> {
        let mut at = self.dynamic.verdef;
        for _ in 0..self.dynamic.verdefnum.min(MAX_VERSIONS) {
            if at == 0 {
                return None;
            }
            let vd_flags = self.mem.u16(at.checked_add(2)?)?;
            let vd_ndx = self.mem.u16(at.checked_add(4)?)? & !VERSYM_HIDDEN;
            let vd_aux = self.mem.u32(at.checked_add(12)?)?;
            let vd_next = self.mem.u32(at.checked_add(16)?)?;
            // The base definition names the file, not a version: the loader never matches it.
            if vd_ndx == ndx && vd_flags & VER_FLG_BASE == 0 {
                let aux = at.checked_add(u64::from(vd_aux))?;
                return self.string(u64::from(self.mem.u32(aux)?));
            }
            if vd_next == 0 {
                return None;
            }
            at = at.checked_add(u64::from(vd_next))?;
        }
        None
    }

    fn verneed_name(&self, ndx: u16) -> Option<&'m [u8]> {
        let mut at = self.dynamic.verneed;
        for _ in 0..self.dynamic.verneednum.min(MAX_VERSIONS) {
            if at == 0 {
                return None;
            }
            let vn_cnt = self.mem.u16(at.checked_add(2)?)?;
            let vn_aux = self.mem.u32(at.checked_add(8)?)?;
            let vn_next = self.mem.u32(at.checked_add(12)?)?;
            let mut aux = at.checked_add(u64::from(vn_aux))?;
            for _ in 0..vn_cnt {
                let other = self.mem.u16(aux.checked_add(6)?)?;
                let name = self.mem.u32(aux.checked_add(8)?)?;
                let next = self.mem.u32(aux.checked_add(12)?)?;
                if other == ndx {
                    return self.string(u64::from(name));
                }
                if next == 0 {
                    break;
                }
                aux = aux.checked_add(u64::from(next))?;
            }
            if vn_next == 0 {
                return None;
            }
            at = at.checked_add(u64::from(vn_next))?;
        }
        None
    }

    /// The relocations of `DT_JMPREL` and `DT_RELA` that name a symbol. A table that runs out of
    /// readable memory ends the walk there.
    pub fn relocations(&self) -> impl Iterator<Item = Reloc> + '_ {
        let tables = [
            (self.dynamic.jmprel, self.dynamic.pltrelsz),
            (self.dynamic.rela, self.dynamic.relasz),
        ];
        tables
            .into_iter()
            .filter(|(a, n)| *a != 0 && *n != 0)
            .flat_map(move |(addr, size)| {
                (0..size / RELA_SIZE).map_while(move |i| {
                    let raw = self
                        .mem
                        .bytes(addr.checked_add(i * RELA_SIZE)?, RELA_SIZE as usize)?;
                    let offset = u64::from_le_bytes(raw[0..8].try_into().ok()?);
                    let info = u64::from_le_bytes(raw[8..16].try_into().ok()?);
                    let addend = i64::from_le_bytes(raw[16..24].try_into().ok()?);
                    Some(Reloc {
                        slot: self.layout.base.wrapping_add(offset),
                        r_type: (info & 0xffff_ffff) as u32,
                        sym: (info >> 32) as u32,
                        addend,
                    })
                })
            })
    }
}
