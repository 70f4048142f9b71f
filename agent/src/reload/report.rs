//! Turning planner tallies into the per-symbol reports on the wire.

use super::modules;
use super::plan::{Binding, Plan};
use super::select::{Match, Role};
use super::state::Agent;
use crate::sys::phdr;
use hotagent_protocol::SymbolReport;

pub(super) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Code => "function",
        Role::Rodata => "rodata",
        Role::State => "state",
        Role::Moved => "variable",
    }
}

pub(super) fn report(
    name: &str,
    version: Option<String>,
    role: Role,
    t: &super::plan::Tally,
) -> SymbolReport {
    SymbolReport {
        name: name.to_string(),
        version,
        kind: role_name(role).to_string(),
        slots: t.slots,
        modules: t.modules.clone(),
        lazy: t.lazy,
        other: t.other,
        entries: Vec::new(),
    }
}

pub(super) fn symbol_reports(matches: &[Match], plan: &Plan) -> Vec<SymbolReport> {
    matches
        .iter()
        .filter(|m| m.role != Role::State)
        .zip(&plan.tallies)
        .map(|(m, t)| report(&m.old.name, m.old.version.clone(), m.role, t))
        .collect()
}

impl Agent {
    /// Every replaced symbol as it stands: the slots bound to its current code now (counted
    /// live, so slots the lazy resolver bound since are included) and what its entries hold.
    pub(super) fn coverage(&self) -> Vec<SymbolReport> {
        let bindings: Vec<Binding> = (0..self.replaced.len())
            .map(|i| self.binding(i, self.replaced[i].current()))
            .collect();
        // From the slot index the reloads keep (brought up to date here): reading every module's
        // relocation tables and symbol names afresh was most of what a status cost the agent.
        let plan = phdr::with_modules_locked(|mods| {
            let layouts = modules::layouts(&mods, &self.exe, self.page);
            let mem = modules::live_memory(mods.lock(), &layouts);
            self.plan_cached(&mem, &layouts, &bindings, true)
        });
        let all: Vec<usize> = (0..self.replaced.len()).collect();
        let mut out: Vec<SymbolReport> = self
            .replaced
            .iter()
            .zip(&plan.tallies)
            .zip(self.entry_reports(&all))
            .map(|((r, t), entries)| {
                let mut s = report(&r.name, r.version.clone(), r.role, t);
                s.slots = t.bound + t.slots;
                s.modules = t.bound_in.clone();
                for m in &t.modules {
                    if !s.modules.contains(m) {
                        s.modules.push(m.clone());
                    }
                }
                s.entries = entries;
                s
            })
            .collect();
        self.name_generations(&mut out);
        out
    }
}
