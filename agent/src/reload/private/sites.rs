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
pub fn find(f: &FileView<'_>) -> Result<Sites, SitesError> {
    let mut out = Sites::default();
    let in_private = |a: u64| f.private_section(a).is_some();
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
        let mut dec = Decoder::with_ip(64, code, s.sh_addr, DecoderOptions::NONE);
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
    boundaries.sort_unstable();
    padding.sort_unstable();
    check_starts(f, &boundaries, &padding)?;
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

/// A linear sweep is only trusted when every function start the file names — symbols and
/// unwind entries — is one of its instruction boundaries (else it read data as code, or code
/// as data, somewhere). A start inside padding is fine: glibc's signal trampoline's unwind
/// entry starts one byte early, inside the `nop` before it, on purpose.
fn check_starts(
    f: &FileView<'_>,
    boundaries: &[u64],
    padding: &[(u64, u64)],
) -> Result<(), SitesError> {
    let on_boundary = |a: u64| {
        boundaries.binary_search(&a).is_ok() || {
            let i = padding.partition_point(|p| p.0 <= a);
            i > 0 && a < padding[i - 1].1
        }
    };
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
    for s in funcs {
        if exec(s.st_value) && !on_boundary(s.st_value) {
            return Err(SitesError::Decode(format!(
                "function at {:#x} does not start on an instruction boundary of a linear sweep",
                s.st_value
            )));
        }
    }
    for start in fde_starts(f)? {
        if exec(start) && !on_boundary(start) {
            return Err(SitesError::Decode(format!(
                "the unwind entry for {start:#x} does not start on an instruction boundary of a linear sweep"
            )));
        }
    }
    Ok(())
}

/// The start address of every FDE in `.eh_frame`.
fn fde_starts(f: &FileView<'_>) -> Result<Vec<u64>, SitesError> {
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
            out.push(fde.initial_address());
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

    #[test]
    fn zlib_sweep_agrees_with_its_unwind_table() {
        let bytes = std::fs::read("/lib/x86_64-linux-gnu/libz.so.1").unwrap();
        let f = FileView::parse(&bytes).unwrap();
        let s = find(&f).unwrap();
        assert!(s.instructions > 10_000, "{}", s.instructions);
        assert!(!fde_starts(&f).unwrap().is_empty());
        for c in &s.code {
            assert!(f.private_section(c.target).is_some());
            assert!(c.disp < c.next_ip && c.next_ip - c.disp <= 8);
        }
    }
}
