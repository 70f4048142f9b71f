//! Turning planner tallies into the per-symbol reports on the wire.

use super::plan::Plan;
use super::select::{Match, Role};
use hotagent_protocol::SymbolReport;

pub(super) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Code => "function",
        Role::Rodata => "rodata",
        Role::State => "state",
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
