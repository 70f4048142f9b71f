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

/// Read and hashed this many bytes at a time: the copy is never mapped whole.
const CHUNK: usize = 64 << 10;

/// The facts of `copy`, read through its descriptor; `None` when it cannot be read (the reload
/// then fails anyway).
pub fn of(copy: &Sealed) -> Option<StagedFacts> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut head = Vec::new();
    let mut at = 0u64;
    loop {
        let n = match copy.read_at(&mut buf, at) {
            Ok(0) => break,
            Ok(n) => n,
            Err(libc::EINTR) => continue,
            Err(_) => return None,
        };
        hash.update(&buf[..n]);
        if head.is_empty() {
            head = buf[..n].to_vec();
        }
        at += n as u64;
    }
    let read = |off: u64, len: usize| {
        let mut b = vec![0u8; len];
        let n = copy.read_at(&mut b, off).ok()?;
        (n == len).then_some(b)
    };
    Some(StagedFacts {
        size: at,
        sha256: hex(&hash.finalize()),
        build_id: build_id(&head, read).map(|b| hex(&b)),
    })
}

/// The facts of bytes in memory: what [`of`] must agree with.
#[cfg(test)]
pub fn of_bytes(bytes: &[u8]) -> StagedFacts {
    let read = |off: u64, len: usize| {
        let start = usize::try_from(off).ok()?;
        Some(bytes.get(start..start.checked_add(len)?)?.to_vec())
    };
    StagedFacts {
        size: bytes.len() as u64,
        sha256: hex(&Sha256::digest(bytes)),
        build_id: build_id(bytes, read).map(|b| hex(&b)),
    }
}

/// The build-id from the `PT_NOTE` segments alone (no symbol table is parsed for it): the
/// header and program headers from `head`, the notes read with `read(offset, len)`.
fn build_id(head: &[u8], read: impl Fn(u64, usize) -> Option<Vec<u8>>) -> Option<Vec<u8>> {
    let header = Elf::parse_header(head).ok()?;
    // x86-64 only (64-bit, little-endian), like everything the agent loads.
    if header.e_ident[4] != 2 || header.e_ident[5] != 1 {
        return None;
    }
    let ctx = goblin::container::Ctx::default();
    let phdrs =
        ProgramHeader::parse(head, header.e_phoff as usize, header.e_phnum as usize, ctx).ok()?;
    phdrs.iter().filter(|p| p.p_type == PT_NOTE).find_map(|p| {
        // Notes are a few dozen bytes; anything far larger is not a note segment to trust.
        let len = usize::try_from(p.p_filesz).ok().filter(|&n| n <= CHUNK)?;
        super::private::build_id_in_notes(&read(p.p_offset, len)?)
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

    fn staged(path: &str) -> (Sealed, Vec<u8>) {
        let path = std::fs::canonicalize(path).unwrap();
        let path = path.to_str().unwrap();
        (
            super::super::stage::stage(path, None).unwrap(),
            std::fs::read(path).unwrap(),
        )
    }

    /// Read through the descriptor in chunks, the copy gives what its bytes give.
    #[test]
    fn the_staged_copy_gives_the_facts_of_its_bytes() {
        let (copy, bytes) = staged("/lib/x86_64-linux-gnu/libc.so.6");
        let facts = of(&copy).unwrap();
        assert_eq!(facts, of_bytes(&bytes));
        assert!(
            facts.size > CHUNK as u64 && facts.build_id.is_some(),
            "{facts:?}"
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
            let (copy, bytes) = staged(path);
            let t = std::time::Instant::now();
            let rounds = 20;
            for _ in 0..rounds {
                std::hint::black_box(of(&copy));
            }
            let each = t.elapsed() / rounds;
            println!("{path}: {} bytes, {each:?} per file", bytes.len());
        }
    }
}
