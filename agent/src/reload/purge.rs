//! Purge (`hotctl purge GEN`): unloads a retired generation's copy, Erlang's purge.
//!
//! Loaded generations stay loaded: a function pointer taken while one was current can lead into
//! it at any time, and the agent cannot see such pointers. The operator can vouch for them; the
//! agent checks everything it can see first and refuses, naming what it found, while any of it
//! still leads into the copy: a GOT or data slot of any module holding one of its addresses, a
//! replaced symbol's table entry or a function entry's jump (direct or through its dispatch stub)
//! leading there, a generation's layer or guard on it, a thread stopped in its code or with a
//! word of its stack pointing into it (a return address). Then it is dlclose'd (its destructors
//! run, as at any dlclose), its sealed copy closed, and the agent forgets its addresses.
//!
//! Only a retired generation can go: the current one, one still on the stack below it, and
//! generation 0 (the program's own code) are refused.

use super::modules;
use super::plan::{plan_slots, Binding};
use super::state::{micros, Agent, StagedLib};
use super::write::self_base;
use crate::sys::stacks::{find_inside, Inside};
use crate::sys::{dl, phdr, raw, sealed};
use hotagent_protocol::{ErrorCode, PurgeReport};
use std::time::Instant;

/// Why a purge was refused; nothing was unloaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurgeError {
    #[error("generation 0 is the program's own code: it cannot be purged")]
    Original,
    #[error("generation {0} is the current generation: roll it back first, then purge it")]
    Current(u32),
    #[error("generation {0} is live (below the current generation {1}): roll back below it first")]
    Live(u32, u32),
    #[error("no retired generation {0} is loaded (never made, or purged already)")]
    Unknown(u32),
    #[error("generation {generation} is still in use: {why}; nothing was unloaded")]
    InUse { generation: u32, why: String },
    #[error("generation {generation} could not be checked: {why}; nothing was unloaded")]
    Unchecked { generation: u32, why: String },
}

impl PurgeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PurgeError::Unchecked { .. } => ErrorCode::Internal,
            _ => ErrorCode::PurgeRefused,
        }
    }
}

/// A copy to unload, and where it lies.
struct Doomed {
    lib: StagedLib,
    label: String,
    ranges: Vec<(u64, u64)>,
    base: u64,
}

impl Agent {
    /// Unloads retired generation `generation`, unless something still leads into it.
    pub fn purge(&mut self, generation: u32) -> Result<PurgeReport, PurgeError> {
        let t0 = Instant::now();
        let doomed = self.doomed(generation)?;
        let ranges: Vec<(u64, u64)> = doomed.iter().flat_map(|d| d.ranges.clone()).collect();
        let in_use = |why: String| PurgeError::InUse { generation, why };
        if let Some(why) = self.referenced(&ranges, &doomed) {
            return Err(in_use(why));
        }
        match find_inside(&ranges) {
            Ok(None) => {}
            Ok(Some(Inside::Pc { pc })) => {
                return Err(in_use(format!("a thread is running its code (at {pc:#x})")))
            }
            Ok(Some(Inside::Stack { tid, word })) => {
                return Err(in_use(format!(
                    "thread {tid} will return into it (its stack holds {word:#x}, an address in its code)"
                )))
            }
            Err(why) => return Err(PurgeError::Unchecked { generation, why }),
        }
        let mut report = PurgeReport {
            generation,
            ..PurgeReport::default()
        };
        for d in doomed {
            self.unload(&d);
            report.bytes += d.ranges.iter().map(|(lo, hi)| hi - lo).sum::<u64>();
            report.unloaded.push(d.label);
        }
        report.elapsed_us = micros(t0);
        tracing::info!(generation, unloaded = ?report.unloaded, "purged");
        Ok(report)
    }

    /// The loaded copies generation `generation` names, once it is known to be retired.
    fn doomed(&self, generation: u32) -> Result<Vec<Doomed>, PurgeError> {
        if generation == 0 {
            return Err(PurgeError::Original);
        }
        if generation == self.generation() {
            return Err(PurgeError::Current(generation));
        }
        if self.generations.iter().any(|g| g.number == generation) {
            return Err(PurgeError::Live(generation, self.generation()));
        }
        let snapshot = phdr::snapshot();
        let doomed: Vec<Doomed> = self
            .staged
            .iter()
            .filter(|l| l.generation == generation)
            // A live generation may run a copy an earlier one loaded (see `reuse.rs`).
            .filter(|l| !self.generations.iter().any(|g| g.staged == l.path))
            .filter_map(|l| {
                let m = snapshot.iter().find(|m| m.name == l.path)?;
                let ranges = m
                    .phdrs
                    .iter()
                    .filter(|p| p.p_type == libc::PT_LOAD)
                    .map(|p| (m.base + p.p_vaddr, m.base + p.p_vaddr + p.p_memsz))
                    .collect();
                Some(Doomed {
                    lib: l.clone(),
                    label: format!("{}#{}", l.file_name, l.generation),
                    ranges,
                    base: m.base,
                })
            })
            .collect();
        if doomed.is_empty() {
            return Err(PurgeError::Unknown(generation));
        }
        Ok(doomed)
    }

    /// What the agent can see that still leads into `ranges`, said for the operator.
    fn referenced(&self, ranges: &[(u64, u64)], doomed: &[Doomed]) -> Option<String> {
        let within = |a: u64| ranges.iter().any(|&(lo, hi)| a >= lo && a < hi);
        for r in &self.replaced {
            if let Some(l) = r
                .stack
                .iter()
                .find(|l| within(l.addr) || l.probation.is_some_and(within))
            {
                return Some(format!(
                    "a live generation's {} is its code (at {:#x})",
                    r.name, l.addr
                ));
            }
            let mut value = [0u8; 8];
            if raw::read_own_memory(r.entry + 8, &mut value) == Ok(8) {
                let to = r.module_base.wrapping_add(u64::from_ne_bytes(value));
                if within(to) {
                    return Some(format!(
                        "the symbol-table entry of {} in {} leads into it",
                        r.name, r.module_path
                    ));
                }
            }
            if let Some((site, to)) = r
                .code
                .iter()
                .filter_map(|c| Some((c.addr, self.entries.lands_at(c.addr)?)))
                .find(|&(site, to)| within(to) && !within(site))
            {
                return Some(format!(
                    "the entry of {} at {site:#x} jumps into it (to {to:#x})",
                    r.name
                ));
            }
        }
        self.slots_into(ranges, doomed)
    }

    /// GOT and data slots of any other module holding one of the copies' addresses.
    fn slots_into(&self, ranges: &[(u64, u64)], doomed: &[Doomed]) -> Option<String> {
        let within = |a: u64| ranges.iter().any(|&(lo, hi)| a >= lo && a < hi);
        let bindings: Vec<Binding> = self
            .replaced
            .iter()
            .filter_map(|r| {
                let known: Vec<u64> = r.known.iter().copied().filter(|&a| within(a)).collect();
                (!known.is_empty()).then(|| Binding {
                    name: r.name.clone(),
                    known,
                    target: u64::MAX,
                    only_in: None,
                })
            })
            .collect();
        if bindings.is_empty() {
            return None;
        }
        let plan = phdr::with_modules_locked(|mods| {
            let layouts = modules::layouts(&mods, &self.exe, self.page);
            let mem = modules::live_memory(mods.lock(), &layouts);
            let mut skip: Vec<u64> = doomed.iter().map(|d| d.base).collect();
            skip.push(self_base(&layouts));
            plan_slots(&mem, &layouts, &bindings, &skip)
        });
        let (b, t) = bindings
            .iter()
            .zip(&plan.tallies)
            .find(|(_, t)| t.slots > 0)?;
        Some(format!(
            "{} slot(s) for {} still hold its address ({})",
            t.slots,
            b.name,
            t.modules.join(", ")
        ))
    }

    /// Unloads one copy and forgets it.
    fn unload(&mut self, d: &Doomed) {
        dl::close(d.lib.handle);
        let still = phdr::snapshot().iter().any(|m| m.name == d.lib.path);
        if still {
            // RTLD_NODELETE or unique symbols: the loader keeps it, so its descriptor stays ours.
            tracing::warn!(label = d.label, "the loader keeps the purged copy mapped");
        } else {
            sealed::close_kept(&d.lib.path);
        }
        let within = |a: u64| d.ranges.iter().any(|&(lo, hi)| a >= lo && a < hi);
        for r in &mut self.replaced {
            r.known.retain(|&a| !within(a));
            r.code.retain(|c| !within(c.addr));
        }
        for &(lo, hi) in &d.ranges {
            self.entries.forget_range(lo, hi);
        }
        self.staged.retain(|l| l.path != d.lib.path);
    }
}
