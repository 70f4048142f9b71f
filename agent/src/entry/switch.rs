//! Writing entries without holding any thread (WfPatch, the kernel's `text_poke_bp`): each
//! entry's first byte becomes `int3` (a thread reaching it is sent on by `sys::trap`), every
//! other thread is looked at once outside the bytes to replace (`sys::stop_observe`; a thread
//! inside them is looked at again, until a deadline), the rest of the bytes are written, then the
//! first. Cores are synchronised after each step, as the kernel does. Each thread is interrupted
//! for microseconds; none is parked.
//!
//! Not for a switch with a caller's step (a migrate hook, a class conversion): that needs every
//! thread parked at once, and keeps the full stop. Nor when a thread blocks the look or SIGTRAP:
//! then the caller falls back to the stop too.

use super::error::EntryError;
use super::{arch::JUMP_LEN, Entries, Holds, Pause, Pending, Retarget, CONFLICT_BUDGET};
use crate::sys::{membarrier, raw, stop, stop_observe, trap};
use std::time::Duration;

/// How long each thread gets to answer a look.
const LOOK_TIMEOUT: Duration = Duration::from_secs(1);
/// Between two looks while a thread is inside bytes to replace.
const LOOK_AGAIN: Duration = Duration::from_micros(50);

/// Why the switch could not be done this way (nothing was written; the caller stops instead).
#[derive(Debug, thiserror::Error)]
pub(super) enum SwitchRefused {
    #[error(transparent)]
    Trap(#[from] trap::TrapError),
    #[error(transparent)]
    Look(#[from] stop::StopError),
}

/// `HOTAGENT_FULL_STOP=1`: switch with every thread parked, as before (the bench's floor row,
/// and an operator's way back if a program's own trap handling disagrees with ours).
pub(super) fn full_stop_asked() -> bool {
    std::env::var_os("HOTAGENT_FULL_STOP").is_some_and(|v| v == "1")
}

impl Entries {
    /// Writes `pending` and `retargets` in the order `write_stopped` uses (restored entries, the
    /// stubs' slots, then the jumps), each batch behind traps. Refused before anything is
    /// written when a look is impossible; a look failing later leaves the rest undone, with why.
    pub(super) fn write_switched(
        &self,
        fd: i32,
        pending: &mut [Pending],
        retargets: &mut [Retarget],
    ) -> Result<(Pause, Option<EntryError>), SwitchRefused> {
        let windows: Vec<u64> = pending
            .iter()
            .filter(|p| p.holds != Holds::Original || self.sites[p.site].holds != Holds::Original)
            .map(|p| self.sites[p.site].window)
            .collect();
        trap::room_for(&windows)?;
        trap::arm()?;
        let mut tasks = stop::Tasks::default();
        let mut pause = Pause {
            per_thread: true,
            ..Pause::default()
        };
        stop_observe::take_longest_look();
        stop_observe::take_longest_look_cpu();
        trap::take_longest_cpu();
        // One look first: a thread that cannot be looked at refuses before any byte changes.
        let first = stop_observe::observe_others(&mut tasks, LOOK_TIMEOUT, &[])?;
        pause.threads = first.threads();
        pause.rounds = 1;
        membarrier::prepare();
        let deadline = raw::monotonic() + CONFLICT_BUDGET;
        let restores: Vec<usize> = (0..pending.len())
            .filter(|&i| pending[i].holds == Holds::Original)
            .collect();
        let mut failure = self.batch(fd, pending, &restores, &mut tasks, &mut pause, deadline);
        let restored: Vec<bool> = pending
            .iter()
            .map(|p| p.holds == Holds::Original && p.done == Some(Ok(())))
            .collect();
        for r in retargets.iter_mut() {
            if !r.done && self.original_ready(r.needs, r.needs_pending, &restored) {
                self.dispatches.retarget(r.dispatch, r.target);
                r.done = true;
            }
        }
        if failure.is_none() {
            let jumps: Vec<usize> = (0..pending.len())
                .filter(|&i| {
                    let p = &pending[i];
                    p.holds != Holds::Original
                        && match p.retarget {
                            Some(ri) => retargets[ri].done,
                            None => self.original_ready(p.after, p.after_pending, &restored),
                        }
                })
                .collect();
            failure = self.batch(fd, pending, &jumps, &mut tasks, &mut pause, deadline);
        }
        pause.written = pending.iter().filter(|p| p.done == Some(Ok(()))).count();
        pause.longest = stop_observe::take_longest_look();
        pause.trap_cpu = trap::take_longest_cpu();
        pause.held_cpu = stop_observe::take_longest_look_cpu().max(pause.trap_cpu);
        Ok((pause, failure))
    }

    /// Rewrites the entries of `pending[batch]`: int3, look until no thread is inside, tail,
    /// head. Entries a thread stayed inside until `deadline` get their first byte back.
    fn batch(
        &self,
        fd: i32,
        pending: &mut [Pending],
        batch: &[usize],
        tasks: &mut stop::Tasks,
        pause: &mut Pause,
        deadline: Duration,
    ) -> Option<EntryError> {
        let mut armed: Vec<usize> = Vec::with_capacity(batch.len());
        // A trap that cannot be set stops the arming, never the batch: the entries already
        // behind an `int3` are finished (or given their byte back) below like any other.
        let mut arming_failed = None;
        for &i in batch {
            let p = &mut pending[i];
            let site = &self.sites[p.site];
            // Until the rewrite is done a thread reaching the entry goes where it would have
            // gone a moment earlier (a jump being removed) or later (a jump being written).
            let to = match (p.holds, site.holds) {
                (Holds::Jump(to), _) | (Holds::Original, Holds::Jump(to)) => to,
                (Holds::Original, Holds::Original) => continue,
            };
            if let Err(e) = trap::set(site.window, to) {
                arming_failed = Some(EntryError::Trap(e));
                break;
            }
            match self.poke(fd, site, &[trap::INT3], p.through_proc_mem) {
                Ok(()) => armed.push(i),
                Err(e) => {
                    trap::settle(site.window);
                    p.done = Some(Err(e));
                }
            }
        }
        if armed.is_empty() {
            return arming_failed;
        }
        membarrier::sync_cores();
        let mut failure = None;
        // Sleepers are seen where they sleep; a thread seen inside bytes still to change is
        // signalled by the next look, which wakes one asleep there and moves it out.
        let mut wake: Vec<i32> = Vec::new();
        loop {
            let looked = match stop_observe::observe_others(tasks, LOOK_TIMEOUT, &wake) {
                Ok(o) => o,
                Err(e) if raw::monotonic() >= deadline => {
                    failure = Some(EntryError::NoLook(e));
                    break;
                }
                Err(_) => {
                    raw::sleep(LOOK_AGAIN);
                    continue;
                }
            };
            pause.rounds += 1;
            pause.threads = pause.threads.max(looked.threads());
            let inside = |i: &usize| {
                let w = self.sites[pending[*i].site].window;
                looked.pcs().any(|pc| pc > w && pc < w + JUMP_LEN as u64)
            };
            let (busy, free): (Vec<usize>, Vec<usize>) = armed.iter().partition(|i| inside(i));
            for &i in &free {
                let p = &pending[i];
                let site = &self.sites[p.site];
                let tail = self.poke_at(fd, site, 1, &p.bytes[1..], p.through_proc_mem);
                pending[i].done = Some(tail);
            }
            if !free.is_empty() {
                membarrier::sync_cores();
                for &i in &free {
                    let p = &mut pending[i];
                    let site = &self.sites[p.site];
                    // A failed tail leaves the old bytes behind the int3: put their head back.
                    let head = match p.done {
                        Some(Ok(())) => p.bytes[0],
                        _ => site.current[0],
                    };
                    let wrote = self.poke(fd, site, &[head], p.through_proc_mem);
                    if p.done == Some(Ok(())) {
                        p.done = Some(wrote);
                    }
                    trap::settle(site.window);
                }
                membarrier::sync_cores();
            }
            armed = busy;
            if armed.is_empty() {
                break;
            }
            let windows: Vec<u64> = armed
                .iter()
                .map(|&i| self.sites[pending[i].site].window)
                .collect();
            wake =
                looked.tids_where(|pc| windows.iter().any(|&w| pc > w && pc < w + JUMP_LEN as u64));
            if raw::monotonic() >= deadline {
                break;
            }
            raw::sleep(LOOK_AGAIN);
        }
        // Left undone (`done == None`): back to the bytes they held.
        for &i in &armed {
            let p = &pending[i];
            let site = &self.sites[p.site];
            let _ = self.poke(fd, site, &site.current[..1], p.through_proc_mem);
            trap::settle(site.window);
        }
        if !armed.is_empty() {
            membarrier::sync_cores();
        }
        failure.or(arming_failed)
    }
}
