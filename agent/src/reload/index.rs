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
fn fingerprint<M: Memory>(mem: &M, layout: &Layout) -> Option<Vec<u8>> {
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
    /// Brings the index up to date with `layouts` (settled modules only: a module still being
    /// relocated may not have final tables), dropping modules no longer loaded.
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
