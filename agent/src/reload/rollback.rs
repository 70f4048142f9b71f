//! Rollback: every slot and symbol-table entry back to the previous generation's addresses.

use super::entries::entry_warnings;
use super::error::ReloadError;
use super::plan::Binding;
use super::report::report;
use super::state::{micros, Agent};
use super::transaction::Gate;
use super::write::settled_modules;
use crate::sys::dl;
use hotagent_protocol::{RollbackReport, SymbolReport};
use std::time::Instant;

impl Agent {
    /// Rolls back one generation; `gate` is asked right before anything is written.
    pub fn rollback(&mut self, gate: Gate<'_>) -> Result<RollbackReport, ReloadError> {
        let t0 = Instant::now();
        let Some(gen) = self.generations.last().cloned() else {
            return Err(ReloadError::NothingToRollBack);
        };
        let bindings: Vec<Binding> = gen
            .symbols
            .iter()
            .map(|&i| self.binding(i, self.replaced[i].below_top()))
            .collect();
        gate()?;
        let settled = settled_modules();
        dl::barrier();
        let outcome = self.write_locked(&bindings, &gen.symbols, &settled)?;
        for &i in &gen.symbols {
            self.replaced[i].stack.pop();
        }
        self.generations.pop();
        let (pause, _) = self.converge_entries();
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
        let warnings = [outcome.warnings(), entry_warnings(&symbols)].concat();
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
        })
    }
}
