//! Where the new build reaches its own private data, found in its file before it is loaded:
//! RIP-relative operands in its code, pointers the loader writes into data outside the private
//! range, and its thread-local module-id slots.

use super::file::{is_tls_modid, is_tls_tpoff, is_tlsdesc, FileView};
use goblin::elf::{section_header as sh, sym};
use iced_x86::{Decoder, DecoderOptions, Mnemonic};

/// A 4-byte displacement in the code that addresses private data relative to the next
/// instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeSite {
    /// File address of the displacement field.
    pub disp: u64,
    /// File address of the next instruction (what the displacement is relative to).
    pub next_ip: u64,
    /// File address it reaches.
    pub target: u64,
}

/// An 8-byte word outside the private range that the loader sets to a private address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataWord {
    pub at: u64,
    pub target: u64,
}

/// Every reference of the new build to its own private data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sites {
    pub code: Vec<CodeSite>,
    pub data: Vec<DataWord>,
    /// `DTPMOD64` slots naming the module itself: they must name the old module.
    pub tls_modid: Vec<u64>,
    pub instructions: usize,
}

/// Why the sites cannot be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SitesError {
    #[error("cannot decode its code: {0}")]
    Decode(String),
    #[error("{0}")]
    Unsupported(String),
}

/// Finds the sites in `f`, the new build.
///
/// Only code known to be code is decoded: each range a function symbol or an unwind entry
/// covers, from its start. Hand-written assembly (OpenSSL's perlasm, for one) keeps constant
/// tables in .text between its functions; a sweep over them reads instructions that may look
/// like references to private data, and rewriting one would corrupt the table. Bytes no symbol
/// or unwind entry covers are left as they are: such tables, and the C runtime's start-up code
/// (`deregister_tm_clones`, `__do_global_dtors_aux`: no unwind entry), whose bookkeeping stays
/// each copy's own anyway.
pub fn find(f: &FileView<'_>) -> Result<Sites, SitesError> {
    let mut out = Sites::default();
    let in_private = |a: u64| f.private_section(a).is_some();
    let starts = function_starts(f)?;
    let mut covered = Covered::default();
    for &(start, len) in &starts {
        covered.add(start, len);
    }
    covered.merge();
    let mut boundaries: Vec<u64> = Vec::new();
    let mut padding: Vec<(u64, u64)> = Vec::new();
    for s in &f.elf.section_headers {
        if s.sh_flags & u64::from(sh::SHF_EXECINSTR) == 0 || s.sh_type != sh::SHT_PROGBITS {
            continue;
        }
        let range = s
            .file_range()
            .ok_or_else(|| SitesError::Decode("an executable section has no file bytes".into()))?;
        let code = f
            .bytes
            .get(range)
            .ok_or_else(|| SitesError::Decode("an executable section lies past the end".into()))?;
        let (sec_start, sec_end) = (s.sh_addr, s.sh_addr + code.len() as u64);
        for &(from, to) in &covered.ranges {
            let (from, to) = (from.max(sec_start), to.min(sec_end));
            if from >= to {
                continue;
            }
            let bytes = &code[(from - sec_start) as usize..(to - sec_start) as usize];
            let mut dec = Decoder::with_ip(64, bytes, from, DecoderOptions::NONE);
            let mut ins = iced_x86::Instruction::default();
            while dec.can_decode() {
                dec.decode_out(&mut ins);
                out.instructions += 1;
                boundaries.push(ins.ip());
                if matches!(ins.mnemonic(), Mnemonic::Nop | Mnemonic::Int3) {
                    padding.push((ins.ip(), ins.next_ip()));
                }
                if !ins.is_ip_rel_memory_operand() {
                    continue;
                }
                let target = ins.ip_rel_memory_address();
                if !in_private(target) {
                    continue;
                }
                let offsets = dec.get_constant_offsets(&ins);
                if !offsets.has_displacement() || offsets.displacement_size() != 4 {
                    return Err(SitesError::Decode(format!(
                        "the instruction at {:#x} addresses private data without a 4-byte displacement",
                        ins.ip()
                    )));
                }
                out.code.push(CodeSite {
                    disp: ins.ip() + offsets.displacement_offset() as u64,
                    next_ip: ins.next_ip(),
                    target,
                });
            }
        }
    }
    boundaries.sort_unstable();
    padding.sort_unstable();
    check_starts(f, &starts, &boundaries, &padding)?;
    for r in &f.rels {
        if let Some(v) = r.value {
            if in_private(v) && !in_private(r.offset) {
                out.data.push(DataWord {
                    at: r.offset,
                    target: v,
                });
            }
        }
        if f.tls.is_some() && r.local {
            if is_tls_modid(r.kind) {
                out.tls_modid.push(r.offset);
            } else if is_tls_tpoff(r.kind) {
                return Err(SitesError::Unsupported(
                    "initial-exec thread-local references (R_X86_64_TPOFF64) to its own thread-local data are not supported".into(),
                ));
            } else if is_tlsdesc(r.kind) {
                return Err(SitesError::Unsupported(
                    "TLS descriptors (R_X86_64_TLSDESC) to its own thread-local data are not supported".into(),
                ));
            }
        }
    }
    Ok(out)
}

/// Function symbols and unwind entries in executable sections: (start, length).
fn function_starts(f: &FileView<'_>) -> Result<Vec<(u64, u64)>, SitesError> {
    let exec = |a: u64| {
        f.elf.section_headers.iter().any(|s| {
            s.sh_flags & u64::from(sh::SHF_EXECINSTR) != 0
                && s.sh_addr <= a
                && a < s.sh_addr + s.sh_size
        })
    };
    let funcs = f.elf.syms.iter().chain(f.elf.dynsyms.iter()).filter(|s| {
        matches!(s.st_type(), sym::STT_FUNC | sym::STT_GNU_IFUNC)
            && s.st_shndx != 0
            && s.st_size > 0
    });
    let mut out: Vec<(u64, u64)> = funcs.map(|s| (s.st_value, s.st_size)).collect();
    out.extend(fde_ranges(f)?);
    out.retain(|&(start, len)| len > 0 && exec(start));
    Ok(out)
}

/// The decoding is only trusted when every function start the file names — symbols and
/// unwind entries — is one of its instruction boundaries (else it read data as code, or code
/// as data, somewhere). A start inside padding is fine: glibc's signal trampoline's unwind
/// entry starts one byte early, inside the `nop` before it, on purpose.
fn check_starts(
    f: &FileView<'_>,
    starts: &[(u64, u64)],
    boundaries: &[u64],
    padding: &[(u64, u64)],
) -> Result<(), SitesError> {
    let on_boundary = |a: u64| {
        boundaries.binary_search(&a).is_ok() || {
            let i = padding.partition_point(|p| p.0 <= a);
            i > 0 && a < padding[i - 1].1
        }
    };
    let named = |a: u64| {
        f.elf
            .syms
            .iter()
            .chain(f.elf.dynsyms.iter())
            .any(|s| s.st_value == a)
    };
    for &(start, _) in starts {
        if !on_boundary(start) {
            let what = if named(start) {
                "function"
            } else {
                "unwind entry"
            };
            return Err(SitesError::Decode(format!(
                "the {what} at {start:#x} does not start on an instruction boundary of the code around it"
            )));
        }
    }
    Ok(())
}

/// Address ranges known to hold code: function symbols and unwind entries.
#[derive(Debug, Default)]
struct Covered {
    /// (start, end); after `merge`, sorted and disjoint.
    ranges: Vec<(u64, u64)>,
}

impl Covered {
    fn add(&mut self, start: u64, len: u64) {
        self.ranges.push((start, start.saturating_add(len)));
    }

    fn merge(&mut self) {
        self.ranges.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
        for &(s, e) in &self.ranges {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        self.ranges = out;
    }
}

/// The start address and length of every FDE in `.eh_frame`.
fn fde_ranges(f: &FileView<'_>) -> Result<Vec<(u64, u64)>, SitesError> {
    use gimli::{BaseAddresses, CieOrFde, EhFrame, LittleEndian, UnwindSection};
    let find = |name: &str| {
        f.elf
            .section_headers
            .iter()
            .find(|s| f.elf.shdr_strtab.get_at(s.sh_name) == Some(name))
    };
    let Some(eh) = find(".eh_frame") else {
        return Ok(Vec::new());
    };
    let bad = |e: gimli::Error| SitesError::Decode(format!("its .eh_frame is unreadable: {e}"));
    let bytes = eh
        .file_range()
        .and_then(|r| f.bytes.get(r))
        .ok_or_else(|| SitesError::Decode(".eh_frame lies past the end".into()))?;
    let frame = EhFrame::new(bytes, LittleEndian);
    let mut bases = BaseAddresses::default().set_eh_frame(eh.sh_addr);
    if let Some(t) = find(".text") {
        bases = bases.set_text(t.sh_addr);
    }
    if let Some(g) = find(".got") {
        bases = bases.set_got(g.sh_addr);
    }
    let mut out = Vec::new();
    let mut entries = frame.entries(&bases);
    while let Some(entry) = entries.next().map_err(bad)? {
        if let CieOrFde::Fde(partial) = entry {
            let fde = partial
                .parse(|s, b, o| s.cie_from_offset(b, o))
                .map_err(bad)?;
            out.push((fde.initial_address(), fde.len()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libc_code_reaches_its_private_data() {
        let bytes = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        let f = FileView::parse(&bytes).unwrap();
        let s = find(&f).unwrap_err();
        // glibc reaches its own TLS through initial-exec slots: refused, not guessed.
        assert!(s.to_string().contains("TPOFF64"), "{s}");
    }

    /// OpenSSL's perlasm keeps constant tables in .text between functions (SHA-256's `K256`,
    /// AES's S-boxes): a sweep through them lost step with the code ("does not start on an
    /// instruction boundary") and could read a table as a reference to private data. Decoding
    /// only what symbols and unwind entries cover finds the sites and leaves the tables alone.
    #[test]
    fn openssl_tables_in_text_are_not_read_as_code() {
        let bytes = std::fs::read("/lib/x86_64-linux-gnu/libcrypto.so.3").unwrap();
        let f = FileView::parse(&bytes).unwrap();
        let s = find(&f).unwrap();
        assert!(s.code.len() > 100, "{}", s.code.len());
        let mut covered = Covered::default();
        for (start, len) in function_starts(&f).unwrap() {
            covered.add(start, len);
        }
        covered.merge();
        for c in &s.code {
            let i = covered.ranges.partition_point(|r| r.0 <= c.disp);
            assert!(
                i > 0 && c.disp < covered.ranges[i - 1].1,
                "{c:?} outside every function"
            );
        }
    }

    #[test]
    fn zlib_sweep_agrees_with_its_unwind_table() {
        let bytes = std::fs::read("/lib/x86_64-linux-gnu/libz.so.1").unwrap();
        let f = FileView::parse(&bytes).unwrap();
        let s = find(&f).unwrap();
        assert!(s.instructions > 10_000, "{}", s.instructions);
        assert!(!fde_ranges(&f).unwrap().is_empty());
        for c in &s.code {
            assert!(f.private_section(c.target).is_some());
            assert!(c.disp < c.next_ip && c.next_ip - c.disp <= 8);
        }
    }
}
