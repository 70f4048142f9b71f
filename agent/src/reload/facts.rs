//! What identifies a staged patch in the history: its size, SHA-256 and build-id, taken once
//! from the sealed copy — the bytes that were checked and loaded, not what the path holds later.

use crate::sys::sealed::Sealed;
use goblin::elf::program_header::{ProgramHeader, PT_NOTE};
use goblin::elf::Elf;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFacts {
    pub size: u64,
    /// Lower-case hex, as `sha256sum` prints it.
    pub sha256: String,
    pub build_id: Option<String>,
}

/// The facts of `copy`; `None` only when it cannot be mapped (the reload then fails anyway).
pub fn of(copy: &Sealed) -> Option<StagedFacts> {
    let map = copy.map().ok()?;
    Some(of_bytes(map.bytes()))
}

pub fn of_bytes(bytes: &[u8]) -> StagedFacts {
    StagedFacts {
        size: bytes.len() as u64,
        sha256: hex(&Sha256::digest(bytes)),
        build_id: build_id(bytes).map(|b| hex(&b)),
    }
}

/// The build-id from the `PT_NOTE` segments alone: no symbol table is parsed for it.
fn build_id(bytes: &[u8]) -> Option<Vec<u8>> {
    let header = Elf::parse_header(bytes).ok()?;
    // x86-64 only (64-bit, little-endian), like everything the agent loads.
    if header.e_ident[4] != 2 || header.e_ident[5] != 1 {
        return None;
    }
    let ctx = goblin::container::Ctx::default();
    let phdrs =
        ProgramHeader::parse(bytes, header.e_phoff as usize, header.e_phnum as usize, ctx).ok()?;
    phdrs.iter().filter(|p| p.p_type == PT_NOTE).find_map(|p| {
        let start = usize::try_from(p.p_offset).ok()?;
        let end = start.checked_add(usize::try_from(p.p_filesz).ok()?)?;
        super::private::build_id_in_notes(bytes.get(start..end)?)
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_sha256sum_and_reads_the_build_id() {
        let f = of_bytes(b"abc");
        assert_eq!(
            f.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!((f.size, f.build_id), (3, None));
        let me = std::fs::read("/proc/self/exe").unwrap();
        let id = of_bytes(&me).build_id;
        assert!(
            id.is_some_and(|id| id.len() >= 16),
            "no build-id in the test binary"
        );
    }

    /// What the history's facts add to a reload's stage step (`--ignored --nocapture`).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn measure_cost_of_facts() {
        for path in [
            "/lib/x86_64-linux-gnu/libz.so.1",
            "/lib/x86_64-linux-gnu/libc.so.6",
        ] {
            let bytes = std::fs::read(path).unwrap();
            let t = std::time::Instant::now();
            let rounds = 20;
            for _ in 0..rounds {
                std::hint::black_box(of_bytes(&bytes));
            }
            let each = t.elapsed() / rounds;
            println!("{path}: {} bytes, {each:?} per file", bytes.len());
        }
    }
}
