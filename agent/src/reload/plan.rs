//! Planning: which slots of which modules hold a replaced symbol, and what to write there.
//!
//! A slot is identified by the symbol its relocation names *and* the value it holds: it is ours
//! to switch only when it holds one of the addresses that symbol has had (the original definition,
//! or a generation's). Anything else — a lazy-binding stub, an interposed definition, a canonical
//! PLT entry — is counted and left alone. Pure code over `Memory`, so it can be tested on buffers.

use crate::image::{Image, Layout, Memory, SlotKind};
use crate::patch::Write;
use std::collections::HashMap;

/// One symbol to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub name: String,
    /// Every address that means "bound to this symbol".
    pub known: Vec<u64>,
    pub target: u64,
    /// Only slots of the module with this base (state kept for the new library's variables).
    pub only_in: Option<u64>,
}

/// What planning found for one binding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Slots to write.
    pub slots: usize,
    /// Modules (file names) with slots to write.
    pub modules: Vec<String>,
    /// Lazy-binding slots not yet resolved.
    pub lazy: usize,
    /// Slots bound to something else.
    pub other: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub writes: Vec<Write>,
    /// One per binding, same order.
    pub tallies: Vec<Tally>,
}

/// Plans the slot writes for `bindings` across `layouts`, skipping the modules based at `skip`.
pub fn plan_slots<M: Memory>(
    mem: &M,
    layouts: &[Layout],
    bindings: &[Binding],
    skip: &[u64],
) -> Plan {
    let mut by_name: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, b) in bindings.iter().enumerate() {
        by_name.entry(b.name.as_bytes()).or_default().push(i);
    }
    let mut plan = Plan {
        writes: Vec::new(),
        tallies: vec![Tally::default(); bindings.len()],
    };
    for layout in layouts.iter().filter(|l| !skip.contains(&l.base)) {
        let Ok(image) = Image::new(mem, layout) else {
            continue;
        };
        for reloc in image.relocations() {
            let Some(kind) = SlotKind::from_type(reloc.r_type) else {
                continue;
            };
            if reloc.sym == 0 {
                continue;
            }
            let Some(sym) = image.symbol(reloc.sym) else {
                continue;
            };
            let Some(candidates) = by_name.get(sym.name) else {
                continue;
            };
            let Some(value) = mem.u64(reloc.slot) else {
                continue;
            };
            let base_value = value.wrapping_sub(reloc.addend as u64);
            let applicable = candidates
                .iter()
                .copied()
                .filter(|&i| bindings[i].only_in.is_none_or(|b| b == layout.base));
            let mut matched = false;
            let mut first = None;
            for i in applicable {
                first.get_or_insert(i);
                let b = &bindings[i];
                if !b.known.contains(&base_value) {
                    continue;
                }
                matched = true;
                if base_value != b.target {
                    plan.writes.push(Write::slot(
                        reloc.slot,
                        value,
                        b.target.wrapping_add(reloc.addend as u64),
                    ));
                    let t = &mut plan.tallies[i];
                    t.slots += 1;
                    let name = layout.file_name().to_string();
                    if !t.modules.contains(&name) {
                        t.modules.push(name);
                    }
                }
                break;
            }
            if let (false, Some(i)) = (matched, first) {
                if kind == SlotKind::JumpSlot && layout.is_code(value) {
                    plan.tallies[i].lazy += 1;
                } else {
                    plan.tallies[i].other += 1;
                }
            }
        }
    }
    plan
}
