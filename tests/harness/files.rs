//! File helpers: atomic replacement (a mapped library must never be overwritten in place) and
//! crafting broken ELF files from real ones.

use std::path::{Path, PathBuf};

/// A fresh temporary folder for a test's own files.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("hotagent-it-files-")
        .tempdir()
        .expect("create a scratch folder")
}

/// Writes `bytes` to a temporary name next to `dst`, then renames it over `dst`.
pub fn write_atomic(dst: &Path, bytes: &[u8]) {
    let tmp = tmp_beside(dst);
    std::fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, dst).unwrap_or_else(|e| panic!("rename to {}: {e}", dst.display()));
}

/// Copies `src` to `dst` through a temporary name and a rename (so a process that has `dst`
/// mapped keeps its old bytes, and `dst` becomes a new file).
pub fn copy_atomic(src: &Path, dst: &Path) {
    let tmp = tmp_beside(dst);
    std::fs::copy(src, &tmp)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), tmp.display()));
    std::fs::rename(&tmp, dst).unwrap_or_else(|e| panic!("rename to {}: {e}", dst.display()));
}

fn tmp_beside(dst: &Path) -> PathBuf {
    let name = dst.file_name().unwrap_or_default().to_string_lossy();
    dst.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Writes a copy of `src` to `dst` with some bytes replaced: `(offset, new bytes)`.
pub fn patched_copy(src: &Path, dst: &Path, patches: &[(usize, &[u8])]) {
    let mut bytes = std::fs::read(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
    for (off, new) in patches {
        bytes[*off..*off + new.len()].copy_from_slice(new);
    }
    write_atomic(dst, &bytes);
}

/// Writes the first `len` bytes of `src` to `dst`.
pub fn truncated_copy(src: &Path, dst: &Path, len: usize) {
    let bytes = std::fs::read(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
    write_atomic(dst, &bytes[..len.min(bytes.len())]);
}

/// Offsets in the ELF64 header.
pub mod elf {
    /// `EI_CLASS`: 1 = 32-bit, 2 = 64-bit.
    pub const EI_CLASS: usize = 4;
    /// `EI_DATA`: 1 = little endian, 2 = big endian.
    pub const EI_DATA: usize = 5;
    /// `e_type` (2 bytes): 2 = EXEC, 3 = DYN.
    pub const E_TYPE: usize = 16;
    /// `e_machine` (2 bytes).
    pub const E_MACHINE: usize = 18;
    /// `e_phoff` (8 bytes).
    pub const E_PHOFF: usize = 32;
    /// `e_phnum` (2 bytes).
    pub const E_PHNUM: usize = 56;
    /// `EM_AARCH64`.
    pub const EM_AARCH64: u16 = 183;
    /// Size of the ELF64 header.
    pub const EHDR_SIZE: usize = 64;

    /// `e_phentsize` (2 bytes).
    pub const E_PHENTSIZE: usize = 54;
    /// `p_type` of a loadable segment.
    pub const PT_LOAD: u32 = 1;
    /// `p_type` of the dynamic segment.
    pub const PT_DYNAMIC: u32 = 2;
    /// `p_flags` bit of an executable segment.
    pub const PF_X: u32 = 1;
    /// Dynamic tags (`d_tag` of an `Elf64_Dyn`).
    pub const DT_NULL: u64 = 0;
    pub const DT_RELA: u64 = 7;
    pub const DT_RELASZ: u64 = 8;
    pub const DT_STRSZ: u64 = 10;
    pub const DT_INIT: u64 = 12;
    pub const DT_SONAME: u64 = 14;
    pub const DT_BIND_NOW: u64 = 24;
    pub const DT_INIT_ARRAY: u64 = 25;
    pub const DT_INIT_ARRAYSZ: u64 = 27;
    pub const DT_FINI_ARRAYSZ: u64 = 28;
    pub const DT_RELACOUNT: u64 = 0x6fff_fff9;
    /// Relocation types (`r_info` of a relocation against symbol 0).
    pub const R_X86_64_64: u64 = 1;
    pub const R_X86_64_RELATIVE: u64 = 8;
    /// Size of an `Elf64_Dyn` (tag, value) and of an `Elf64_Rela` (offset, info, addend).
    pub const DYN_SIZE: usize = 16;
    pub const RELA_SIZE: usize = 24;

    /// Reads a little-endian u16 at `off`.
    pub fn read_u16(bytes: &[u8], off: usize) -> u16 {
        u16::from_le_bytes([bytes[off], bytes[off + 1]])
    }

    /// Reads a little-endian u32 at `off`.
    pub fn read_u32(bytes: &[u8], off: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[off..off + 4]);
        u32::from_le_bytes(b)
    }

    /// Reads a little-endian u64 at `off`.
    pub fn read_u64(bytes: &[u8], off: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[off..off + 8]);
        u64::from_le_bytes(b)
    }

    /// Writes a little-endian u64 at `off`.
    pub fn write_u64(bytes: &mut [u8], off: usize, v: u64) {
        bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    pub const PT_GNU_RELRO: u32 = 0x6474_e552;
    pub const DT_GNU_HASH: u64 = 0x6fff_fef5;

    /// One `Elf64_Phdr`.
    #[derive(Debug, Clone, Copy)]
    pub struct Phdr {
        pub p_type: u32,
        pub p_flags: u32,
        pub p_offset: u64,
        pub p_vaddr: u64,
        pub p_filesz: u64,
        pub p_memsz: u64,
    }

    /// The program headers of a well-formed little-endian ELF64 file.
    pub fn program_headers(bytes: &[u8]) -> Vec<Phdr> {
        let phoff = read_u64(bytes, E_PHOFF) as usize;
        let phentsize = read_u16(bytes, E_PHENTSIZE) as usize;
        let phnum = read_u16(bytes, E_PHNUM) as usize;
        assert_eq!(phentsize, 56, "not an ELF64 program header size");
        (0..phnum)
            .map(|i| {
                let at = phoff + i * phentsize;
                Phdr {
                    p_type: read_u32(bytes, at),
                    p_flags: read_u32(bytes, at + 4),
                    p_offset: read_u64(bytes, at + 8),
                    p_vaddr: read_u64(bytes, at + 16),
                    p_filesz: read_u64(bytes, at + 32),
                    p_memsz: read_u64(bytes, at + 40),
                }
            })
            .collect()
    }

    /// Moves the first program header of type `p_type` to `vaddr` (its file offset unchanged).
    pub fn set_segment_vaddr(bytes: &mut [u8], p_type: u32, vaddr: u64) {
        let phoff = read_u64(bytes, E_PHOFF) as usize;
        let i = program_headers(bytes)
            .iter()
            .position(|p| p.p_type == p_type)
            .unwrap_or_else(|| panic!("no program header of type {p_type:#x}"));
        write_u64(bytes, phoff + i * 56 + 16, vaddr);
    }

    /// Sets the memory size of the `n`th loadable segment (counting from 0).
    pub fn set_load_memsz(bytes: &mut [u8], n: usize, memsz: u64) {
        let phoff = read_u64(bytes, E_PHOFF) as usize;
        let i = program_headers(bytes)
            .iter()
            .enumerate()
            .filter(|(_, p)| p.p_type == PT_LOAD)
            .nth(n)
            .unwrap_or_else(|| panic!("no loadable segment #{n}"))
            .0;
        write_u64(bytes, phoff + i * 56 + 40, memsz);
    }

    /// Sets the `symoffset` word of the GNU hash table (the index of its first hashed symbol).
    pub fn set_gnu_hash_symoffset(bytes: &mut [u8], symoffset: u32) {
        let table = dynamic_entry(bytes, DT_GNU_HASH).val;
        let at = vaddr_to_offset(bytes, table).expect("the GNU hash table is in the file") + 4;
        bytes[at..at + 4].copy_from_slice(&symoffset.to_le_bytes());
    }

    /// The file offset that holds the byte loaded at `vaddr`, if a loadable segment maps it from
    /// the file.
    pub fn vaddr_to_offset(bytes: &[u8], vaddr: u64) -> Option<usize> {
        program_headers(bytes)
            .iter()
            .filter(|p| p.p_type == PT_LOAD)
            .find(|p| vaddr >= p.p_vaddr && vaddr < p.p_vaddr + p.p_filesz)
            .map(|p| (vaddr - p.p_vaddr + p.p_offset) as usize)
    }

    /// Whether `vaddr` lies in an executable loadable segment.
    pub fn in_code(bytes: &[u8], vaddr: u64) -> bool {
        program_headers(bytes).iter().any(|p| {
            p.p_type == PT_LOAD
                && p.p_flags & PF_X != 0
                && vaddr >= p.p_vaddr
                && vaddr < p.p_vaddr + p.p_memsz
        })
    }

    /// One `Elf64_Dyn` entry, with where it sits in the file.
    #[derive(Debug, Clone, Copy)]
    pub struct Dyn {
        /// File offset of the entry (its tag; the value follows 8 bytes later).
        pub at: usize,
        pub tag: u64,
        pub val: u64,
    }

    /// The entries of the PT_DYNAMIC segment, up to (not including) the first DT_NULL.
    pub fn dynamic_entries(bytes: &[u8]) -> Vec<Dyn> {
        let dynamic = program_headers(bytes)
            .into_iter()
            .find(|p| p.p_type == PT_DYNAMIC)
            .expect("a PT_DYNAMIC segment");
        let start = dynamic.p_offset as usize;
        let end = start + dynamic.p_filesz as usize;
        (start..end)
            .step_by(DYN_SIZE)
            .take_while(|&at| at + DYN_SIZE <= end)
            .map(|at| Dyn {
                at,
                tag: read_u64(bytes, at),
                val: read_u64(bytes, at + 8),
            })
            .take_while(|d| d.tag != DT_NULL)
            .collect()
    }

    /// The one dynamic entry with this tag (panics if there is none or more than one).
    pub fn dynamic_entry(bytes: &[u8], tag: u64) -> Dyn {
        let found: Vec<Dyn> = dynamic_entries(bytes)
            .into_iter()
            .filter(|d| d.tag == tag)
            .collect();
        assert_eq!(found.len(), 1, "dynamic tag {tag} should appear once");
        found[0]
    }

    /// Rewrites the tag of the dynamic entry tagged `from`.
    pub fn retag_dynamic(bytes: &mut [u8], from: u64, to: u64) {
        let d = dynamic_entry(bytes, from);
        write_u64(bytes, d.at, to);
    }

    /// Rewrites the value of the dynamic entry tagged `tag`.
    pub fn set_dynamic_value(bytes: &mut [u8], tag: u64, val: u64) {
        let d = dynamic_entry(bytes, tag);
        write_u64(bytes, d.at + 8, val);
    }
}
