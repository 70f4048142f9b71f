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
    /// Slots already holding the target, and their modules.
    pub bound: usize,
    pub bound_in: Vec<String>,
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
    // Values first: a slot's value is one load, its symbol's name a table walk. Only a slot that
    // holds a known address, or a GOT/PLT slot (for the lazy and "bound elsewhere" counts), needs
    // its name; the many data pointers of C++ vtables and tables do not.
    let mut any_known: Vec<u64> = bindings
        .iter()
        .flat_map(|b| b.known.iter().copied())
        .collect();
    any_known.sort_unstable();
    any_known.dedup();
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
            let Some(value) = mem.slot(reloc.slot) else {
                continue;
            };
            let base_value = value.wrapping_sub(reloc.addend as u64);
            let known = any_known.binary_search(&base_value).is_ok();
            if !known && kind == SlotKind::Abs64 {
                continue;
            }
            let Some(sym) = image.symbol(reloc.sym) else {
                continue;
            };
            let Some(candidates) = by_name.get(sym.name) else {
                continue;
            };
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
                let t = &mut plan.tallies[i];
                let name = layout.file_name();
                if base_value != b.target {
                    plan.writes.push(Write::slot(
                        reloc.slot,
                        value,
                        b.target.wrapping_add(reloc.addend as u64),
                    ));
                    t.slots += 1;
                    if !t.modules.iter().any(|m| m == name) {
                        t.modules.push(name.to_string());
                    }
                } else {
                    t.bound += 1;
                    if !t.bound_in.iter().any(|m| m == name) {
                        t.bound_in.push(name.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::synthetic::Synthetic;
    use crate::image::{SliceMemory, R_ABS64, R_GLOB_DAT, R_JUMP_SLOT};

    const OLD: u64 = 0x7000_1000;
    const NEW: u64 = 0x7100_2000;

    fn binding(name: &str) -> Binding {
        Binding {
            name: name.into(),
            known: vec![OLD],
            target: NEW,
            only_in: None,
        }
    }

    #[test]
    fn switches_only_slots_bound_to_the_old_definition() {
        let base = 0x40_0000;
        let stub = base + 0x10; // inside the module's own code: an unresolved PLT slot
        let syn = Synthetic::new(
            base,
            &[
                ("foo", R_JUMP_SLOT, OLD),
                ("foo", R_GLOB_DAT, OLD),
                ("foo", R_ABS64, 0x1234),
                ("bar", R_GLOB_DAT, OLD),
                ("foo", R_JUMP_SLOT, stub),
            ],
        );
        let mut layout = syn.layout.clone();
        layout.loads[0].flags |= 1; // make the segment count as code for the stub test
        let mem = SliceMemory {
            base,
            bytes: &syn.bytes,
        };
        let plan = plan_slots(&mem, &[layout], &[binding("foo")], &[]);
        let addrs: Vec<u64> = plan.writes.iter().map(|w| w.addr).collect();
        assert_eq!(
            addrs,
            vec![syn.slots[0], syn.slots[1]],
            "only foo's slots holding OLD"
        );
        assert!(plan
            .writes
            .iter()
            .all(|w| w.expected == OLD && w.value == NEW));
        let t = &plan.tallies[0];
        // The data pointer bound elsewhere (0x1234) is not counted: only GOT/PLT slots are.
        assert_eq!((t.slots, t.lazy, t.other), (2, 1, 0));
        assert_eq!(t.modules, vec!["libsyn.so".to_string()]);
    }

    #[test]
    fn skipped_and_foreign_modules_are_left_alone() {
        let base = 0x50_0000;
        let syn = Synthetic::new(base, &[("foo", R_GLOB_DAT, OLD)]);
        let mem = SliceMemory {
            base,
            bytes: &syn.bytes,
        };
        let layouts = [syn.layout.clone()];
        assert!(plan_slots(&mem, &layouts, &[binding("foo")], &[base])
            .writes
            .is_empty());
        let only_elsewhere = Binding {
            only_in: Some(base + 1),
            ..binding("foo")
        };
        assert!(plan_slots(&mem, &layouts, &[only_elsewhere], &[])
            .writes
            .is_empty());
        // Already at the target: nothing to write.
        let done = Binding {
            target: OLD,
            ..binding("foo")
        };
        assert!(plan_slots(&mem, &layouts, &[done], &[]).writes.is_empty());
    }

    #[test]
    fn addends_are_kept() {
        let base = 0x60_0000;
        let mut syn = Synthetic::new(base, &[("foo", R_ABS64, OLD + 16)]);
        let layouts = [syn.layout.clone()];
        {
            // Without the addend, OLD + 16 is no address foo ever had: left alone.
            let mem = SliceMemory {
                base,
                bytes: &syn.bytes,
            };
            assert!(plan_slots(&mem, &layouts, &[binding("foo")], &[])
                .writes
                .is_empty());
        }
        syn.set_addend(0, 16);
        let mem = SliceMemory {
            base,
            bytes: &syn.bytes,
        };
        let plan = plan_slots(&mem, &layouts, &[binding("foo")], &[]);
        assert_eq!(
            plan.writes,
            vec![Write::slot(syn.slots[0], OLD + 16, NEW + 16)]
        );
    }
}
