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
pub struct Sym {
    pub name: String,
    pub addr: u64,
    pub size: u64,
    pub func: bool,
    pub ifunc: bool,
    pub global: bool,
}

/// One build: its file and the symbols naming its addresses (its `.symtab`, or a debug file's,
/// and its `.dynsym`).
pub struct Side<'a> {
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
pub struct Pair<'a> {
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

    /// Whether two references that nothing names (`meaning` is `None` for both) still read the
    /// same thing: both into read-only data, compared by content, which is sound because no code
    /// can write those bytes. `old`/`new` are (target, address of the referencing instruction);
    /// `read` is the width of a load from the target, `None` when the code takes its address.
    pub fn same_content(&self, old: (u64, u64), new: (u64, u64), read: Option<u64>) -> bool {
        let (Some(oe), Some(ne)) = (
            self.old.unnamed_read_only(old.0),
            self.new.unnamed_read_only(new.0),
        ) else {
            return false;
        };
        if let Some(width) = read {
            // Exactly the bytes the instruction loads.
            return width > 0
                && matches!(
                    (self.old.bytes(old.0, width), self.new.bytes(new.0, width)),
                    (Some(x), Some(y)) if x == y
                );
        }
        match (self.old.string_at(old.0), self.new.string_at(new.0)) {
            (Some(x), Some(y)) => return x == y,
            (None, None) => {}
            _ => return false,
        }
        // A table or a literal that is not a string: everything up to the next symbol or the
        // section's end (a superset of what the code can read from there), when that is not
        // too long. Its distance from the code must not change
        // either: a switch's jump table holds offsets relative to itself, equal bytes only mean
        // equal targets when the table sits at the same distance from the code.
        let (ol, nl) = (oe - old.0, ne - new.0);
        old.0.wrapping_sub(old.1) == new.0.wrapping_sub(new.1)
            && ol == nl
            && ol <= WINDOW
            && matches!(
                (self.old.bytes(old.0, ol), self.new.bytes(new.0, nl)),
                (Some(x), Some(y)) if x == y
            )
    }
}

/// Longest string compared by content, terminator included.
const MAX_STRING: u64 = 4096;
/// Longest unnamed non-string extent compared by content: a bound on the work, not on what is
/// compared (a longer extent counts as changed). A switch's jump table is followed by the rest
/// of `.rodata` up to the next named object, often kilobytes away.
const WINDOW: u64 = 16 << 10;

impl Side<'_> {
    /// When `a` lies in read-only data (`.rodata` and friends: allocated, neither writable nor
    /// executable) where no symbol and no relocated slot names it: where its extent ends (the
    /// next symbol or the section's end).
    fn unnamed_read_only(&self, a: u64) -> Option<u64> {
        if self.slots.contains_key(&a) || self.containing(a).is_some() {
            return None;
        }
        let h = self.f.elf.section_headers.iter().find(|s| {
            s.sh_type == sh::SHT_PROGBITS
                && s.sh_flags & u64::from(sh::SHF_ALLOC | sh::SHF_WRITE | sh::SHF_EXECINSTR)
                    == u64::from(sh::SHF_ALLOC)
                && s.sh_addr <= a
                && a < s.sh_addr + s.sh_size
        })?;
        // Only the compiler's constants: `.eh_frame` and its kin are read-only too but hold
        // self-relative addresses.
        let name = self.f.elf.shdr_strtab.get_at(h.sh_name).unwrap_or("");
        if !name.starts_with(".rodata") {
            return None;
        }
        let next = self.syms[self.syms.partition_point(|s| s.addr <= a)..]
            .first()
            .map_or(u64::MAX, |s| s.addr);
        Some(next.min(h.sh_addr + h.sh_size))
    }

    /// The NUL-terminated text starting at `a` (possibly the tail of a longer string: the
    /// linker merges suffixes), terminator included. An empty one only next to text (the end of
    /// a preceding one, or followed by one in a table of literals), so that a zero byte of some
    /// other constant is not taken for a string. Assumed: an address-taken constant that starts
    /// with text is read only up to its NUL (a struct initialiser copied whole would not be).
    fn string_at(&self, a: u64) -> Option<&[u8]> {
        let text = self.text_at(a)?;
        if text.len() > 1 {
            return Some(text);
        }
        let before = a.checked_sub(1).and_then(|b| self.bytes(b, 1));
        let ends_text = before.is_some_and(|b| b[0] == b' ' || b[0].is_ascii_graphic());
        let text_follows = self.text_at(a + 1).is_some_and(|t| t.len() > 1);
        (ends_text || text_follows).then_some(text)
    }

    /// Printable UTF-8 (whitespace allowed) up to a NUL within [`MAX_STRING`], NUL included.
    fn text_at(&self, a: u64) -> Option<&[u8]> {
        let (_, start, size) = self.section(a)?;
        let window = self.bytes(a, MAX_STRING.min(start + size - a))?;
        let len = window.iter().position(|b| *b == 0)?;
        let text = std::str::from_utf8(&window[..len]).ok()?;
        let printable = |c: char| !c.is_control() || "\t\n\r\x0b\x0c\x07\x08\x1b".contains(c);
        text.chars().all(printable).then_some(&window[..=len])
    }
}
