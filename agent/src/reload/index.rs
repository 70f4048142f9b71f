//! Each module's slots by symbol name, read once per module.
//!
//! A module's relocations (which slot, which symbol, which addend) never change once it is
//! loaded; only the values its slots hold do (a lazy JUMP_SLOT being resolved, our own writes).
//! Reading every module's relocation tables and symbol names again on every reload, rollback
//! and verify round was most of a reload's planning (31% in `Dynamic::read` alone, 20% in symbol
//! names). The index keeps, per module, only the slots the planner can switch, grouped by the
//! symbol their relocation names, so a plan reads the values of the bindings' slots and nothing
//! else. Values are always read live.

use crate::image::{Image, Layout, Memory, SlotKind};
use std::collections::HashMap;

/// One switchable slot of a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub addr: u64,
    pub kind: SlotKind,
    pub addend: i64,
    /// Its place in the module's relocation tables: plans keep that order.
    pub order: u32,
}

/// One module's switchable slots by the symbol name their relocation names.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    /// The module's `_DYNAMIC` array as it was read: a module unloaded and another mapped at
    /// the same base under the same path has another one (its tables lie elsewhere, or have
    /// other sizes), and is indexed afresh.
    fingerprint: Vec<u8>,
    by_name: HashMap<Box<[u8]>, Vec<Slot>>,
}

/// At most this many `_DYNAMIC` entries are compared (real modules have a few dozen).
const MAX_DYNAMIC: usize = 512;

impl ModuleIndex {
    /// Reads `layout`'s relocation tables; `None` when it has none to read.
    pub fn build<M: Memory>(mem: &M, layout: &Layout) -> Option<ModuleIndex> {
        let image = Image::new(mem, layout).ok()?;
        let mut by_name: HashMap<Box<[u8]>, Vec<Slot>> = HashMap::new();
        for (order, reloc) in image.relocations().enumerate() {
            let Some(kind) = SlotKind::from_type(reloc.r_type) else {
                continue;
            };
            if reloc.sym == 0 {
                continue;
            }
            let Some(sym) = image.symbol(reloc.sym) else {
                continue;
            };
            let slot = Slot {
                addr: reloc.slot,
                kind,
                addend: reloc.addend,
                order: u32::try_from(order).unwrap_or(u32::MAX),
            };
            match by_name.get_mut(sym.name) {
                Some(v) => v.push(slot),
                None => {
                    by_name.insert(sym.name.into(), vec![slot]);
                }
            }
        }
        Some(ModuleIndex {
            fingerprint: fingerprint(mem, layout)?,
            by_name,
        })
    }

    /// The slots whose relocation names `name`, in relocation order.
    pub fn slots(&self, name: &[u8]) -> &[Slot] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }
}

/// The raw `_DYNAMIC` array of `layout`, up to its `DT_NULL`.
pub(super) fn fingerprint<M: Memory>(mem: &M, layout: &Layout) -> Option<Vec<u8>> {
    let at = layout.dynamic?;
    let mut out = Vec::with_capacity(32 * 16);
    for i in 0..MAX_DYNAMIC as u64 {
        let entry = mem.bytes(at.checked_add(i * 16)?, 16)?;
        out.extend_from_slice(entry);
        if entry[..8] == [0; 8] {
            break;
        }
    }
    Some(out)
}

/// The indexes of the modules planned so far, by base (with the path they had).
#[derive(Debug, Default)]
pub struct SlotIndex {
    modules: HashMap<u64, (String, ModuleIndex)>,
}

impl SlotIndex {
    /// Brings the index up to date with `layouts`, dropping modules no longer loaded. A module
    /// still being relocated can be indexed too: what the index holds comes from its relocation
    /// and symbol tables, which glibc has in their final place (`_DYNAMIC` adjusted) before the
    /// module is listed at all; only slot values change, and those are read live.
    pub fn refresh<M: Memory>(&mut self, mem: &M, layouts: &[Layout]) {
        self.modules
            .retain(|base, (path, _)| layouts.iter().any(|l| l.base == *base && l.path == *path));
        for l in layouts {
            let fresh = match self.modules.get(&l.base) {
                Some((_, known)) => fingerprint(mem, l).is_none_or(|f| f != known.fingerprint),
                None => true,
            };
            if fresh {
                match ModuleIndex::build(mem, l) {
                    Some(index) => {
                        self.modules.insert(l.base, (l.path.clone(), index));
                    }
                    None => {
                        self.modules.remove(&l.base);
                    }
                }
            }
        }
    }

    /// The index of `layout`, if [`SlotIndex::refresh`] could read it.
    pub fn get(&self, layout: &Layout) -> Option<&ModuleIndex> {
        self.modules
            .get(&layout.base)
            .filter(|(path, _)| *path == layout.path)
            .map(|(_, index)| index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::synthetic::Synthetic;
    use crate::image::{SliceMemory, R_GLOB_DAT, R_JUMP_SLOT};
    use crate::reload::plan::{plan_indexed, Binding};

    const BASE: u64 = 0x40_0000;
    const OLD: u64 = 0x7000_1000;
    const NEW: u64 = 0x7100_2000;

    fn mem(syn: &Synthetic) -> SliceMemory<'_> {
        SliceMemory {
            base: syn.base,
            bytes: &syn.bytes,
        }
    }

    /// A module unloaded and another mapped at its base under the same path must not be
    /// planned with the first one's slots.
    #[test]
    fn a_module_replaced_at_the_same_base_is_indexed_afresh() {
        let first = Synthetic::new(BASE, &[("foo", R_GLOB_DAT, OLD)]);
        let second = Synthetic::new(BASE, &[("foo", R_GLOB_DAT, OLD), ("bar", R_JUMP_SLOT, OLD)]);
        assert_eq!(first.layout.path, second.layout.path);
        let mut index = SlotIndex::default();
        index.refresh(&mem(&first), std::slice::from_ref(&first.layout));
        assert!(index.get(&first.layout).unwrap().slots(b"bar").is_empty());
        index.refresh(&mem(&second), std::slice::from_ref(&second.layout));
        let bar = index.get(&second.layout).unwrap().slots(b"bar");
        assert_eq!(bar.len(), 1);
        assert_eq!(bar[0].addr, second.slots[1]);
    }

    #[test]
    fn modules_no_longer_loaded_are_dropped() {
        let syn = Synthetic::new(BASE, &[("foo", R_GLOB_DAT, OLD)]);
        let mut index = SlotIndex::default();
        index.refresh(&mem(&syn), std::slice::from_ref(&syn.layout));
        assert!(index.get(&syn.layout).is_some());
        index.refresh(&mem(&syn), &[]);
        assert!(index.get(&syn.layout).is_none());
    }

    /// The index holds where slots are, never what they hold: a plan made from an index built
    /// earlier sees the values slots hold now (a lazy slot resolved, a slot switched).
    #[test]
    fn values_are_read_when_planning_not_when_indexing() {
        let mut syn = Synthetic::new(BASE, &[("foo", R_GLOB_DAT, 0x1234)]);
        let mut index = SlotIndex::default();
        index.refresh(&mem(&syn), std::slice::from_ref(&syn.layout));
        let binding = Binding {
            name: "foo".into(),
            known: vec![OLD],
            target: NEW,
            only_in: None,
        };
        let plan = |syn: &Synthetic, index: &SlotIndex| {
            let m = mem(syn);
            plan_indexed(
                &m,
                [(&syn.layout, index.get(&syn.layout).unwrap())],
                std::slice::from_ref(&binding),
            )
        };
        assert!(plan(&syn, &index).writes.is_empty());
        let at = (syn.slots[0] - BASE) as usize;
        syn.bytes[at..at + 8].copy_from_slice(&OLD.to_le_bytes());
        let writes = plan(&syn, &index).writes;
        assert_eq!(writes.len(), 1);
        assert_eq!((writes[0].expected, writes[0].value), (OLD, NEW));
    }
}
