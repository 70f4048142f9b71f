//! Planning: which slots of which modules hold a replaced symbol, and what to write there.
//!
//! A slot is identified by the symbol its relocation names *and* the value it holds: it is ours
//! to switch only when it holds one of the addresses that symbol has had (the original definition,
//! or a generation's). Anything else — a lazy-binding stub, an interposed definition, a canonical
//! PLT entry — is counted and left alone. Pure code over `Memory`, so it can be tested on buffers.

use super::index::{ModuleIndex, Slot};
use crate::image::{Layout, Memory, SlotKind};
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

/// Plans the slot writes for `bindings` across `layouts`, skipping the modules based at `skip`,
/// reading each module's relocations afresh (see [`plan_indexed`] for the agent's cached way).
pub fn plan_slots<M: Memory>(
    mem: &M,
    layouts: &[Layout],
    bindings: &[Binding],
    skip: &[u64],
) -> Plan {
    let indexed: Vec<(&Layout, ModuleIndex)> = layouts
        .iter()
        .filter(|l| !skip.contains(&l.base))
        .filter_map(|l| Some((l, ModuleIndex::build(mem, l)?)))
        .collect();
    plan_indexed(mem, indexed.iter().map(|(l, i)| (*l, i)), bindings)
}

/// Plans the slot writes for `bindings` over `modules`, each with its slot index: only the
/// slots whose relocation names a binding's symbol are read.
pub fn plan_indexed<'a, M: Memory>(
    mem: &M,
    modules: impl IntoIterator<Item = (&'a Layout, &'a ModuleIndex)>,
    bindings: &[Binding],
) -> Plan {
    let mut by_name: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, b) in bindings.iter().enumerate() {
        by_name.entry(b.name.as_bytes()).or_default().push(i);
    }
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
    let mut hits: Vec<(Slot, &Vec<usize>)> = Vec::new();
    for (layout, index) in modules {
        hits.clear();
        for (name, candidates) in &by_name {
            hits.extend(index.slots(name).iter().map(|s| (*s, candidates)));
        }
        // The relocation tables' order, as a walk over them would give.
        hits.sort_unstable_by_key(|(s, _)| s.order);
        for &(slot, candidates) in &hits {
            let kind = slot.kind;
            let Some(value) = mem.slot(slot.addr) else {
                continue;
            };
            let base_value = value.wrapping_sub(slot.addend as u64);
            let known = any_known.binary_search(&base_value).is_ok();
            if !known && kind == SlotKind::Abs64 {
                continue;
            }
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
                        slot.addr,
                        value,
                        b.target.wrapping_add(slot.addend as u64),
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
                } else if kind != SlotKind::Abs64 {
                    // Only GOT/PLT slots count as bound elsewhere: a data pointer holding some
                    // other value is no slot of this symbol's.
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

    /// Found by `the_plan_is_exactly_the_model`: a data pointer naming foo that holds an address
    /// another binding knows (not foo's) was counted as a foo slot bound elsewhere, though data
    /// pointers are never counted so (and were not when no binding knew the value).
    #[test]
    fn data_pointers_are_never_counted_as_bound_elsewhere() {
        let base = 0x70_0000;
        let syn = Synthetic::new(base, &[("foo", R_ABS64, OLD)]);
        let mem = SliceMemory {
            base,
            bytes: &syn.bytes,
        };
        let foo = Binding {
            known: vec![0x7300_0000],
            ..binding("foo")
        };
        let plan = plan_slots(
            &mem,
            std::slice::from_ref(&syn.layout),
            &[foo, binding("qux")],
            &[],
        );
        assert!(plan.writes.is_empty());
        assert_eq!(plan.tallies[0], Tally::default());
    }

    /// Properties of the planner over random images: several modules with random imports
    /// (names from a small pool, every slot kind and one the planner ignores, values that are old
    /// definitions, targets, lazy stubs or anything, with addends), random bindings (one per
    /// name, as the agent makes them) and randomly skipped modules.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::option;
        use proptest::prelude::*;
        use proptest::sample::{select, subsequence};

        const NAMES: [&str; 4] = ["foo", "bar", "baz", "qux"];
        /// Addresses the symbols have had or may be switched to.
        const ADDRS: [u64; 6] = [
            0x7000_1000,
            0x7000_2000,
            0x7000_3000,
            0x7100_0000,
            0x7200_0000,
            0x7300_0000,
        ];
        /// R_X86_64_RELATIVE: names no symbol's slot the planner switches, whatever it holds.
        const R_OTHER: u32 = 8;

        #[derive(Debug, Clone)]
        enum Value {
            /// `ADDRS[i]` plus the relocation's addend.
            Addr(usize),
            /// An address in the module itself: a lazy-binding stub when the segment is code.
            Stub,
            Any(u64),
        }

        #[derive(Debug, Clone)]
        struct Import {
            name: usize,
            r_type: u32,
            value: Value,
            addend: i64,
        }

        #[derive(Debug, Clone)]
        struct Module {
            imports: Vec<Import>,
            exec: bool,
            skipped: bool,
        }

        /// The modules built, each at its own base, in one address space.
        #[derive(Debug)]
        struct World {
            bufs: Vec<(u64, Vec<u8>)>,
            layouts: Vec<Layout>,
            /// Per module, per import: slot address.
            slots: Vec<Vec<u64>>,
            skip: Vec<u64>,
        }

        impl Memory for World {
            fn tail(&self, addr: u64) -> Option<&[u8]> {
                self.bufs.iter().find_map(|(base, bytes)| {
                    let off = usize::try_from(addr.checked_sub(*base)?).ok()?;
                    bytes.get(off..).filter(|t| !t.is_empty())
                })
            }
        }

        impl World {
            fn apply(&mut self, writes: &[Write]) {
                for w in writes {
                    let (base, bytes) = self
                        .bufs
                        .iter_mut()
                        .find(|(b, v)| w.addr >= *b && w.addr - *b < v.len() as u64)
                        .expect("a write inside a module");
                    let off = (w.addr - *base) as usize;
                    bytes[off..off + 8].copy_from_slice(&w.value.to_le_bytes());
                }
            }
        }

        fn module_base(m: usize) -> u64 {
            0x10_0000 * (m as u64 + 1)
        }

        fn slot_value(m: usize, imp: &Import) -> u64 {
            match imp.value {
                Value::Addr(i) => ADDRS[i].wrapping_add(imp.addend as u64),
                Value::Stub => module_base(m) + 0x10,
                Value::Any(v) => v,
            }
        }

        fn build(modules: &[Module]) -> World {
            let mut world = World {
                bufs: Vec::new(),
                layouts: Vec::new(),
                slots: Vec::new(),
                skip: Vec::new(),
            };
            for (m, module) in modules.iter().enumerate() {
                let base = module_base(m);
                let imports: Vec<(&str, u32, u64)> = module
                    .imports
                    .iter()
                    .map(|imp| (NAMES[imp.name], imp.r_type, slot_value(m, imp)))
                    .collect();
                let mut syn = Synthetic::new(base, &imports);
                for (i, imp) in module.imports.iter().enumerate() {
                    syn.set_addend(i, imp.addend);
                }
                let mut layout = syn.layout.clone();
                if module.exec {
                    layout.loads[0].flags |= 1;
                }
                if module.skipped {
                    world.skip.push(base);
                }
                world.bufs.push((base, syn.bytes));
                world.layouts.push(layout);
                world.slots.push(syn.slots);
            }
            world
        }

        fn import() -> impl Strategy<Value = Import> {
            let value = prop_oneof![
                4 => (0..ADDRS.len()).prop_map(Value::Addr),
                1 => Just(Value::Stub),
                1 => any::<u64>().prop_map(Value::Any),
            ];
            (
                0..NAMES.len(),
                select(vec![R_JUMP_SLOT, R_GLOB_DAT, R_ABS64, R_OTHER]),
                value,
                select(vec![0i64, 8, -16]),
            )
                .prop_map(|(name, r_type, value, addend)| Import {
                    name,
                    r_type,
                    value,
                    addend,
                })
        }

        fn module() -> impl Strategy<Value = Module> {
            (
                vec(import(), 0..10),
                any::<bool>(),
                prop::bool::weighted(0.25),
            )
                .prop_map(|(imports, exec, skipped)| Module {
                    imports,
                    exec,
                    skipped,
                })
        }

        /// At most one binding per name; `only_in` names one of the modules or none loaded.
        fn bindings(modules: usize) -> impl Strategy<Value = Vec<Binding>> {
            let only_in = prop_oneof![
                3 => Just(None),
                1 => (0..modules).prop_map(|m| Some(module_base(m))),
                1 => Just(Some(u64::MAX)),
            ];
            let one = (
                subsequence(ADDRS.to_vec(), 1..=ADDRS.len()),
                select(ADDRS.to_vec()),
                only_in,
            );
            vec(option::of(one), NAMES.len()).prop_map(|per_name| {
                per_name
                    .into_iter()
                    .zip(NAMES)
                    .filter_map(|(b, name)| {
                        let (known, target, only_in) = b?;
                        Some(Binding {
                            name: name.to_string(),
                            known,
                            target,
                            only_in,
                        })
                    })
                    .collect()
            })
        }

        fn world() -> impl Strategy<Value = (Vec<Module>, Vec<Binding>)> {
            vec(module(), 1..4).prop_flat_map(|modules| {
                let n = modules.len();
                (Just(modules), bindings(n))
            })
        }

        /// The binding that applies to import `imp` of module `m`, if any.
        fn binding_for<'b>(bindings: &'b [Binding], m: usize, imp: &Import) -> Option<&'b Binding> {
            bindings.iter().find(|b| {
                b.name == NAMES[imp.name] && b.only_in.is_none_or(|o| o == module_base(m))
            })
        }

        /// Where a write lands: (module, import).
        fn locate(world: &World, addr: u64) -> (usize, usize) {
            world
                .slots
                .iter()
                .enumerate()
                .find_map(|(m, s)| Some((m, s.iter().position(|&a| a == addr)?)))
                .expect("every write is an import's slot")
        }

        proptest! {
            #[test]
            fn every_write_expects_what_its_slot_holds((modules, bindings) in world()) {
                let world = build(&modules);
                let plan = plan_slots(&world, &world.layouts, &bindings, &world.skip);
                for w in &plan.writes {
                    prop_assert_eq!(world.slot(w.addr), Some(w.expected));
                    prop_assert_ne!(w.expected, w.value);
                }
            }

            #[test]
            fn only_slots_holding_a_known_address_are_written(
                (modules, bindings) in world()
            ) {
                let world = build(&modules);
                let plan = plan_slots(&world, &world.layouts, &bindings, &world.skip);
                for w in &plan.writes {
                    let (m, i) = locate(&world, w.addr);
                    let imp = &modules[m].imports[i];
                    prop_assert!(imp.r_type != R_OTHER);
                    let b = binding_for(&bindings, m, imp).expect("a binding for the slot's name");
                    let held = w.expected.wrapping_sub(imp.addend as u64);
                    prop_assert!(b.known.contains(&held), "{:#x} not known to {:?}", held, b);
                    prop_assert_eq!(w.value, b.target.wrapping_add(imp.addend as u64));
                }
            }

            #[test]
            fn skipped_modules_are_never_written((modules, bindings) in world()) {
                let world = build(&modules);
                let plan = plan_slots(&world, &world.layouts, &bindings, &world.skip);
                for w in &plan.writes {
                    let (m, _) = locate(&world, w.addr);
                    prop_assert!(!world.skip.contains(&module_base(m)));
                }
                let all: Vec<u64> = world.layouts.iter().map(|l| l.base).collect();
                prop_assert!(plan_slots(&world, &world.layouts, &bindings, &all).writes.is_empty());
            }

            #[test]
            fn tallies_count_the_writes((modules, bindings) in world()) {
                let world = build(&modules);
                let plan = plan_slots(&world, &world.layouts, &bindings, &world.skip);
                prop_assert_eq!(plan.tallies.len(), bindings.len());
                let counted: usize = plan.tallies.iter().map(|t| t.slots).sum();
                prop_assert_eq!(counted, plan.writes.len());
                for t in &plan.tallies {
                    prop_assert_eq!(t.slots == 0, t.modules.is_empty());
                }
            }

            #[test]
            fn planning_again_after_the_writes_finds_nothing((modules, bindings) in world()) {
                let mut world = build(&modules);
                let plan = plan_slots(&world, &world.layouts, &bindings, &world.skip);
                world.apply(&plan.writes);
                let again = plan_slots(&world, &world.layouts, &bindings, &world.skip);
                prop_assert_eq!(again.writes, vec![]);
            }

            /// The whole plan against a model of the rules in this file's header: exactly the
            /// switchable slots are written, in module and relocation order, and each slot left
            /// alone is counted where it belongs.
            #[test]
            fn the_plan_is_exactly_the_model((modules, bindings) in world()) {
                let world = build(&modules);
                let plan = plan_slots(&world, &world.layouts, &bindings, &world.skip);
                let mut writes = Vec::new();
                let mut tallies = vec![Tally::default(); bindings.len()];
                for (m, module) in modules.iter().enumerate() {
                    if module.skipped {
                        continue;
                    }
                    let layout = &world.layouts[m];
                    for (i, imp) in module.imports.iter().enumerate() {
                        let Some(kind) = SlotKind::from_type(imp.r_type) else {
                            continue;
                        };
                        let Some(b) = binding_for(&bindings, m, imp) else {
                            continue;
                        };
                        let t = &mut tallies[bindings.iter().position(|x| x == b).unwrap()];
                        let value = slot_value(m, imp);
                        let held = value.wrapping_sub(imp.addend as u64);
                        let name = layout.file_name().to_string();
                        if b.known.contains(&held) && held != b.target {
                            let to = b.target.wrapping_add(imp.addend as u64);
                            writes.push(Write::slot(world.slots[m][i], value, to));
                            t.slots += 1;
                            if !t.modules.contains(&name) {
                                t.modules.push(name);
                            }
                        } else if b.known.contains(&held) {
                            t.bound += 1;
                            if !t.bound_in.contains(&name) {
                                t.bound_in.push(name);
                            }
                        } else if kind == SlotKind::JumpSlot && layout.is_code(value) {
                            t.lazy += 1;
                        } else if kind != SlotKind::Abs64 {
                            t.other += 1;
                        }
                    }
                }
                prop_assert_eq!(plan, Plan { writes, tallies });
            }
        }
    }
}
