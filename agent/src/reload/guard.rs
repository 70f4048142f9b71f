//! Structural checks of a patch file: the loader trusts what an ELF file says (segment ranges,
//! dynamic entries, relocation targets) and faults inside `dlopen` when it lies, taking the
//! target down with it. Each check here answers a corruption seen to crash the loader.

use goblin::elf::{dynamic, program_header as ph, reloc, Elf};

/// Dynamic tags the loader reads as a pointer, each with the tag that must give its size.
const NEEDS_SIZE: &[(u64, u64, &str)] = &[
    (
        dynamic::DT_INIT_ARRAY,
        dynamic::DT_INIT_ARRAYSZ,
        "init array",
    ),
    (
        dynamic::DT_FINI_ARRAY,
        dynamic::DT_FINI_ARRAYSZ,
        "fini array",
    ),
    (dynamic::DT_STRTAB, dynamic::DT_STRSZ, "string table"),
    (dynamic::DT_RELA, dynamic::DT_RELASZ, "relocation table"),
    (
        dynamic::DT_JMPREL,
        dynamic::DT_PLTRELSZ,
        "PLT relocation table",
    ),
];
/// DT_RELR, DT_RELRSZ, DT_RELRENT and friends end the generic range here.
const LAST_GENERIC_TAG: u64 = 37;
const OS_TAGS: std::ops::RangeInclusive<u64> = 0x6000_000d..=0x6fff_ffff;
const PROC_TAGS: std::ops::RangeInclusive<u64> = 0x7000_0000..=0x7fff_ffff;

/// Which structural check refused a patch file, and what it found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StructureError {
    #[error("{0}")]
    Segments(String),
    #[error("{0}")]
    Dynamic(String),
    #[error("{0}")]
    Relocations(String),
    #[error("{0}")]
    HashTable(String),
}

pub fn check_structure(elf: &Elf<'_>, bytes: &[u8]) -> Result<(), StructureError> {
    check_segments(elf, bytes.len() as u64)?;
    check_dynamic(elf)?;
    check_relocations(elf)?;
    check_hash_tables(elf, bytes)
}

/// The bytes loaded at `vaddr` (through the end of their segment's file image).
fn at_vaddr<'b>(elf: &Elf<'_>, bytes: &'b [u8], vaddr: u64) -> Option<&'b [u8]> {
    let l = loads(elf)
        .into_iter()
        .find(|l| vaddr >= l.p_vaddr && vaddr < l.p_vaddr.saturating_add(l.p_filesz))?;
    let start = usize::try_from(l.p_offset.checked_add(vaddr - l.p_vaddr)?).ok()?;
    let end = usize::try_from(l.p_offset.checked_add(l.p_filesz)?).ok()?;
    bytes.get(start..end)
}

fn word(table: &[u8], i: usize) -> Option<u32> {
    let b = table.get(i.checked_mul(4)?..i.checked_mul(4)?.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

/// The loader walks these tables for every lookup in the library — `dlsym`, and any symbol
/// search that reaches it later — trusting every count and index in them.
fn check_hash_tables(elf: &Elf<'_>, bytes: &[u8]) -> Result<(), StructureError> {
    let Some(d) = &elf.dynamic else { return Ok(()) };
    let tag = |t: u64| d.dyns.iter().find(|e| e.d_tag == t).map(|e| e.d_val);
    let nsyms = elf.dynsyms.len();
    let bad = |what: &str| {
        StructureError::HashTable(format!("corrupted: the {what} hash table is inconsistent"))
    };
    if let Some(addr) = tag(dynamic::DT_GNU_HASH) {
        let t = at_vaddr(elf, bytes, addr).ok_or_else(|| bad("GNU"))?;
        let (nbuckets, symoffset, bloom_words) = (|| {
            Some((
                word(t, 0)? as usize,
                word(t, 1)? as usize,
                word(t, 2)? as usize,
            ))
        })()
        .ok_or_else(|| bad("GNU"))?;
        if nbuckets == 0 || bloom_words == 0 || symoffset > nsyms {
            return Err(bad("GNU"));
        }
        // Header (4 words), bloom (64-bit words), buckets, then one chain word per symbol past
        // symoffset.
        let buckets = 4 + bloom_words.checked_mul(2).ok_or_else(|| bad("GNU"))?;
        let chains = buckets.checked_add(nbuckets).ok_or_else(|| bad("GNU"))?;
        for b in 0..nbuckets {
            let first = word(t, buckets + b).ok_or_else(|| bad("GNU"))? as usize;
            if first == 0 {
                continue;
            }
            if first < symoffset || first >= nsyms {
                return Err(bad("GNU"));
            }
            let mut i = first;
            loop {
                let h = word(t, chains + (i - symoffset)).ok_or_else(|| bad("GNU"))?;
                if h & 1 != 0 {
                    break;
                }
                i += 1;
                if i >= nsyms {
                    return Err(bad("GNU"));
                }
            }
        }
    }
    if let Some(addr) = tag(dynamic::DT_HASH) {
        let t = at_vaddr(elf, bytes, addr).ok_or_else(|| bad("SysV"))?;
        let nbucket = word(t, 0).ok_or_else(|| bad("SysV"))? as usize;
        let nchain = word(t, 1).ok_or_else(|| bad("SysV"))? as usize;
        if nbucket == 0 || nchain > nsyms.max(1) {
            return Err(bad("SysV"));
        }
        for i in 0..nbucket.saturating_add(nchain) {
            if word(t, 2 + i).ok_or_else(|| bad("SysV"))? as usize >= nchain {
                return Err(bad("SysV"));
            }
        }
    }
    Ok(())
}

pub fn inside(load: &ph::ProgramHeader, addr: u64, size: u64) -> bool {
    addr >= load.p_vaddr
        && addr
            .checked_add(size)
            .is_some_and(|e| e <= load.p_vaddr.saturating_add(load.p_memsz))
}

fn loads<'e>(elf: &'e Elf<'_>) -> Vec<&'e ph::ProgramHeader> {
    elf.program_headers
        .iter()
        .filter(|p| p.p_type == ph::PT_LOAD)
        .collect()
}

fn in_image(loads: &[&ph::ProgramHeader], addr: u64, size: u64) -> bool {
    loads.iter().any(|l| inside(l, addr, size))
}

fn in_code(loads: &[&ph::ProgramHeader], addr: u64) -> bool {
    loads
        .iter()
        .any(|l| l.p_flags & ph::PF_X != 0 && inside(l, addr, 1))
}

/// Segments past the end of the file (truncation) or with inconsistent alignment.
fn check_segments(elf: &Elf<'_>, len: u64) -> Result<(), StructureError> {
    let loads = loads(elf);
    if loads.is_empty() {
        return Err(StructureError::Segments("no loadable segment".to_string()));
    }
    for p in elf.program_headers.iter() {
        let end = p
            .p_offset
            .checked_add(p.p_filesz)
            .ok_or(StructureError::Segments("segment range overflows".into()))?;
        if end > len {
            return Err(StructureError::Segments(format!(
                "truncated: a segment ends at byte {end} but the file has {len} bytes"
            )));
        }
        if p.p_type != ph::PT_LOAD {
            continue;
        }
        if p.p_filesz > p.p_memsz {
            return Err(StructureError::Segments(
                "corrupted: a segment is larger on disk than in memory".to_string(),
            ));
        }
        if p.p_align > 1
            && (!p.p_align.is_power_of_two()
                || (p.p_vaddr.wrapping_sub(p.p_offset)) % p.p_align != 0)
        {
            return Err(StructureError::Segments(
                "corrupted: a segment's alignment is inconsistent".to_string(),
            ));
        }
    }
    // glibc reserves one span from the first segment's start to the last one's end and maps
    // each segment into it: segments out of order or overlapping (a grown memory size) would map
    // zero pages over whatever lies next to the library in the target.
    for pair in loads.windows(2) {
        let end = pair[0]
            .p_vaddr
            .checked_add(pair[0].p_memsz)
            .ok_or(StructureError::Segments("segment range overflows".into()))?;
        if end > pair[1].p_vaddr {
            return Err(StructureError::Segments(
                "corrupted: loadable segments overlap or are out of order".to_string(),
            ));
        }
    }
    // The loader acts on these ranges too (RELRO is made read-only after relocation): one
    // outside the image would change some other mapping of the target.
    for p in elf.program_headers.iter() {
        let what = match p.p_type {
            ph::PT_GNU_RELRO => "RELRO range",
            ph::PT_TLS => "TLS template",
            ph::PT_GNU_EH_FRAME => "unwind table",
            _ => continue,
        };
        if p.p_memsz != 0 && !in_image(&loads, p.p_vaddr, p.p_memsz) {
            return Err(StructureError::Segments(format!(
                "corrupted: the {what} lies outside every loadable segment"
            )));
        }
    }
    let dynamic = elf
        .program_headers
        .iter()
        .find(|p| p.p_type == ph::PT_DYNAMIC)
        .ok_or(StructureError::Segments("no PT_DYNAMIC segment".into()))?;
    if !in_image(&loads, dynamic.p_vaddr, dynamic.p_memsz) {
        return Err(StructureError::Segments(
            "corrupted: the dynamic section lies outside every loadable segment".to_string(),
        ));
    }
    Ok(())
}

/// Unknown tags, pointers without their sizes, tables outside the image, constructors outside code.
fn check_dynamic(elf: &Elf<'_>) -> Result<(), StructureError> {
    let Some(d) = &elf.dynamic else {
        return Err(StructureError::Dynamic("no dynamic section".to_string()));
    };
    let loads = loads(elf);
    let tag = |t: u64| d.dyns.iter().find(|e| e.d_tag == t).map(|e| e.d_val);
    for e in &d.dyns {
        let known = e.d_tag <= LAST_GENERIC_TAG
            || OS_TAGS.contains(&e.d_tag)
            || PROC_TAGS.contains(&e.d_tag);
        if !known {
            return Err(StructureError::Dynamic(format!(
                "corrupted: unknown dynamic tag {:#x}",
                e.d_tag
            )));
        }
    }
    if tag(dynamic::DT_PREINIT_ARRAY).is_some() {
        return Err(StructureError::Dynamic(
            "a shared library with a preinit array (only executables may have one)".to_string(),
        ));
    }
    for &(ptr, size, what) in NEEDS_SIZE {
        match (tag(ptr), tag(size)) {
            (Some(_), None) => {
                return Err(StructureError::Dynamic(format!(
                    "corrupted: the {what} has no size entry"
                )))
            }
            (Some(addr), Some(n)) if n != 0 && !in_image(&loads, addr, n) => {
                return Err(StructureError::Dynamic(format!(
                    "corrupted: the {what} lies outside every loadable segment"
                )))
            }
            _ => {}
        }
    }
    for (t, what) in [
        (dynamic::DT_SYMTAB, "symbol table"),
        (dynamic::DT_GNU_HASH, "hash table"),
        (dynamic::DT_HASH, "hash table"),
    ] {
        if let Some(addr) = tag(t) {
            if !in_image(&loads, addr, 1) {
                return Err(StructureError::Dynamic(format!(
                    "corrupted: the {what} lies outside every loadable segment"
                )));
            }
        }
    }
    if tag(dynamic::DT_SYMTAB).is_none() || tag(dynamic::DT_STRTAB).is_none() {
        return Err(StructureError::Dynamic(
            "no dynamic symbol table".to_string(),
        ));
    }
    check_strings(elf, d)?;
    for (t, what) in [
        (dynamic::DT_INIT, "initialiser"),
        (dynamic::DT_FINI, "finaliser"),
    ] {
        if let Some(addr) = tag(t) {
            if !in_code(&loads, addr) {
                return Err(StructureError::Dynamic(format!(
                    "corrupted: the {what} at {addr:#x} is not in executable code"
                )));
            }
        }
    }
    // Constructor tables hold RELATIVE relocations: each must land in code.
    for (at, sz, what) in [
        (
            dynamic::DT_INIT_ARRAY,
            dynamic::DT_INIT_ARRAYSZ,
            "constructor",
        ),
        (
            dynamic::DT_FINI_ARRAY,
            dynamic::DT_FINI_ARRAYSZ,
            "destructor",
        ),
    ] {
        let (Some(start), Some(size)) = (tag(at), tag(sz)) else {
            continue;
        };
        for r in elf.dynrelas.iter() {
            let in_table = r.r_offset >= start && r.r_offset < start.saturating_add(size);
            if in_table
                && r.r_type == reloc::R_X86_64_RELATIVE
                && !in_code(&loads, r.r_addend.unwrap_or(0) as u64)
            {
                return Err(StructureError::Dynamic(format!(
                    "corrupted: a {what} points outside executable code"
                )));
            }
        }
    }
    Ok(())
}

/// Names the loader reads later (a soname when another `dlopen` compares names, needed
/// libraries, run paths, version names) must lie inside the string table: an offset past it
/// passes the load and faults the target's next `dlopen`.
fn check_strings(elf: &Elf<'_>, d: &dynamic::Dynamic) -> Result<(), StructureError> {
    const STRING_TAGS: &[(u64, &str)] = &[
        (dynamic::DT_NEEDED, "needed library"),
        (dynamic::DT_SONAME, "soname"),
        (dynamic::DT_RPATH, "run path"),
        (dynamic::DT_RUNPATH, "run path"),
        (0x7fff_fffd, "auxiliary filter"),
        (0x7fff_ffff, "filter"),
    ];
    let name_ok = |off: usize| elf.dynstrtab.get_at(off).is_some();
    for e in &d.dyns {
        if let Some((_, what)) = STRING_TAGS.iter().find(|(t, _)| *t == e.d_tag) {
            if !usize::try_from(e.d_val).is_ok_and(name_ok) {
                return Err(StructureError::Dynamic(format!(
                    "corrupted: the {what} name lies outside the string table"
                )));
            }
        }
    }
    if let Some(verdef) = &elf.verdef {
        for vd in verdef.iter() {
            if vd.iter().any(|aux| !name_ok(aux.vda_name)) {
                return Err(StructureError::Dynamic(
                    "corrupted: a version name lies outside the string table".to_string(),
                ));
            }
        }
    }
    if let Some(verneed) = &elf.verneed {
        for vn in verneed.iter() {
            if !name_ok(vn.vn_file) || vn.iter().any(|aux| !name_ok(aux.vna_name)) {
                return Err(StructureError::Dynamic(
                    "corrupted: a needed version's name lies outside the string table".to_string(),
                ));
            }
        }
    }
    Ok(())
}

/// Every relocation must write inside the image, name an existing symbol and be of a type the
/// loader knows: it trusts all three.
fn check_relocations(elf: &Elf<'_>) -> Result<(), StructureError> {
    let loads = loads(elf);
    let nsyms = elf.dynsyms.len();
    for r in elf
        .dynrelas
        .iter()
        .chain(elf.pltrelocs.iter())
        .chain(elf.dynrels.iter())
    {
        if !in_image(&loads, r.r_offset, 8) {
            return Err(StructureError::Relocations(format!(
                "corrupted: a relocation writes at {:#x}, outside the image",
                r.r_offset
            )));
        }
        if r.r_sym >= nsyms && r.r_sym != 0 {
            return Err(StructureError::Relocations(format!(
                "corrupted: a relocation names symbol #{} of {nsyms}",
                r.r_sym
            )));
        }
        if r.r_type > reloc::R_X86_64_REX_GOTPCRELX + 1 {
            return Err(StructureError::Relocations(format!(
                "corrupted: unknown relocation type {}",
                r.r_type
            )));
        }
    }
    for sym in elf.dynsyms.iter() {
        if elf.dynstrtab.get_at(sym.st_name).is_none() {
            return Err(StructureError::Relocations(
                "corrupted: a symbol's name lies outside the string table".to_string(),
            ));
        }
    }
    Ok(())
}
