//! Probation: for a while after a reload, calls into the new generation go through guards, and
//! a crash in its code sends the process back to the previous generation at once.
//!
//! The reload points every slot and symbol-table entry of a replaced function at the function's
//! guard stub (`sys::guard`) instead of the new code, and leaves function entries as the previous
//! generation had them: the guard's way back (the previous generation's code) must keep its own
//! bytes. The signal handler (`sys::probation`) flips the generation to "reverted" — one store,
//! which every guard reads — re-runs the crashed call on the previous code, and wakes the I/O
//! thread, which hands the worker the rest: a real rollback that takes the stubs out of the
//! slots, and the record `status` shows. When the probation ends without a crash, the slots and
//! entries are switched from the stubs to the new code itself: steady-state calls pay nothing.

use super::error::{IoErrno, ReloadError};
use super::select::{Match, Role};
use super::state::{Agent, Generation};
use super::write::settled_modules;
use crate::image::Layout;
use crate::sys::guard::{GuardFn, GuardSet, GuardState};
use crate::sys::{phdr, probation as handler, raw};
use hotagent_protocol::{ProbationInfo, RevertedInfo};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// The I/O thread's wake-up socket: the handler sends a byte there after a revert.
static WAKE: AtomicI32 = AtomicI32::new(-1);
/// When the probation in force ends, in `raw::monotonic_ms` time; 0 when none runs. Read by the
/// I/O thread without the agent's lock.
static UNTIL: AtomicU64 = AtomicU64::new(0);

/// Where the handler wakes the I/O thread (its socket pair's writing end).
pub fn set_wake(fd: i32) {
    WAKE.store(fd, Ordering::SeqCst);
}

/// When the probation in force ends, if one runs.
pub fn due_at() -> Option<u64> {
    match UNTIL.load(Ordering::SeqCst) {
        0 => None,
        t => Some(t),
    }
}

/// True once, when the probation in force is over at `now`: the caller ends it.
pub fn take_due(now: u64) -> bool {
    let until = UNTIL.load(Ordering::SeqCst);
    until != 0
        && now >= until
        && UNTIL
            .compare_exchange(until, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
}

/// A generation on probation.
#[derive(Clone)]
pub(super) struct OnProbation {
    set: &'static GuardSet,
    duration_ms: u64,
    until_ms: u64,
}

impl std::fmt::Debug for OnProbation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OnProbation({} functions, {:?}, {} ms)",
            self.set.len(),
            self.set.state(),
            self.duration_ms
        )
    }
}

impl OnProbation {
    pub(super) fn duration_ms(&self) -> u64 {
        self.duration_ms
    }
    /// What `status` shows: only while the guards still decide.
    pub(super) fn info(&self) -> Option<ProbationInfo> {
        (self.set.state() == GuardState::Active).then(|| ProbationInfo {
            duration_ms: self.duration_ms,
            remaining_ms: self.until_ms.saturating_sub(raw::monotonic_ms()),
        })
    }
}

/// A reload's guards, before the switch: the set, and per match the new code its stub guards.
pub(super) struct Guards {
    pub(super) set: &'static GuardSet,
    pub(super) code: Vec<Option<u64>>,
    duration_ms: u64,
}

impl Agent {
    /// A reload while a generation is on probation would stack code on code not yet trusted,
    /// and the guards' way back would no longer be the previous generation.
    pub(super) fn refuse_on_probation(&self) -> Result<(), ReloadError> {
        match self.generations.last().and_then(|g| g.probation.as_ref()) {
            Some(p) if p.set.state() == GuardState::Active => Err(ReloadError::OnProbation {
                generation: self.generation(),
                remaining_ms: p.until_ms.saturating_sub(raw::monotonic_ms()),
            }),
            _ => Ok(()),
        }
    }

    /// With a probation: makes a guard for every function `matches` switches, arms the handler
    /// and returns the addresses to switch to (the stubs) with the guards. Without, `resolved`
    /// as it is.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn guard(
        &self,
        probation_ms: Option<u64>,
        patch_file: &str,
        module: &Layout,
        matches: &[Match],
        mut resolved: Vec<u64>,
        new_base: Option<u64>,
        number: u32,
        marker: Option<std::ffi::CString>,
    ) -> Result<(Vec<u64>, Option<Guards>), ReloadError> {
        let duration_ms = match probation_ms {
            None | Some(0) => return Ok((resolved, None)),
            Some(ms) => ms,
        };
        let mut funcs = Vec::new();
        let mut which = Vec::new();
        for (k, (m, &new)) in matches.iter().zip(&resolved).enumerate() {
            if m.role != Role::Code {
                continue;
            }
            let old = match self.find_replaced(module, m) {
                Some(i) => self.replaced[i].current(),
                None => self.gen0_of(module, m)?,
            };
            funcs.push(GuardFn {
                old,
                new,
                new_size: m.new.size,
                name: m.new.name.clone(),
            });
            which.push(k);
        }
        let set = GuardSet::new(
            funcs,
            text_of(new_base),
            &format!("generation {number} ({patch_file})"),
            &format!("generation {}", number - 1),
        )
        .map_err(|e| ReloadError::GuardsUnmade {
            cause: IoErrno::of(&e),
        })?;
        handler::arm(set, WAKE.load(Ordering::SeqCst), marker).map_err(|e| {
            ReloadError::CrashWatchUnarmed {
                cause: IoErrno::of(&e),
            }
        })?;
        let mut code = vec![None; resolved.len()];
        for (i, &k) in which.iter().enumerate() {
            code[k] = Some(resolved[k]);
            resolved[k] = set.stub(i);
        }
        Ok((
            resolved,
            Some(Guards {
                set,
                code,
                duration_ms,
            }),
        ))
    }

    /// The new generation starts its probation now.
    pub(super) fn start_probation(guards: Option<Guards>) -> Option<OnProbation> {
        let g = guards?;
        let until_ms = raw::monotonic_ms().saturating_add(g.duration_ms).max(1);
        UNTIL.store(until_ms, Ordering::SeqCst);
        Some(OnProbation {
            set: g.set,
            duration_ms: g.duration_ms,
            until_ms,
        })
    }

    /// A reload that failed after its guards were armed: nothing is on probation.
    pub(super) fn abandon_guards(&self) {
        if !self.generations.iter().any(|g| g.probation.is_some()) {
            handler::disarm();
        }
    }

    /// After a rollback of `gen`: its guards send any call still reaching them (a pointer taken
    /// meanwhile) back to the previous code, and nothing is watched any more.
    pub(super) fn left_probation(gen: &Generation) {
        if let Some(p) = &gen.probation {
            p.set.revert();
            handler::disarm();
            UNTIL.store(0, Ordering::SeqCst);
        }
    }

    /// The probation of the current generation is over without a crash: the guards let every
    /// call through to the new code, then the slots, symbol-table entries and function entries
    /// are switched to the new code itself. Returns what happened, for the log.
    pub fn end_probation(&mut self) -> Option<String> {
        let gen = self.generations.last()?;
        let p = gen.probation.clone()?;
        if !p.set.pass() {
            // A crash won the race: the revert job takes it from here.
            return None;
        }
        handler::disarm();
        let number = gen.number;
        let symbols = gen.symbols.clone();
        for &i in &symbols {
            if let Some(layer) = self.replaced[i].stack.last_mut() {
                if let Some(code) = layer.probation.take() {
                    layer.addr = code;
                }
            }
        }
        if let Some(g) = self.generations.last_mut() {
            g.probation = None;
        }
        let bindings: Vec<_> = symbols
            .iter()
            .map(|&i| self.binding(i, self.replaced[i].current()))
            .collect();
        // Calls through a stub already go straight on; a failed write leaves them there.
        let written = self.write_locked(&bindings, &symbols, &settled_modules());
        let (pause, _) = self.converge_entries();
        Some(match written {
            Ok(o) => format!(
                "generation {number} passed its probation: {} slots and {} entries now lead to its code directly",
                o.plan.writes.len(),
                pause.entries
            ),
            Err(e) => format!(
                "generation {number} passed its probation, but its guards stay in the slots: {e}"
            ),
        })
    }

    /// A crash in `set`'s code reverted it (the handler did): rolls its generation back for
    /// real and records why, for `status`.
    /// `Err` carries a failure worth a warning line of its own; the handler already wrote the
    /// crash's.
    pub fn revert_crashed(
        &mut self,
        set: &'static GuardSet,
    ) -> Option<Result<RolledBack, RevertFailed>> {
        let at = self.generations.iter().position(|g| {
            g.probation
                .as_ref()
                .is_some_and(|p| std::ptr::eq(p.set, set))
        })?;
        let gen = self.generations[at].clone();
        let crash = set.crash();
        let outcome = match at + 1 == self.generations.len() {
            true => self
                .rollback(super::hook_timeout(None), false, &mut || Ok(()))
                .map(|_| ()),
            false => Err(ReloadError::StackedOn),
        };
        UNTIL.store(0, Ordering::SeqCst);
        handler::disarm();
        let (signal, pc, function, rerun) = match &crash {
            Some(c) => (
                c.signal,
                c.pc,
                c.function.map(|i| set.function(i).name.clone()),
                c.rerun,
            ),
            None => (0, 0, None, false),
        };
        self.reverted.push(RevertedInfo {
            generation: gen.number,
            path: gen.path.clone(),
            module: gen.module.clone(),
            signal,
            signal_name: signal_name(signal).to_string(),
            function: function.clone(),
            address: pc,
            rerun,
            back_to: self.generation(),
        });
        Some(match outcome {
            Ok(()) => Ok(RolledBack {
                generation: gen.number,
                signal: signal_name(signal),
                function,
            }),
            Err(cause) => Err(RevertFailed {
                generation: gen.number,
                cause,
            }),
        })
    }
}

/// A generation that crashed on probation was rolled back (`function` is the crashed one, when
/// the handler knew it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledBack {
    pub generation: u32,
    pub signal: &'static str,
    pub function: Option<String>,
}

impl std::fmt::Display for RolledBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "generation {} crashed on probation ({} in {}) and was rolled back",
            self.generation,
            self.signal,
            self.function.as_deref().unwrap_or("its code")
        )
    }
}

/// The crashed generation's guards already run the previous code, but the real rollback after
/// it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("generation {generation} crashed on probation; its guards run the previous code, but the rollback failed: {cause}")]
pub struct RevertFailed {
    pub generation: u32,
    #[source]
    pub cause: ReloadError,
}

/// The file the handler creates when `path`'s generation crashes on probation, when the patch
/// is a persisted one: the journal then never applies it again.
pub(super) fn crash_marker(path: &str, module: &str, persist: bool) -> Option<std::ffi::CString> {
    crate::persist::crash_marker(path, module, persist)
}

/// The executable ranges of the module loaded at `base`.
fn text_of(base: Option<u64>) -> Vec<(u64, u64)> {
    let Some(base) = base else {
        return Vec::new();
    };
    phdr::snapshot()
        .iter()
        .filter(|m| m.base == base)
        .flat_map(|m| m.text_ranges().collect::<Vec<_>>())
        .collect()
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGABRT => "SIGABRT",
        _ => "a fatal signal",
    }
}
