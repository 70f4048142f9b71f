//! The code a target runs, read from its memory and compared with the file it was mapped from:
//! a switch that left an `int3` at a function's entry makes every call to it a SIGTRAP (slow,
//! and fatal if the agent ever forgot the trap), and nothing else shows it.

use std::path::Path;

/// Where `file` is mapped in process `pid`: (start, file offset) of each of its mappings.
fn mappings_of(pid: u32, file: &Path) -> Vec<(u64, u64, u64)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read the maps");
    let want = std::fs::canonicalize(file).expect("canonical path of the module");
    maps.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f.get(5)?;
            if Path::new(path) != want {
                return None;
            }
            let (lo, hi) = f[0].split_once('-')?;
            Some((
                u64::from_str_radix(lo, 16).ok()?,
                u64::from_str_radix(hi, 16).ok()?,
                u64::from_str_radix(f[2], 16).ok()?,
            ))
        })
        .collect()
}

/// The exported functions of `file` (a shared library mapped in `pid`) whose first byte in the
/// process is `int3` while the file's is not.
pub fn entries_holding_int3(pid: u32, file: &Path) -> Vec<String> {
    let bytes = std::fs::read(file).expect("read the module");
    let elf = goblin::elf::Elf::parse(&bytes).expect("parse the module");
    let maps = mappings_of(pid, file);
    // The load bias: the mapping of file offset 0 starts at the first PT_LOAD's page.
    let first_load = elf
        .program_headers
        .iter()
        .find(|p| p.p_type == goblin::elf::program_header::PT_LOAD)
        .expect("a PT_LOAD");
    let base = maps
        .iter()
        .find(|m| m.2 == 0)
        .map(|m| m.0 - (first_load.p_vaddr & !0xfff))
        .expect("the module is mapped in the process");
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open the process's memory");
    let mut found = Vec::new();
    for sym in elf.dynsyms.iter() {
        if sym.st_type() != goblin::elf::sym::STT_FUNC || sym.st_value == 0 || sym.st_size == 0 {
            continue;
        }
        let Some(off) = elf.program_headers.iter().find_map(|p| {
            (p.p_type == goblin::elf::program_header::PT_LOAD
                && p.p_vaddr <= sym.st_value
                && sym.st_value < p.p_vaddr + p.p_filesz)
                .then(|| p.p_offset + (sym.st_value - p.p_vaddr))
        }) else {
            continue;
        };
        let mut b = [0u8; 1];
        if std::os::unix::fs::FileExt::read_exact_at(&mem, &mut b, base + sym.st_value).is_err() {
            continue;
        }
        if b[0] == 0xCC && bytes[off as usize] != 0xCC {
            found.push(elf.dynstrtab.get_at(sym.st_name).unwrap_or("?").to_string());
        }
    }
    found.sort();
    found.dedup();
    found
}
