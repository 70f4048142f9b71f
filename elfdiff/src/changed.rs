//! Whether an exported function's code differs between the running build and the new one:
//! decoded instruction by instruction, with every reference compared by what it points at
//! (`refs.rs`), since addresses move when anything else in the library changes. When in doubt
//! — an address nothing names, a different length, an IFUNC — it is changed.

use super::file::first_difference;
use super::refs::Pair;
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};

/// Why a function counts as changed, or that it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Same,
    Differs,
    /// Cannot be compared (an IFUNC, no size, not found): taken as changed.
    Unknown,
}

impl Change {
    pub fn changed(self) -> bool {
        self != Change::Same
    }
}

/// Compares function `name`: at `old` (file address and size) in the running build, by name
/// in the new one.
pub fn function(pair: &Pair<'_>, name: &str, old: Option<(u64, u64)>) -> Change {
    let Some((oa, osize)) = old else {
        return Change::Unknown;
    };
    let Some(n) = pair.new.function(name) else {
        return Change::Unknown;
    };
    let old_named = pair
        .old
        .syms
        .iter()
        .any(|s| s.func && !s.ifunc && s.name == name && s.addr == oa);
    if n.ifunc || n.size == 0 || osize == 0 || !old_named {
        return Change::Unknown;
    }
    if n.size != osize {
        return Change::Differs;
    }
    let (Some(ob), Some(nb)) = (pair.old.bytes(oa, osize), pair.new.bytes(n.addr, n.size)) else {
        return Change::Unknown;
    };
    same_code(pair, (ob, oa), (nb, n.addr))
}

fn same_code(pair: &Pair<'_>, old: (&[u8], u64), new: (&[u8], u64)) -> Change {
    let mut od = Decoder::with_ip(64, old.0, old.1, DecoderOptions::NONE);
    let mut nd = Decoder::with_ip(64, new.0, new.1, DecoderOptions::NONE);
    let (mut a, mut b) = (Instruction::default(), Instruction::default());
    while od.can_decode() && nd.can_decode() {
        od.decode_out(&mut a);
        nd.decode_out(&mut b);
        if a.is_invalid() || b.is_invalid() {
            return Change::Unknown;
        }
        if !same_instruction(pair, &a, &b) {
            return Change::Differs;
        }
    }
    if od.can_decode() || nd.can_decode() {
        Change::Differs
    } else {
        Change::Same
    }
}

fn same_instruction(pair: &Pair<'_>, a: &Instruction, b: &Instruction) -> bool {
    let same_form = a.code() == b.code()
        && a.len() == b.len()
        && a.op_count() == b.op_count()
        && a.has_lock_prefix() == b.has_lock_prefix()
        && a.has_rep_prefix() == b.has_rep_prefix()
        && a.has_repne_prefix() == b.has_repne_prefix()
        && a.segment_prefix() == b.segment_prefix();
    if !same_form {
        return false;
    }
    let means = |x: u64, y: u64| match (pair.meaning(&pair.old, x), pair.meaning(&pair.new, y)) {
        (Some(p), Some(q)) => p == q,
        _ => false,
    };
    // Unnamed read-only data (a string literal, a constant) compares by content: a load by
    // the bytes it reads, a `lea` by what lies at the address.
    let reads = |x: u64, y: u64| match (pair.meaning(&pair.old, x), pair.meaning(&pair.new, y)) {
        (Some(p), Some(q)) => p == q,
        (None, None) => {
            let width = (a.mnemonic() != Mnemonic::Lea).then(|| a.memory_size().size() as u64);
            pair.same_content((x, a.ip()), (y, b.ip()), width)
        }
        _ => false,
    };
    (0..a.op_count()).all(|i| {
        let kind = a.op_kind(i);
        if kind != b.op_kind(i) {
            return false;
        }
        match kind {
            OpKind::Register => a.op_register(i) == b.op_register(i),
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                means(a.near_branch_target(), b.near_branch_target())
            }
            OpKind::FarBranch16 | OpKind::FarBranch32 => false,
            OpKind::Memory => {
                let shape = a.memory_base() == b.memory_base()
                    && a.memory_index() == b.memory_index()
                    && a.memory_index_scale() == b.memory_index_scale()
                    && a.memory_segment() == b.memory_segment()
                    && a.memory_size() == b.memory_size();
                shape
                    && if a.is_ip_rel_memory_operand() {
                        reads(a.ip_rel_memory_address(), b.ip_rel_memory_address())
                    } else {
                        a.memory_displacement64() == b.memory_displacement64()
                    }
            }
            // Immediates of every width, and the implicit string-instruction operands (their
            // registers are part of the code compared above).
            _ => match a.try_immediate(i) {
                Ok(x) => b.try_immediate(i).ok() == Some(x),
                Err(_) => true,
            },
        }
    })
}

/// Compares read-only data `name` (a const table, a vtable): the same bytes, and every word the
/// loader relocates bound to the same thing.
pub fn data(pair: &Pair<'_>, name: &str, old: Option<(u64, u64)>) -> Change {
    let Some((oa, osize)) = old else {
        return Change::Unknown;
    };
    let named = |s: &super::refs::Side<'_>| {
        let mut it = s
            .syms
            .iter()
            .filter(|x| !x.func && x.name == name && x.size > 0);
        let first = it.next()?.clone();
        it.all(|x| x.addr == first.addr).then_some(first)
    };
    let Some(n) = named(&pair.new) else {
        return Change::Unknown;
    };
    if n.size != osize {
        return Change::Differs;
    }
    let a = pair.old.f.initial(oa, osize);
    let b = pair.new.f.initial(n.addr, n.size);
    if first_difference(&a, &b).is_some()
        || a.iter().zip(&b).any(|(x, y)| x.is_none() != y.is_none())
    {
        return Change::Differs;
    }
    let words = |side: &super::refs::Side<'_>, at: u64| -> Vec<u64> {
        let mut v: Vec<u64> = side
            .f
            .rels
            .iter()
            .filter(|r| at <= r.offset && r.offset < at + osize)
            .map(|r| r.offset - at)
            .collect();
        v.sort_unstable();
        v
    };
    let (ow, nw) = (words(&pair.old, oa), words(&pair.new, n.addr));
    if ow != nw {
        return Change::Differs;
    }
    for off in ow {
        match (
            pair.meaning(&pair.old, oa + off),
            pair.meaning(&pair.new, n.addr + off),
        ) {
            (Some(x), Some(y)) if x == y => {}
            _ => return Change::Differs,
        }
    }
    Change::Same
}

#[cfg(test)]
mod tests {
    use super::super::file::FileView;
    use super::super::refs::Side;
    use super::*;

    const ZLIB: &str = "/lib/x86_64-linux-gnu/libz.so.1";

    fn exported(f: &FileView<'_>) -> Vec<(String, u64, u64)> {
        f.elf
            .dynsyms
            .iter()
            .filter(|s| s.is_function() && s.st_shndx != 0 && s.st_size > 0)
            .map(|s| {
                let name = f.elf.dynstrtab.get_at(s.st_name).unwrap_or("").to_string();
                (name, s.st_value, s.st_size)
            })
            .collect()
    }

    #[test]
    fn every_function_matches_itself() {
        let bytes = std::fs::read(ZLIB).unwrap();
        let (a, b) = (
            FileView::parse(&bytes).unwrap(),
            FileView::parse(&bytes).unwrap(),
        );
        let pair = Pair::new(Side::new(&a, &a.elf), Side::new(&b, &b.elf));
        let funcs = exported(&a);
        assert!(funcs.len() > 50, "{}", funcs.len());
        for (name, addr, size) in funcs {
            assert_eq!(
                function(&pair, &name, Some((addr, size))),
                Change::Same,
                "{name}"
            );
        }
    }

    /// One immediate changed in one function: that function differs, its neighbours do not.
    #[test]
    fn a_changed_byte_is_a_changed_function() {
        let bytes = std::fs::read(ZLIB).unwrap();
        let a = FileView::parse(&bytes).unwrap();
        let funcs = exported(&a);
        let (name, addr, size) = funcs
            .iter()
            .find(|f| f.0 == "deflateInit2_")
            .unwrap()
            .clone();
        let side = Side::new(&a, &a.elf);
        let code = side.bytes(addr, size).unwrap();
        let mut dec = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
        let mut ins = Instruction::default();
        let at = loop {
            dec.decode_out(&mut ins);
            let offsets = dec.get_constant_offsets(&ins);
            if offsets.has_immediate() && offsets.immediate_size() == 4 {
                break ins.ip() + offsets.immediate_offset() as u64;
            }
        };
        let file_at = (at - addr + code.as_ptr() as u64 - bytes.as_ptr() as u64) as usize;
        let mut changed = bytes.clone();
        changed[file_at] ^= 1;
        let b = FileView::parse(&changed).unwrap();
        let pair = Pair::new(Side::new(&a, &a.elf), Side::new(&b, &b.elf));
        assert_eq!(function(&pair, &name, Some((addr, size))), Change::Differs);
        let other = funcs.iter().find(|f| f.0 == "inflateEnd").unwrap();
        assert_eq!(
            function(&pair, &other.0, Some((other.1, other.2))),
            Change::Same
        );
    }
}
