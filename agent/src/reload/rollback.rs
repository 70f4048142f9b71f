//! Rollback: every slot and symbol-table entry back to the previous generation's addresses.
//!
//! A rollback either happens or is refused: entries that jump into the code being left must be
//! rewritten (else calls through them keep running it), and that needs the other threads
//! stopped. When that cannot be done — the program replaced the agent's stop-signal handler, a
//! thread blocks the signal, the text cannot be written — the rollback is refused before
//! anything changes. If it fails anyway (the handler replaced between the check and the stop),
//! it is undone and reported as failed.

use super::entries::{entry_warnings, pause_warnings, SiteWant};
use super::error::ReloadError;
use super::hook_failure::HookFailure;
use super::hooked::let_conversions_go;
use super::plan::Binding;
use super::report::report;
use super::state::{micros, Agent, Generation, Layer};
use super::transaction::Gate;
use super::write::{settled_modules, Parked, ParkedError};
use crate::entry::Entries;
use crate::hooks::{Phase, Session};
use crate::patch::Write;
use crate::sys::dl;
use hotagent_protocol::{RollbackReport, SymbolReport};
use std::time::Duration;
use std::time::Instant;

impl Agent {
    /// Rolls back one generation; `gate` is asked right before anything is written. When the
    /// generation's library has an unmigrate hook, it runs with every other thread parked, right
    /// before the calls go back, and may refuse (each hook within `hook_timeout`). With `reset`,
    /// the generation's checkpoint (if it has one) is written back in the same stop.
    pub fn rollback(
        &mut self,
        hook_timeout: Duration,
        reset: bool,
        gate: Gate<'_>,
    ) -> Result<RollbackReport, ReloadError> {
        let t0 = Instant::now();
        let Some(gen) = self.generations.last().cloned() else {
            return Err(ReloadError::NothingToRollBack);
        };
        let extra = self.classes_back(&gen)?;
        let through = self.back_through_thunks(&gen)?;
        let bindings: Vec<Binding> = gen
            .symbols
            .iter()
            .map(|&i| {
                let to = through
                    .iter()
                    .find(|(k, _)| *k == i)
                    .map_or_else(|| self.replaced[i].below_top(), |&(_, t)| t);
                self.binding(i, to)
            })
            .collect();
        self.entries_can_follow(&gen)?;
        let mut session = self.unmigrate_session(&gen, hook_timeout)?;
        gate()?;
        let settled = settled_modules();
        dl::barrier();
        let mut unmigrate_us = 0;
        let (restore, reset_notes) = Agent::reset_plan(&gen, reset);
        let parked = session.is_some() || !gen.classes.is_empty() || restore.is_some();
        let (outcome, layers, pause) = match parked {
            true => {
                // The stop's entry writes follow the stacks: the generation comes off first.
                let layers = self.pop_generation(&gen);
                let parked = Parked {
                    session: session.as_mut(),
                    phase: Phase::Unmigrate,
                    extra,
                    restore: restore.as_deref(),
                };
                for k in &gen.classes {
                    k.hold();
                }
                let switched = self.switch_parked(&bindings, &gen.symbols, &settled, parked);
                let new: Vec<(u64, u64)> = gen.methods.iter().map(|m| m.new).collect();
                let_conversions_go(&gen.classes, &new, switched.is_ok());
                match switched {
                    Ok((outcome, pause)) => {
                        unmigrate_us = session.as_ref().map_or(0, |s| s.micros(Phase::Unmigrate));
                        (outcome, layers, pause)
                    }
                    Err(e) => {
                        self.push_generation(gen.clone(), layers);
                        return Err(self.unmigrate_refused(&gen, session.as_ref(), e));
                    }
                }
            }
            false => {
                let outcome = self.write_locked(&bindings, &gen.symbols, &settled)?;
                let layers = self.pop_generation(&gen);
                let (pause, _) = self.converge_entries();
                (outcome, layers, pause)
            }
        };
        drop(session);
        let stray = self.stray_jumps();
        if !stray.is_empty() {
            return Err(self.undo_rollback(gen, layers, &stray, &settled));
        }
        Agent::left_probation(&gen);
        let mut symbols: Vec<SymbolReport> = gen
            .symbols
            .iter()
            .zip(&outcome.plan.tallies)
            .zip(self.entry_reports(&gen.symbols))
            .map(|((&i, t), entries)| {
                let r = &self.replaced[i];
                let mut s = report(&r.name, r.version.clone(), r.role, t);
                s.entries = entries;
                s
            })
            .collect();
        self.name_generations(&mut symbols);
        let warnings = [
            outcome.warnings(),
            entry_warnings(&symbols),
            pause_warnings(&pause),
            reset_notes,
        ]
        .concat();
        let elapsed_us = micros(t0);
        tracing::info!(
            from = gen.number,
            to = self.generation(),
            elapsed_us,
            "rolled back"
        );
        Ok(RollbackReport {
            generation: self.generation(),
            from: gen.number,
            slots: outcome.plan.writes.len(),
            symtab_entries: outcome.symtab,
            symbols,
            elapsed_us,
            pause,
            warnings,
            unmigrate_us,
        })
    }

    /// The vtable writes that send `gen`'s converted classes back: old slots restored, new slots
    /// to downgrade thunks. Refused when a class has no downgrade: objects on its new layout
    /// may exist (converted, or made by the new code), and old code cannot run on them.
    fn classes_back(&self, gen: &Generation) -> Result<Vec<Write>, ReloadError> {
        let mut out = Vec::new();
        for class in &gen.classes {
            let writes = class.rollback_writes().map_err(|e| {
                ReloadError::from(HookFailure::ClassesStuck {
                    generation: gen.number,
                    cause: e,
                })
            })?;
            out.extend(
                writes
                    .into_iter()
                    .map(|w| Write::slot(w.addr, w.expected, w.value)),
            );
        }
        Ok(out)
    }

    /// Calls that reach an old method of a converted class through its symbol (GOT slots,
    /// lookups) after the rollback go through a thunk that converts an object still on the new
    /// layout back first; the old entry itself holds its own bytes again, so a library's own
    /// direct calls into it are not converted (see design.md). Returns (symbol, thunk) pairs;
    /// each thunk joins the symbol's known addresses, so a later reload finds its slots.
    fn back_through_thunks(&mut self, gen: &Generation) -> Result<Vec<(usize, u64)>, ReloadError> {
        let mut out = Vec::new();
        for class in &gen.classes {
            for m in 0..class.methods() {
                let old = class.old_method(m);
                for &i in &gen.symbols {
                    if self.replaced[i].below_top() != old || out.iter().any(|(k, _)| *k == i) {
                        continue;
                    }
                    let thunk = class.rollback_entry_thunk(old).map_err(|e| {
                        ReloadError::from(HookFailure::NoRollbackThunk {
                            generation: gen.number,
                            cause: e,
                        })
                    })?;
                    if !self.replaced[i].known.contains(&thunk) {
                        self.replaced[i].known.push(thunk);
                    }
                    out.push((i, thunk));
                }
            }
        }
        Ok(out)
    }

    /// The session for `gen`'s unmigrate hook, if its library has one.
    fn unmigrate_session(
        &self,
        gen: &Generation,
        hook_timeout: Duration,
    ) -> Result<Option<Session>, ReloadError> {
        if gen.hooks.unmigrate.is_none() {
            return Ok(None);
        }
        let (ctx, _) = self.hook_context(
            &gen.layout,
            gen.number,
            gen.number.saturating_sub(1),
            &gen.staged,
            &gen.path,
        );
        Session::open(ctx, gen.hooks, hook_timeout)
            .map(Some)
            .map_err(|e| {
                ReloadError::from(HookFailure::UnmigrateCannotRun {
                    generation: gen.number,
                    cause: e,
                })
            })
    }

    /// Why a rollback whose unmigrate ran in the stop changed nothing.
    fn unmigrate_refused(
        &self,
        gen: &Generation,
        session: Option<&Session>,
        e: ParkedError,
    ) -> ReloadError {
        let n = gen.number;
        match (e, session) {
            (ParkedError::Hook(why), Some(s)) => HookFailure::UnmigrateStopped {
                generation: n,
                stop: s.describe(why),
            }
            .into(),
            (ParkedError::Hook(_), None) => ReloadError::HookWithoutSession,
            (ParkedError::Write(e), _) => e,
            (ParkedError::NoStop(cause), _) => {
                let what = match (session.is_some(), gen.classes.is_empty()) {
                    (true, _) => "its hotagent_unmigrate needs",
                    (false, false) => "converting its classes back needs",
                    (false, true) => "the reset of its checkpoint needs",
                };
                ReloadError::RollbackNotParked {
                    generation: n,
                    what,
                    cause,
                }
            }
        }
    }

    /// The top generation's layers, taken off (in `gen.symbols` order), and the generation.
    fn pop_generation(&mut self, gen: &Generation) -> Vec<Option<Layer>> {
        let layers = gen
            .symbols
            .iter()
            .map(|&i| self.replaced[i].stack.pop())
            .collect();
        self.generations.pop();
        layers
    }

    fn push_generation(&mut self, gen: Generation, layers: Vec<Option<Layer>>) {
        for (&i, layer) in gen.symbols.iter().zip(layers) {
            self.replaced[i].stack.extend(layer);
        }
        self.generations.push(gen);
    }

    /// Refuses, before anything changes, a rollback whose entries that jump into the code being
    /// left could not be rewritten now.
    fn entries_can_follow(&mut self, gen: &Generation) -> Result<(), ReloadError> {
        let layers = self.pop_generation(gen);
        let stray = self.stray_jumps();
        self.push_generation(gen.clone(), layers);
        if stray.is_empty() {
            return Ok(());
        }
        let why = Entries::stoppable().err().map(|e| (true, e)).or_else(|| {
            // Whether text can be written is a property of its page (its mapping's protection
            // and backing), and each probe opens /proc/self/mem: one probe per page. The
            // entries jump now, so the reload found each site itself writable.
            let mut pages: Vec<u64> = Vec::new();
            let feasibility = self.entries.feasibility();
            stray
                .iter()
                .filter(|w| {
                    let page = w.addr & !(self.page - 1);
                    let first = !pages.contains(&page);
                    pages.push(page);
                    first
                })
                .find_map(|w| feasibility.feasible(w.addr).err())
                .map(|e| (false, e))
        });
        match why {
            None => Ok(()),
            Some((threads, cause)) => Err(ReloadError::RollbackBlocked {
                generation: gen.number,
                entries: self.describe(&stray),
                threads,
                cause,
            }),
        }
    }

    /// Puts generation `gen` back after its rollback left `stray` entries jumping into it.
    fn undo_rollback(
        &mut self,
        gen: Generation,
        layers: Vec<Option<Layer>>,
        stray: &[SiteWant],
        settled: &[u64],
    ) -> ReloadError {
        let what = self.describe(stray);
        let cause = stray
            .iter()
            .find_map(|w| self.entries.get(w.addr)?.last_error.clone());
        let n = gen.number;
        let symbols = gen.symbols.clone();
        self.push_generation(gen, layers);
        let bindings: Vec<Binding> = symbols
            .iter()
            .map(|&i| self.binding(i, self.replaced[i].current()))
            .collect();
        let undone = self.write_locked(&bindings, &symbols, settled);
        self.converge_entries();
        let undone = undone.is_ok() && self.stray_jumps().is_empty();
        let e = ReloadError::RollbackUndone {
            generation: n,
            entries: what,
            undone,
            cause,
        };
        tracing::warn!(generation = n, "rollback failed: {e}");
        e
    }

    /// `the entries of foo, bar (in libfoo.so, jumping to libfoo.so#1's code)`.
    fn describe(&self, stray: &[SiteWant]) -> String {
        const SHOWN: usize = 8;
        let Some(first) = stray.first() else {
            return "no entry".to_string();
        };
        let mut names: Vec<&str> = Vec::new();
        for w in stray {
            let n = self.replaced[w.symbol].name.as_str();
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let more = match names.len() {
            n if n > SHOWN => format!(" and {} more", n - SHOWN),
            _ => String::new(),
        };
        let module = self
            .entries
            .get(first.addr)
            .map_or_else(|| "?".to_string(), |s| s.label.clone());
        let to = self
            .entries
            .lands_at(first.addr)
            .map_or_else(|| "other code".to_string(), |t| self.code_label(t));
        format!(
            "the {} of {}{more} (in {module}, jumping to {to})",
            if stray.len() == 1 { "entry" } else { "entries" },
            names[..names.len().min(SHOWN)].join(", "),
        )
    }
}
