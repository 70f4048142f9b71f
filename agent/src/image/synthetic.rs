//! A tiny in-memory module built byte by byte: lets the reader and the planner be tested (and
//! later fuzzed and benchmarked) without a loader.

use super::layout::Layout;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;

/// Builds one module image: imported symbols, each with one GOT slot.
pub struct Synthetic {
    pub base: u64,
    pub bytes: Vec<u8>,
    pub layout: Layout,
    /// Absolute address of each import's slot, in the order given.
    pub slots: Vec<u64>,
    /// Offset in `bytes` of each import's relocation entry.
    relas: Vec<usize>,
}

impl Synthetic {
    /// `imports`: (name, relocation type, slot value). Layout: [dynamic | symtab | strtab | rela |
    /// hash | slots], all in one RW segment.
    pub fn new(base: u64, imports: &[(&str, u32, u64)]) -> Synthetic {
        let n = imports.len() as u64 + 1;
        let dyn_off = 0u64;
        let dyn_entries = 8u64;
        let sym_off = dyn_off + dyn_entries * 16;
        let str_off = sym_off + n * 24;
        let mut strtab = vec![0u8];
        let mut name_offs = Vec::new();
        for (name, _, _) in imports {
            name_offs.push(strtab.len() as u32);
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
        }
        let rela_off = (str_off + strtab.len() as u64 + 7) & !7;
        let hash_off = rela_off + imports.len() as u64 * 24;
        let slot_off = hash_off + 16 + n * 4 + 8;
        let total = slot_off + imports.len() as u64 * 8;
        let mut b = vec![0u8; total as usize];
        let put = |b: &mut Vec<u8>, off: u64, v: &[u8]| {
            b[off as usize..off as usize + v.len()].copy_from_slice(v)
        };
        let dynamic = [
            (5u64, base + str_off),
            (10, strtab.len() as u64),
            (6, base + sym_off),
            (7, base + rela_off),
            (8, imports.len() as u64 * 24),
            (4, base + hash_off),
            (0, 0),
        ];
        for (i, (tag, val)) in dynamic.iter().enumerate() {
            put(&mut b, dyn_off + i as u64 * 16, &tag.to_le_bytes());
            put(&mut b, dyn_off + i as u64 * 16 + 8, &val.to_le_bytes());
        }
        let mut slots = Vec::new();
        let mut relas = Vec::new();
        for (i, (_, r_type, value)) in imports.iter().enumerate() {
            let sym = sym_off + (i as u64 + 1) * 24;
            put(&mut b, sym, &name_offs[i].to_le_bytes());
            put(&mut b, sym + 4, &[0x12]); // global function, undefined
            let slot = slot_off + i as u64 * 8;
            put(&mut b, slot, &value.to_le_bytes());
            let rela = rela_off + i as u64 * 24;
            put(&mut b, rela, &slot.to_le_bytes());
            put(
                &mut b,
                rela + 8,
                &(((i as u64 + 1) << 32) | u64::from(*r_type)).to_le_bytes(),
            );
            slots.push(base + slot);
            relas.push(rela as usize);
        }
        put(&mut b, str_off, &strtab);
        // SysV hash: nbucket = 1, nchain = n (the symbol count the reader needs).
        put(&mut b, hash_off, &1u32.to_le_bytes());
        put(&mut b, hash_off + 4, &(n as u32).to_le_bytes());
        let phdrs = [
            (PT_LOAD, 6u32, 0u64, total),
            (PT_DYNAMIC, 6, dyn_off, dyn_entries * 16),
        ];
        let layout = Layout::new("/synthetic/libsyn.so".into(), base, false, phdrs, 4096);
        Synthetic {
            base,
            bytes: b,
            layout,
            slots,
            relas,
        }
    }

    /// Sets the addend of import `i`'s relocation.
    pub fn set_addend(&mut self, i: usize, addend: i64) {
        let at = self.relas[i] + 16;
        self.bytes[at..at + 8].copy_from_slice(&addend.to_le_bytes());
    }
}
