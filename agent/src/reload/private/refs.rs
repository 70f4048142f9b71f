//! What an address in one build *means*, so that two builds' references can be compared: the
//! symbol containing it and the offset in it, the symbol a GOT slot or PLT stub is bound to, or a
//! section offset when that section is the same in both builds. Addresses move between builds;
//! these names do not.

use super::file::FileView;
use goblin::elf::{section_header as sh, sym, Elf};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use std::collections::{HashMap, HashSet};

/// How far back a lookup looks for a symbol that contains an address (nested symbols are rare).
const LOOK_BACK: usize = 64;

#[derive(Debug, Clone)]
pub(super) struct Sym {
    pub name: String,
    pub addr: u64,
    pub size: u64,
    pub func: bool,
    pub ifunc: bool,
    pub global: bool,
}

/// One build: its file and the symbols naming its addresses (its `.symtab`, or a debug file's,
/// and its `.dynsym`).
pub(super) struct Side<'a> {
    pub f: &'a FileView<'a>,
    /// Sorted by address.
    pub syms: Vec<Sym>,
    ends: HashMap<u64, Vec<(String, u64)>>,
    /// Relocated words: the symbol they are bound to, or the target of a relative one.
    slots: HashMap<u64, Slot>,
}

#[derive(Debug, Clone)]
enum Slot {
    Named(String, u32, i64),
    Relative(u64),
}

impl<'a> Side<'a> {
    pub fn new(f: &'a FileView<'a>, symbols: &Elf<'_>) -> Side<'a> {
        let mut syms = Vec::new();
        let tables = [
            (&symbols.syms, &symbols.strtab),
            (&f.elf.dynsyms, &f.elf.dynstrtab),
        ];
        for (table, names) in tables {
            for s in table.iter() {
                let t = s.st_type();
                let wanted = matches!(
                    t,
                    sym::STT_FUNC | sym::STT_GNU_IFUNC | sym::STT_OBJECT | sym::STT_NOTYPE
                );
                let name = names.get_at(s.st_name).unwrap_or("");
                if !wanted || s.st_shndx == 0 || name.is_empty() || s.st_shndx >= 0xff00 {
                    continue;
                }
                syms.push(Sym {
                    name: name.to_string(),
                    addr: s.st_value,
                    size: s.st_size,
                    func: matches!(t, sym::STT_FUNC | sym::STT_GNU_IFUNC),
                    ifunc: t == sym::STT_GNU_IFUNC,
                    global: s.st_bind() != sym::STB_LOCAL,
                });
            }
        }
        syms.sort_by(|a, b| (a.addr, &a.name, a.size).cmp(&(b.addr, &b.name, b.size)));
        syms.dedup_by(|a, b| a.addr == b.addr && a.name == b.name && a.size == b.size);
        let mut ends: HashMap<u64, Vec<(String, u64)>> = HashMap::new();
        for s in syms.iter().filter(|s| s.size > 0) {
            ends.entry(s.addr + s.size)
                .or_default()
                .push((s.name.clone(), s.size));
        }
        let mut slots = HashMap::new();
        for r in &f.rels {
            let slot = match (r.sym, r.value) {
                (0, Some(v)) => Slot::Relative(v),
                (i, _) => {
                    let name = f
                        .elf
                        .dynsyms
                        .get(i)
                        .and_then(|s| f.elf.dynstrtab.get_at(s.st_name))
                        .unwrap_or("?");
                    Slot::Named(name.to_string(), r.kind, r.addend)
                }
            };
            slots.insert(r.offset, slot);
        }
        Side {
            f,
            syms,
            ends,
            slots,
        }
    }

    /// The defined function of that name, if exactly one address carries it.
    pub fn function(&self, name: &str) -> Option<&Sym> {
        let mut found = self.syms.iter().filter(|s| s.func && s.name == name);
        let first = found.next()?;
        found.all(|s| s.addr == first.addr).then_some(first)
    }

    /// The symbol containing `a`: a sized one if any, the one starting last (the innermost),
    /// a global name before a local alias; else a size-0 label exactly at `a`.
    pub fn containing(&self, a: u64) -> Option<&Sym> {
        let end = self.syms.partition_point(|s| s.addr <= a);
        let lo = end.saturating_sub(LOOK_BACK);
        let candidates = self.syms[lo..end].iter();
        let sized = candidates
            .clone()
            .filter(|s| s.size > 0 && a < s.addr + s.size)
            .max_by(|x, y| {
                (x.addr, x.global, std::cmp::Reverse(&x.name)).cmp(&(
                    y.addr,
                    y.global,
                    std::cmp::Reverse(&y.name),
                ))
            });
        sized.or_else(|| {
            candidates
                .filter(|s| s.size == 0 && s.addr == a)
                .min_by(|x, y| x.name.cmp(&y.name))
        })
    }

    /// The functions with a size, as `[start, end)`.
    pub fn function_ranges(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self
            .syms
            .iter()
            .filter(|s| s.func && s.size > 0)
            .map(|s| (s.addr, s.addr + s.size))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The allocated section holding `a`: name, address, size.
    pub fn section(&self, a: u64) -> Option<(&str, u64, u64)> {
        self.f
            .elf
            .section_headers
            .iter()
            .filter(|s| s.sh_flags & u64::from(sh::SHF_ALLOC) != 0)
            .find(|s| s.sh_addr <= a && a < s.sh_addr + s.sh_size)
            .map(|s| {
                let name = self.f.elf.shdr_strtab.get_at(s.sh_name).unwrap_or("");
                (name, s.sh_addr, s.sh_size)
            })
    }

    /// The file bytes of `[a, a + len)`, if one section with file bytes holds them.
    pub fn bytes(&self, a: u64, len: u64) -> Option<&'a [u8]> {
        let s = self.f.elf.section_headers.iter().find(|s| {
            s.sh_type != sh::SHT_NOBITS
                && s.sh_flags & u64::from(sh::SHF_ALLOC) != 0
                && s.sh_addr <= a
                && a + len <= s.sh_addr + s.sh_size
        })?;
        let start = usize::try_from(s.sh_offset + (a - s.sh_addr)).ok()?;
        self.f.bytes.get(start..start + usize::try_from(len).ok()?)
    }

    pub fn is_plt(&self, a: u64) -> bool {
        self.section(a)
            .is_some_and(|(n, _, _)| n.starts_with(".plt"))
    }

    pub fn is_code(&self, a: u64) -> bool {
        self.f.elf.section_headers.iter().any(|s| {
            s.sh_flags & u64::from(sh::SHF_EXECINSTR) != 0
                && s.sh_addr <= a
                && a < s.sh_addr + s.sh_size
        })
    }

    /// The GOT slot a PLT stub at `a` jumps through (`endbr64` first, with IBT).
    fn plt_slot(&self, a: u64) -> Option<u64> {
        let code = self.bytes(a, 16).or_else(|| self.bytes(a, 8))?;
        let mut dec = Decoder::with_ip(64, code, a, DecoderOptions::NONE);
        let mut ins = Instruction::default();
        for _ in 0..3 {
            if !dec.can_decode() {
                return None;
            }
            dec.decode_out(&mut ins);
            match ins.mnemonic() {
                Mnemonic::Endbr64 | Mnemonic::Nop => continue,
                Mnemonic::Jmp if ins.is_ip_rel_memory_operand() => {
                    return Some(ins.ip_rel_memory_address())
                }
                _ => return None,
            }
        }
        None
    }
}

/// Two builds, and the sections that are byte for byte the same in both (where an offset no
/// symbol names still means the same thing).
pub(super) struct Pair<'a> {
    pub old: Side<'a>,
    pub new: Side<'a>,
    same_sections: HashSet<String>,
}

impl<'a> Pair<'a> {
    pub fn new(old: Side<'a>, new: Side<'a>) -> Pair<'a> {
        let mut same_sections = HashSet::new();
        let headers = |s: &Side<'a>| {
            s.f.elf
                .section_headers
                .iter()
                .filter(|h| h.sh_flags & u64::from(sh::SHF_ALLOC) != 0)
                .map(|h| {
                    let name = s.f.elf.shdr_strtab.get_at(h.sh_name).unwrap_or("");
                    let bytes = (h.sh_type != sh::SHT_NOBITS)
                        .then(|| h.file_range().and_then(|r| s.f.bytes.get(r)))
                        .flatten();
                    (name.to_string(), h.sh_size, h.sh_type, bytes)
                })
                .collect::<Vec<_>>()
        };
        let (o, n) = (headers(&old), headers(&new));
        for x in &n {
            let twins: Vec<_> = o.iter().filter(|y| y.0 == x.0).collect();
            if let [y] = twins[..] {
                if (y.1, y.2, y.3) == (x.1, x.2, x.3) {
                    same_sections.insert(x.0.clone());
                }
            }
        }
        Pair {
            old,
            new,
            same_sections,
        }
    }

    /// What address `a` of build `side` means; `None` when nothing says (then any reference
    /// to it counts as changed).
    pub fn meaning(&self, side: &Side<'_>, a: u64) -> Option<String> {
        self.meaning_at(side, a, 2)
    }

    fn meaning_at(&self, side: &Side<'_>, a: u64, depth: u8) -> Option<String> {
        if let Some(slot) = side.slots.get(&a) {
            return match slot {
                Slot::Named(name, kind, addend) => Some(format!("slot {kind} {name}{addend:+}")),
                Slot::Relative(v) if depth > 0 => self
                    .meaning_at(side, *v, depth - 1)
                    .map(|m| format!("slot -> {m}")),
                Slot::Relative(_) => None,
            };
        }
        if let Some(s) = side.containing(a) {
            let mut m = format!("{}+{:#x}", s.name, a - s.addr);
            // One past the end of an object (a loop bound): its size is part of the meaning.
            if let Some(ended) = side.ends.get(&a) {
                for (name, size) in ended {
                    m.push_str(&format!(" end of {name}/{size}"));
                }
            }
            return Some(m);
        }
        if side.is_plt(a) && depth > 0 {
            let slot = side.plt_slot(a)?;
            return self
                .meaning_at(side, slot, depth - 1)
                .map(|m| format!("plt {m}"));
        }
        let (name, addr, _) = side.section(a)?;
        self.same_sections
            .contains(name)
            .then(|| format!("{name}+{:#x}", a - addr))
    }
}
