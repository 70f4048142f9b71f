//! The in-memory ELF reader over arbitrary bytes, read through the `Memory` trait and a `Layout`
//! exactly as the live image is (there through `LiveMemory` and the loader's program headers).
//!
//! An input starting with `\x7fELF` is "loaded" first: each PT_LOAD copied to its address in a
//! zeroed buffer, the way the loader maps it, so real libraries make useful seeds. Any other input
//! is a raw module image: a 4-byte header (offset of the dynamic section, segment flags, RELRO
//! pages) and the bytes that stand at the module's base. Then everything the agent reads from a
//! loaded module is walked (dynamic section, symbols, versions, relocations, exports) and the
//! slot planner runs over it; the plan must keep its invariants.
#![no_main]

use hotagent::image::{as_plain_function, exports, Image, Layout, Memory, SliceMemory, SlotKind};
use hotagent::reload::{plan_slots, Binding};
use libfuzzer_sys::fuzz_target;

const BASE: u64 = 0x10_0000;
const PAGE: u64 = 4096;
/// A loaded image larger than this is not built (the harness's own bound, not the reader's).
const MAX_IMAGE: u64 = 4 << 20;
/// The harness's own walks stop here; the reader's are whatever they are.
const MAX_SYMBOLS: u32 = 1 << 14;
const MAX_RELOCS: usize = 1 << 14;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_GNU_RELRO: u32 = 0x6474_e552;

type Phdr = (u32, u32, u64, u64);

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Maps an ELF file's loadable segments into one buffer standing at `BASE`, as the loader would.
fn load_elf(file: &[u8]) -> Option<(Vec<u8>, Vec<Phdr>)> {
    let phoff = usize::try_from(u64_at(file, 32)?).ok()?;
    let phentsize = usize::from(u16_at(file, 54)?);
    let phnum = usize::from(u16_at(file, 56)?);
    if phentsize < 56 {
        return None;
    }
    let mut image = Vec::new();
    let mut phdrs = Vec::new();
    for i in 0..phnum.min(64) {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let (p_type, p_flags) = (u32_at(file, at)?, u32_at(file, at + 4)?);
        let (p_offset, p_vaddr) = (u64_at(file, at + 8)?, u64_at(file, at + 16)?);
        let (p_filesz, p_memsz) = (u64_at(file, at + 32)?, u64_at(file, at + 40)?);
        phdrs.push((p_type, p_flags, p_vaddr, p_memsz));
        if p_type != PT_LOAD {
            continue;
        }
        let end = p_vaddr.checked_add(p_memsz)?;
        if end > MAX_IMAGE {
            continue;
        }
        let (vaddr, end) = (p_vaddr as usize, end as usize);
        if image.len() < end {
            image.resize(end, 0);
        }
        let from = usize::try_from(p_offset).ok()?.min(file.len());
        let n = usize::try_from(p_filesz.min(p_memsz))
            .ok()?
            .min(file.len() - from);
        image[vaddr..vaddr + n].copy_from_slice(&file[from..from + n]);
    }
    Some((image, phdrs))
}

/// A raw image: `[dynamic offset: u16][segment flags: u8][RELRO pages: u8]` then the bytes.
fn raw_image(data: &[u8]) -> Option<(Vec<u8>, Vec<Phdr>)> {
    let (header, bytes) = (data.get(..4)?, data[4..].to_vec());
    let dyn_off = u64::from(u16_at(header, 0)?);
    let flags = u32::from(header[2] & 7);
    let relro = u64::from(header[3]) * PAGE;
    let len = bytes.len() as u64;
    let mut phdrs = vec![(PT_LOAD, flags, 0, len), (PT_DYNAMIC, flags, dyn_off, 16)];
    if relro != 0 {
        phdrs.push((PT_GNU_RELRO, 4, 0, relro));
    }
    Some((bytes, phdrs))
}

fn walk(mem: &SliceMemory<'_>, layout: &Layout, seed: u64) {
    let _ = (layout.file_name(), layout.span(), layout.readable().count());
    let Ok(image) = Image::new(mem, layout) else {
        return;
    };
    let _ = image.soname();
    let count = image.symbol_count().unwrap_or(0).min(MAX_SYMBOLS);
    for index in 0..count {
        if let Some(sym) = image.symbol(index) {
            let _ = (sym.kind(), sym.binding());
            let _ = image.version(index, sym.is_defined());
        }
        let _ = image.version(index, true);
        let _ = image.version(index, false);
    }

    // Relocations and the slots they name; pick the bindings the planner will look for.
    let mut bindings: Vec<Binding> = Vec::new();
    for reloc in image.relocations().take(MAX_RELOCS) {
        let _ = (layout.protection(reloc.slot), layout.is_code(reloc.slot));
        let Some(kind) = SlotKind::from_type(reloc.r_type) else {
            continue;
        };
        let (Some(value), Some(sym)) = (mem.slot(reloc.slot), image.symbol(reloc.sym)) else {
            continue;
        };
        let _ = (kind, mem.u64(reloc.slot));
        if bindings.len() < 8 && !bindings.iter().any(|b| b.name.as_bytes() == sym.name) {
            let Ok(name) = std::str::from_utf8(sym.name) else {
                continue;
            };
            let i = bindings.len() as u64;
            bindings.push(Binding {
                name: name.to_string(),
                // What the slot holds, less its addend: the planner's "bound to this symbol".
                known: vec![
                    value.wrapping_sub(reloc.addend as u64),
                    seed.wrapping_add(i),
                ],
                target: seed ^ (0x5a5a_0000 + i * 16),
                only_in: (seed & 1 == 1).then_some(BASE),
            });
        }
    }

    for e in exports(&image, |_| true) {
        let _ = (layout.is_mutable_data(e.addr), as_plain_function(e.info));
        assert!(!e.name.is_empty());
        if bindings.len() < 12 && !bindings.iter().any(|b| b.name == e.name) {
            bindings.push(Binding {
                name: e.name.clone(),
                known: vec![e.addr],
                target: e.addr ^ seed,
                only_in: None,
            });
        }
    }

    let layouts = std::slice::from_ref(layout);
    let plan = plan_slots(mem, layouts, &bindings, &[]);
    assert_eq!(plan.tallies.len(), bindings.len());
    assert_eq!(
        plan.tallies.iter().map(|t| t.slots).sum::<usize>(),
        plan.writes.len()
    );
    for w in &plan.writes {
        assert_eq!(
            mem.slot(w.addr),
            Some(w.expected),
            "a write expects what its slot holds"
        );
        assert_ne!(w.expected, w.value, "a write changes its slot");
    }
    assert!(plan_slots(mem, layouts, &bindings, &[BASE])
        .writes
        .is_empty());
}

fuzz_target!(|data: &[u8]| {
    let built = if data.starts_with(b"\x7fELF") {
        load_elf(data)
    } else {
        raw_image(data)
    };
    let Some((bytes, phdrs)) = built else {
        return;
    };
    let seed = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let layout = Layout::new("/fuzz/libimage.so".into(), BASE, false, phdrs, PAGE);
    let mem = SliceMemory {
        base: BASE,
        bytes: &bytes,
    };
    walk(&mem, &layout, seed);
});
