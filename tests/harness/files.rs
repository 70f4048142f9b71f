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

    /// Reads a little-endian u64 at `off`.
    pub fn read_u64(bytes: &[u8], off: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[off..off + 8]);
        u64::from_le_bytes(b)
    }
}
