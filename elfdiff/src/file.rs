//! What one shared-object file says about its private writable data: the sections that make it
//! up, its thread-local block, its private objects (from a symbol table) and the initial bytes of
//! any range, with the words the loader relocates masked out.

use goblin::elf::{program_header as ph, section_header as sh, sym, Elf};

const R_X86_64_64: u32 = 1;
const R_X86_64_RELATIVE: u32 = 8;
const R_X86_64_DTPMOD64: u32 = 16;
const R_X86_64_TPOFF64: u32 = 18;
const R_X86_64_TLSDESC: u32 = 36;
const NT_GNU_BUILD_ID: u32 = 3;

/// Writable sections that are per-module bindings or loader data, never program state.
const NOT_STATE: &[&str] = &[".got", ".got.plt", ".dynamic", ".data.rel.ro"];

/// Objects the C runtime's start files put in every library for the module's own bookkeeping
/// (`__do_global_dtors_aux`'s flag, the DSO handle `atexit` keys on): each copy keeps its own.
pub fn is_runtime_bookkeeping(name: &str) -> bool {
    matches!(
        base_name(name),
        "completed" | "__dso_handle" | "__TMC_END__" | "__TMC_LIST__"
    )
}

/// `buf.3` → `buf`: gcc numbers the static locals of a translation unit, and the numbers move
/// when an unrelated function changes.
pub fn base_name(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((head, tail))
            if !head.is_empty() && !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) =>
        {
            head
        }
        _ => name,
    }
}

/// One section of the private writable range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub addr: u64,
    pub size: u64,
    pub tls: bool,
}

impl Section {
    pub fn contains(&self, addr: u64) -> bool {
        self.addr <= addr && addr < self.addr + self.size
    }
}

/// A private object: a symbol of the symbol table inside the private range or the TLS block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The source file symbol before it (static objects of two files may share a name).
    pub file: String,
    pub name: String,
    pub section: String,
    /// Its address (an offset in the TLS block for a thread-local one).
    pub addr: u64,
    pub size: u64,
    pub tls: bool,
}

impl Object {
    pub fn key(&self) -> (&str, &str) {
        (self.file.as_str(), base_name(&self.name))
    }
}

/// The thread-local block (`PT_TLS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tls {
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

/// A dynamic relocation, as far as this analysis needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rel {
    pub offset: u64,
    pub kind: u32,
    /// The symbol index (0: none) and whether that symbol is local to the module.
    pub sym: usize,
    pub local: bool,
    pub addend: i64,
    /// Symbol value + addend for `RELATIVE` and local `R_X86_64_64`.
    pub value: Option<u64>,
}

/// The facts of one file.
pub struct FileView<'a> {
    pub bytes: &'a [u8],
    pub elf: Elf<'a>,
    pub private: Vec<Section>,
    pub tls: Option<Tls>,
    pub tls_sections: Vec<Section>,
    pub rels: Vec<Rel>,
    /// Sorted offsets of every relocated word.
    masked: Vec<u64>,
}

/// Why a file cannot be viewed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("cannot parse it: {0}")]
    Elf(#[source] goblin::error::Error),
    #[error("it has no section headers")]
    NoSections,
}

impl<'a> FileView<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<FileView<'a>, ParseError> {
        let elf = Elf::parse(bytes).map_err(ParseError::Elf)?;
        if elf.section_headers.is_empty() {
            return Err(ParseError::NoSections);
        }
        Ok(FileView::from_elf(bytes, elf))
    }

    /// The view of `elf`, parsed from `bytes` already (a caller that parsed the file for its
    /// own checks hands it over instead of parsing it twice). Its section headers must not be
    /// empty: [`FileView::parse`] refuses such a file.
    pub fn from_elf(bytes: &'a [u8], elf: Elf<'a>) -> FileView<'a> {
        let relro: Vec<(u64, u64)> = elf
            .program_headers
            .iter()
            .filter(|p| p.p_type == ph::PT_GNU_RELRO)
            .map(|p| (p.p_vaddr, p.p_vaddr.saturating_add(p.p_memsz)))
            .collect();
        let mut private = Vec::new();
        let mut tls_sections = Vec::new();
        for s in &elf.section_headers {
            let flags = s.sh_flags;
            if flags & u64::from(sh::SHF_ALLOC) == 0 || flags & u64::from(sh::SHF_WRITE) == 0 {
                continue;
            }
            let name = elf.shdr_strtab.get_at(s.sh_name).unwrap_or("").to_string();
            let tls = flags & u64::from(sh::SHF_TLS) != 0;
            let section = Section {
                name: name.clone(),
                addr: s.sh_addr,
                size: s.sh_size,
                tls,
            };
            if tls {
                tls_sections.push(section);
                continue;
            }
            let in_relro = relro
                .iter()
                // Checked: a crafted section's address and size may add past 2^64.
                .any(|&(a, b)| {
                    a <= s.sh_addr && s.sh_addr.checked_add(s.sh_size).is_some_and(|end| end <= b)
                });
            let loader_owned = NOT_STATE.contains(&name.as_str())
                || matches!(
                    s.sh_type,
                    sh::SHT_INIT_ARRAY | sh::SHT_FINI_ARRAY | sh::SHT_PREINIT_ARRAY
                );
            if !in_relro && !loader_owned && s.sh_size > 0 {
                private.push(section);
            }
        }
        private.sort_by_key(|s| s.addr);
        let tls = elf
            .program_headers
            .iter()
            .find(|p| p.p_type == ph::PT_TLS)
            .map(|p| Tls {
                vaddr: p.p_vaddr,
                filesz: p.p_filesz,
                memsz: p.p_memsz,
                align: p.p_align,
            });
        let mut rels = relocations(&elf);
        rels.extend(relr(&elf, bytes));
        let mut masked: Vec<u64> = rels.iter().map(|r| r.offset).collect();
        masked.sort_unstable();
        FileView {
            bytes,
            elf,
            private,
            tls,
            tls_sections,
            rels,
            masked,
        }
    }

    /// The private section holding `addr`.
    pub fn private_section(&self, addr: u64) -> Option<&Section> {
        self.private.iter().find(|s| s.contains(addr))
    }

    /// The GNU build-id, if the file has one.
    pub fn build_id(&self) -> Option<Vec<u8>> {
        let notes = self.elf.iter_note_headers(self.bytes)?;
        notes
            .filter_map(Result::ok)
            .find(|n| n.n_type == NT_GNU_BUILD_ID && n.name == "GNU")
            .map(|n| n.desc.to_vec())
    }

    pub fn has_symtab(&self) -> bool {
        self.elf.syms.iter().any(|s| s.st_name != 0)
    }

    /// The objects of its `.symtab` (or of `other`'s, a separate debug file with the same
    /// layout) inside the private range or the TLS block.
    pub fn objects(&self, symbols_from: &Elf<'_>) -> Vec<Object> {
        let mut out = Vec::new();
        let mut file = String::new();
        let sections = &symbols_from.section_headers;
        for s in symbols_from.syms.iter() {
            let name = symbols_from.strtab.get_at(s.st_name).unwrap_or("");
            match s.st_type() {
                sym::STT_FILE => {
                    file = name.to_string();
                    continue;
                }
                sym::STT_OBJECT | sym::STT_TLS | sym::STT_NOTYPE => {}
                _ => continue,
            }
            if name.is_empty() || s.st_shndx == 0 || s.st_shndx >= sections.len() {
                continue;
            }
            let sec = symbols_from
                .shdr_strtab
                .get_at(sections[s.st_shndx].sh_name)
                .unwrap_or("");
            let tls = s.st_type() == sym::STT_TLS;
            let inside = if tls {
                self.tls_sections.iter().any(|t| t.name == sec)
            } else {
                self.private
                    .iter()
                    .any(|p| p.name == sec && p.contains(s.st_value))
            };
            if !inside {
                continue;
            }
            // A global symbol is not the property of one translation unit.
            let owner = if s.st_bind() == sym::STB_LOCAL {
                file.clone()
            } else {
                String::new()
            };
            out.push(Object {
                file: owner,
                name: name.to_string(),
                section: sec.to_string(),
                addr: s.st_value,
                size: s.st_size,
                tls,
            });
        }
        out.sort_by(|a, b| (a.tls, a.addr, &a.name).cmp(&(b.tls, b.addr, &b.name)));
        out
    }

    /// The initial bytes of `[addr, addr + len)` (zeros past a segment's file bytes), with each
    /// byte the loader relocates given as `None`.
    pub fn initial(&self, addr: u64, len: u64) -> Vec<Option<u8>> {
        let load = self.elf.program_headers.iter().find(|p| {
            p.p_type == ph::PT_LOAD && p.p_vaddr <= addr && addr + len <= p.p_vaddr + p.p_memsz
        });
        let mut out = Vec::with_capacity(len as usize);
        for a in addr..addr + len {
            let byte = load.and_then(|p| {
                let off = a - p.p_vaddr;
                if off < p.p_filesz {
                    self.bytes.get((p.p_offset + off) as usize).copied()
                } else {
                    Some(0)
                }
            });
            out.push(byte);
        }
        // Mask every 8-byte word a relocation writes.
        let first = self.masked.partition_point(|&o| o + 8 <= addr);
        for &o in self.masked[first..].iter().take_while(|&&o| o < addr + len) {
            for a in o.max(addr)..(o + 8).min(addr + len) {
                out[(a - addr) as usize] = None;
            }
        }
        out
    }

    /// The initial image of the TLS block (`.tdata`, then zeros), relocations masked.
    pub fn tls_initial(&self) -> Vec<Option<u8>> {
        let Some(t) = self.tls else {
            return Vec::new();
        };
        let mut out = self.initial(t.vaddr, t.filesz);
        out.resize(t.memsz as usize, Some(0));
        out
    }
}

/// The first offset where two masked images differ (a masked byte matches anything).
pub fn first_difference(a: &[Option<u8>], b: &[Option<u8>]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter()
        .zip(b)
        .position(|(x, y)| matches!((x, y), (Some(x), Some(y)) if x != y))
}

fn relocations(elf: &Elf<'_>) -> Vec<Rel> {
    let mut out = Vec::new();
    for r in elf
        .dynrelas
        .iter()
        .chain(elf.dynrels.iter())
        .chain(elf.pltrelocs.iter())
    {
        let s = elf.dynsyms.get(r.r_sym);
        let local = r.r_sym == 0 || s.as_ref().is_some_and(|s| s.st_bind() == sym::STB_LOCAL);
        let addend = r.r_addend.unwrap_or(0) as u64;
        let value = match r.r_type {
            R_X86_64_RELATIVE => Some(addend),
            R_X86_64_64 if local => Some(s.map_or(0, |s| s.st_value).wrapping_add(addend)),
            _ => None,
        };
        out.push(Rel {
            offset: r.r_offset,
            kind: r.r_type,
            sym: r.r_sym,
            local,
            addend: r.r_addend.unwrap_or(0),
            value,
        });
    }
    out
}

/// Packed relative relocations (`.relr.dyn`, `-z pack-relative-relocs`): the addend is the word
/// in the file.
fn relr(elf: &Elf<'_>, bytes: &[u8]) -> Vec<Rel> {
    const SHT_RELR: u32 = 19;
    let word_at = |vaddr: u64| -> Option<u64> {
        let p = elf.program_headers.iter().find(|p| {
            p.p_type == ph::PT_LOAD && p.p_vaddr <= vaddr && vaddr + 8 <= p.p_vaddr + p.p_filesz
        })?;
        let off = usize::try_from(p.p_offset + (vaddr - p.p_vaddr)).ok()?;
        Some(u64::from_le_bytes(
            bytes.get(off..off + 8)?.try_into().ok()?,
        ))
    };
    let mut out = Vec::new();
    for s in elf.section_headers.iter().filter(|s| s.sh_type == SHT_RELR) {
        let Some(table) = s.file_range().and_then(|r| bytes.get(r)) else {
            continue;
        };
        let mut next = 0u64;
        let mut push = |at: u64| {
            out.push(Rel {
                offset: at,
                kind: R_X86_64_RELATIVE,
                sym: 0,
                local: true,
                addend: 0,
                value: word_at(at),
            })
        };
        for e in table.chunks_exact(8) {
            let e = u64::from_le_bytes(e.try_into().unwrap_or_default());
            if e & 1 == 0 {
                push(e);
                next = e + 8;
            } else {
                for i in 0..63 {
                    if (e >> (i + 1)) & 1 != 0 {
                        push(next + i * 8);
                    }
                }
                next += 63 * 8;
            }
        }
    }
    out
}

/// Relocation kinds the TLS redirect looks at.
pub fn is_tls_modid(kind: u32) -> bool {
    kind == R_X86_64_DTPMOD64
}
pub fn is_tls_tpoff(kind: u32) -> bool {
    kind == R_X86_64_TPOFF64
}
pub fn is_tlsdesc(kind: u32) -> bool {
    kind == R_X86_64_TLSDESC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_statics_share_a_base_name() {
        assert_eq!(base_name("buf.3"), "buf");
        assert_eq!(base_name("completed.0"), "completed");
        assert_eq!(base_name("x.y"), "x.y");
        assert_eq!(base_name(".3"), ".3");
        assert!(is_runtime_bookkeeping("completed.1"));
        assert!(!is_runtime_bookkeeping("counter"));
    }

    #[test]
    fn libc_private_range_excludes_the_got() {
        let bytes = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        let f = FileView::parse(&bytes).unwrap();
        let names: Vec<&str> = f.private.iter().map(|s| s.name.as_str()).collect();
        assert!(
            names.contains(&".data") && names.contains(&".bss"),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.starts_with(".got")), "{names:?}");
        assert!(f.tls.is_some() && f.build_id().is_some());
        let img = f.initial(f.private[0].addr, f.private[0].size);
        assert_eq!(first_difference(&img, &img), None);
    }
}
