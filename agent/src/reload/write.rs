//! The locked pass shared by reload and rollback: plan, write, verify, under the list lock.

use super::error::ReloadError;
use super::modules;
use super::plan::{plan_indexed, Binding, Plan};
use super::state::{micros, Agent};
use crate::entry::Entries;
use crate::hooks::{Phase, Session, Stopped};
use crate::image::{Layout, Memory};
use crate::patch::{self, Batch, Write};
use crate::sys::mem::LiveMemory;
use crate::sys::{mem, phdr};
use hotagent_protocol::PauseReport;
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
            let layouts = self.settled_layouts(&mods, settled);
            let mem = modules::live_memory(mods.lock(), &layouts);
            let (plan, writes, symtab) = self.plan_writes(&mem, &layouts, bindings, touched)?;
            let t = Instant::now();
            patch::apply(&writes, &layouts).map_err(|cause| ReloadError::SlotsPutBack { cause })?;
            let write_us = micros(t);
            let t = Instant::now();
            let verify_fixes = self.verify(&mem, &layouts, bindings);
            Ok(Outcome {
                plan,
                write_us,
                verify_us: micros(t),
                symtab,
                verify_fixes,
            })
        })
    }

    /// The switch with every other thread parked: `parked`'s hook first, then every slot,
    /// symbol-table entry and `parked.extra` write in one batch, then the function entries, all
    /// in one stop; verify rounds follow once the threads run again.
    pub(super) fn switch_parked(
        &mut self,
        bindings: &[Binding],
        touched: &[usize],
        settled: &[u64],
        parked: Parked<'_>,
    ) -> Result<(Outcome, PauseReport), ParkedError> {
        Entries::stoppable().map_err(|e| ParkedError::NoStop(NoParkedStop::Entry(e)))?;
        phdr::with_modules_locked(|mods| {
            let layouts = self.settled_layouts(&mods, settled);
            let mem = modules::live_memory(mods.lock(), &layouts);
            let (mut plan, mut writes, symtab) = self
                .plan_writes(&mem, &layouts, bindings, touched)
                .map_err(ParkedError::Write)?;
            // The extra writes own their slots (a vtable's, say, which the plan may also name).
            writes.retain(|w| !parked.extra.iter().any(|x| x.addr == w.addr));
            plan.writes
                .retain(|w| !parked.extra.iter().any(|x| x.addr == w.addr));
            writes.extend(parked.extra.iter().copied());
            let mut batch = Batch::new(writes);
            let Parked {
                mut session,
                phase,
                restore,
                ..
            } = parked;
            let mut outcome: Option<Result<(), ParkedError>> = None;
            let t = Instant::now();
            let mut inside = || {
                if let Some(s) = session.as_deref_mut() {
                    if let Err(why) = s.run(phase) {
                        outcome = Some(Err(ParkedError::Hook(why)));
                        return false;
                    }
                }
                match batch.apply(&layouts) {
                    Ok(()) => {
                        if let Some(s) = restore {
                            // Allocation-free: the other threads are parked.
                            s.restore(&layouts);
                        }
                        outcome = Some(Ok(()));
                        true
                    }
                    Err(e) => {
                        outcome = Some(Err(ParkedError::Write(ReloadError::SlotsPutBack {
                            cause: e,
                        })));
                        false
                    }
                }
            };
            let pause = self.converge_entries_in(&mem, &layouts, Some(&mut inside));
            let write_us = micros(t);
            match outcome {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(e),
                None if pause.rounds > 1 => {
                    return Err(ParkedError::NoStop(NoParkedStop::HeldInside {
                        rounds: pause.rounds,
                    }))
                }
                None => return Err(ParkedError::NoStop(NoParkedStop::NotStopped)),
            }
            let t = Instant::now();
            let verify_fixes = self.verify(&mem, &layouts, bindings);
            Ok((
                Outcome {
                    plan,
                    write_us,
                    verify_us: micros(t),
                    symtab,
                    verify_fixes,
                },
                pause,
            ))
        })
    }

    /// The loaded modules that were settled before the pass began: a module that appeared
    /// after `settled` was taken may still be mid-relocation (its RELRO not yet read-only), so
    /// it is left to the loader, which binds it through the symbol table we redirect.
    fn settled_layouts(&self, mods: &[phdr::ModuleInfo], settled: &[u64]) -> Vec<Layout> {
        modules::layouts(mods, &self.exe, self.page)
            .into_iter()
            .filter(|l| settled.contains(&l.base))
            .collect()
    }

    /// The slot writes of `bindings` and the symbol-table writes of `touched`.
    fn plan_writes(
        &self,
        mem: &LiveMemory,
        layouts: &[Layout],
        bindings: &[Binding],
        touched: &[usize],
    ) -> Result<(Plan, Vec<Write>, usize), ReloadError> {
        let plan = self.plan_cached(mem, layouts, bindings, true);
        let mut writes = plan.writes.clone();
        let mut symtab = 0;
        for (&i, b) in touched.iter().zip(bindings) {
            let r = &self.replaced[i];
            if !layouts
                .iter()
                .any(|l| l.base == r.module_base && l.path == r.module_path)
            {
                return Err(ReloadError::ModuleUnloaded {
                    module: r.module_path.clone(),
                });
            }
            let now_value = mem.u64(r.entry + 8).unwrap_or(r.orig_value);
            let now_info = mem.u8(r.entry + 4).unwrap_or(r.orig_info);
            let w = r.symtab_writes(b.target, now_value, now_info);
            symtab += usize::from(!w.is_empty());
            writes.extend(w);
        }
        Ok((plan, writes, symtab))
    }

    /// The plan over `layouts` but the agent's own, from the slot index; `refresh` first brings
    /// the index up to date with `layouts` (once per locked pass).
    pub(super) fn plan_cached(
        &self,
        mem: &LiveMemory,
        layouts: &[Layout],
        bindings: &[Binding],
        refresh: bool,
    ) -> Plan {
        let me = self_base(layouts);
        let mut index = self.slot_index.lock().unwrap_or_else(|p| p.into_inner());
        if refresh {
            index.refresh(mem, layouts);
        }
        let modules = layouts
            .iter()
            .filter(|l| l.base != me)
            .filter_map(|l| Some((l, index.get(l)?)));
        plan_indexed(mem, modules, bindings)
    }

    /// Re-plans up to [`VERIFY_ROUNDS`] times to catch a slot the lazy resolver bound to an older
    /// generation while we were writing; returns how many slots it rebound.
    fn verify(&self, mem: &LiveMemory, layouts: &[Layout], bindings: &[Binding]) -> usize {
        let mut fixes = 0;
        for _ in 0..VERIFY_ROUNDS {
            let again = self.plan_cached(mem, layouts, bindings, false);
            if again.writes.is_empty() {
                break;
            }
            fixes += again.writes.len();
            // A slot that moved again between plan and write is left to the next round.
            for w in again.writes {
                let _ = patch::apply(&[w], layouts);
            }
        }
        fixes
    }
}

/// What the parked switch does besides the plan: the hook to run first and extra writes.
pub(super) struct Parked<'a> {
    pub(super) session: Option<&'a mut Session>,
    pub(super) phase: Phase,
    pub(super) extra: Vec<Write>,
    /// Private data to put back once the batch is written (a rollback with `reset`).
    pub(super) restore: Option<&'a super::private::Snapshot>,
}

/// Why the parked switch changed nothing.
#[derive(Debug)]
pub(super) enum ParkedError {
    /// The hook refused, failed or timed out (word it with `Session::describe`).
    Hook(Stopped),
    Write(ReloadError),
    NoStop(NoParkedStop),
}

/// Why a switch that needs every other thread parked at once found no such moment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoParkedStop {
    #[error(transparent)]
    Entry(#[from] crate::entry::error::EntryError),
    #[error("in each of {rounds} stops some thread was inside the code being switched (an entry's first bytes, or a method of a class being converted)")]
    HeldInside { rounds: u32 },
    #[error("the other threads could not be stopped (`hotctl status` shows why for each entry)")]
    NotStopped,
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
