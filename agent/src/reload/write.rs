//! The locked pass shared by reload and rollback: plan, write, verify, under the list lock.

use super::error::ReloadError;
use super::modules;
use super::plan::{plan_slots, Binding, Plan};
use super::state::{micros, Agent};
use crate::image::{Layout, Memory};
use crate::patch;
use crate::sys::{mem, phdr};
use std::time::Instant;

/// How many times the verify step re-plans to catch a slot the lazy resolver bound to an older
/// generation while we were writing.
const VERIFY_ROUNDS: usize = 3;

/// What a locked write pass did.
pub(super) struct Outcome {
    pub(super) plan: Plan,
    pub(super) write_us: u64,
    pub(super) verify_us: u64,
    pub(super) symtab: usize,
    pub(super) verify_fixes: usize,
}

impl Agent {
    /// Plans and writes under the list lock: slots, then the symbol-table entries of `touched`
    /// (the first `touched.len()` bindings, in order), then verify rounds. Only modules in
    /// `settled` are written.
    pub(super) fn write_locked(
        &self,
        bindings: &[Binding],
        touched: &[usize],
        settled: &[u64],
    ) -> Result<Outcome, ReloadError> {
        phdr::with_modules_locked(|mods| {
            // A module that appeared after `settled` was taken may still be mid-relocation (its
            // RELRO not yet read-only): leave it to the loader, which binds it through the
            // symbol table we redirect.
            let layouts: Vec<Layout> = modules::layouts(&mods, &self.exe, self.page)
                .into_iter()
                .filter(|l| settled.contains(&l.base))
                .collect();
            let mem = modules::live_memory(&layouts);
            let skip = [self_base(&layouts)];
            let plan = plan_slots(&mem, &layouts, bindings, &skip);
            let mut writes = plan.writes.clone();
            let mut symtab = 0;
            for (&i, b) in touched.iter().zip(bindings) {
                let r = &self.replaced[i];
                if !layouts
                    .iter()
                    .any(|l| l.base == r.module_base && l.path == r.module_path)
                {
                    return Err(ReloadError::WriteFailed(format!(
                        "{} was unloaded; nothing was changed",
                        r.module_path
                    )));
                }
                let now_value = mem.u64(r.entry + 8).unwrap_or(r.orig_value);
                let now_info = mem.u8(r.entry + 4).unwrap_or(r.orig_info);
                let w = r.symtab_writes(b.target, now_value, now_info);
                symtab += usize::from(!w.is_empty());
                writes.extend(w);
            }
            let t = Instant::now();
            patch::apply(&writes, &layouts).map_err(|e| {
                ReloadError::WriteFailed(format!("{e}; every slot written was put back"))
            })?;
            let write_us = micros(t);
            let t = Instant::now();
            let mut verify_fixes = 0;
            for _ in 0..VERIFY_ROUNDS {
                let again = plan_slots(&mem, &layouts, bindings, &skip);
                if again.writes.is_empty() {
                    break;
                }
                verify_fixes += again.writes.len();
                // A slot that moved again between plan and write is left to the next round.
                for w in again.writes {
                    let _ = patch::apply(&[w], &layouts);
                }
            }
            Ok(Outcome {
                plan,
                write_us,
                verify_us: micros(t),
                symtab,
                verify_fixes,
            })
        })
    }
}

impl Outcome {
    /// What the operator should hear about the pass.
    pub(super) fn warnings(&self) -> Vec<String> {
        if self.verify_fixes == 0 {
            return Vec::new();
        }
        vec![format!(
            "{} slot(s) bound lazily during the switch were rebound by the verify pass",
            self.verify_fixes
        )]
    }
}

/// The modules loaded now. Taken before a barrier (our own `dlopen`, or `dl::barrier`), every one
/// of them has finished loading by the time the writes start.
pub(super) fn settled_modules() -> Vec<u64> {
    phdr::snapshot().iter().map(|m| m.base).collect()
}

/// The agent's own module: its slots are never switched, so a broken patch cannot break the
/// agent that has to roll it back.
pub(super) fn self_base(layouts: &[Layout]) -> u64 {
    let me = mem::own_address();
    layouts
        .iter()
        .find(|l| l.contains(me))
        .map_or(u64::MAX, |l| l.base)
}
