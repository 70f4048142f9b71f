//! Whether a file holds a whole ELF shared object: what `hotctl watch` asks of a rebuild before it
//! loads it. A linker writes the headers first and the section header table last, so a file cut
//! short anywhere fails one of these checks.

use goblin::elf::{header, section_header, Elf};

/// Why the bytes are not (yet) a complete shared object.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Incomplete {
    #[error("it does not parse as ELF: {0}")]
    Parse(String),
    #[error("not a shared object (ELF type {0})")]
    NotShared(u16),
    #[error("{what} ends at byte {end}, past the end of the file ({len} bytes)")]
    Truncated {
        what: &'static str,
        end: u64,
        len: u64,
    },
    #[error("no section header table (a linker writes it last)")]
    NoSections,
}

pub fn check(bytes: &[u8]) -> Result<(), Incomplete> {
    let elf = Elf::parse(bytes).map_err(|e| Incomplete::Parse(e.to_string()))?;
    if elf.header.e_type != header::ET_DYN {
        return Err(Incomplete::NotShared(elf.header.e_type));
    }
    let len = bytes.len() as u64;
    let within = |what, offset: u64, size: u64| {
        let end = offset.saturating_add(size);
        if end > len {
            Err(Incomplete::Truncated { what, end, len })
        } else {
            Ok(())
        }
    };
    if elf.header.e_shnum == 0 || elf.section_headers.is_empty() {
        return Err(Incomplete::NoSections);
    }
    within(
        "the section header table",
        elf.header.e_shoff,
        u64::from(elf.header.e_shnum) * u64::from(elf.header.e_shentsize),
    )?;
    for ph in &elf.program_headers {
        within("a segment", ph.p_offset, ph.p_filesz)?;
    }
    for sh in &elf.section_headers {
        if sh.sh_type != section_header::SHT_NOBITS {
            within("a section", sh.sh_offset, sh.sh_size)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hotctl itself is an ELF executable; its own bytes serve for the truncation cases.
    fn own_bytes() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    #[test]
    fn an_executable_is_not_a_shared_object_and_halves_are_incomplete() {
        let bytes = own_bytes();
        // A PIE test binary is ET_DYN too; either way, the whole file parses.
        match check(&bytes) {
            Ok(()) | Err(Incomplete::NotShared(_)) => {}
            Err(other) => panic!("the whole file: {other}"),
        }
        let half = &bytes[..bytes.len() / 2];
        assert!(check(half).is_err());
        assert!(check(&bytes[..64]).is_err());
        assert!(matches!(check(b"garbage"), Err(Incomplete::Parse(_))));
    }
}
