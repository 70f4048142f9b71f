//! Entry jumps: the old entry of a replaced function jumps to the current generation's code, so
//! references the GOT does not hold — function pointers taken earlier, vtables, a library's
//! direct calls to itself, cached `dlsym` results — reach the new code too.
//!
//! A *site* is one function entry we may write. The caller says what each site should hold (its
//! own bytes, or a jump to a target) and `converge` gets it there: the writes happen with every
//! other thread parked (`sys::stop`) and none of them inside the bytes being replaced; a site that
//! cannot be written keeps its bytes and says why. The architecture-specific part is `arch`.

#[cfg_attr(target_arch = "x86_64", path = "x86_64.rs")]
#[cfg_attr(not(target_arch = "x86_64"), path = "unsupported.rs")]
pub mod arch;
mod dispatch;
pub mod error;
mod switch;

use crate::image::{Layout, Memory};
use crate::sys::code_window::CodeWindow;
use crate::sys::{membarrier, raw, self_mem, stop};
use arch::JUMP_LEN;
use error::{EntryError, Errno};
use std::time::Duration;

/// How long threads get to park for one stop.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to keep retrying while some thread sits inside the bytes to replace.
const CONFLICT_BUDGET: Duration = Duration::from_secs(1);
/// Between two stops, to let the threads move on.
const RETRY_PAUSE: Duration = Duration::from_millis(1);
/// How long a switch with a caller's step (a migrate hook, a class conversion) looks for a stop
/// in which no thread is inside an entry to rewrite.
const PARKED_BUDGET: Duration = Duration::from_secs(5);

/// What a site holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// Its own bytes.
    Original,
    /// A jump to this address: the current code itself, or a dispatch stub leading there.
    Jump(u64),
}

/// What a site should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Original,
    /// A jump to `symbol`'s current code, `target`: straight there when `direct` and within
    /// reach (rewritten at every switch), else through the symbol's dispatch stub (which a switch
    /// retargets with one store).
    Jump {
        symbol: usize,
        target: u64,
        direct: bool,
    },
}

/// One function entry.
#[derive(Debug, Clone)]
pub struct Site {
    pub addr: u64,
    /// Where the jump goes (after an `endbr64`).
    window: u64,
    original: [u8; JUMP_LEN],
    /// The bytes at `window` as we last left them.
    current: [u8; JUMP_LEN],
    pub holds: Holds,
    /// Why this function can never take a jump, found once from its code.
    pub refusal: Option<EntryError>,
    /// Why the last attempt to change it failed, until one succeeds.
    pub last_error: Option<EntryError>,
    /// Its module, as reports name it.
    pub label: String,
    /// The jump's bytes at `window`, as code the agent may rewrite (None: no module maps them).
    code: Option<CodeWindow>,
}

/// Threads held while entries were written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pause {
    pub rounds: u32,
    pub longest: Duration,
    pub threads: usize,
    /// Entries written.
    pub written: usize,
    /// Threads that block the stop signal, located asleep in the kernel instead of parked.
    pub asleep: usize,
    /// One of those that left its sleep during a round that wrote entries, if any.
    pub woke: Option<i32>,
    /// Rounds given up before the caller's step because a thread was inside an entry to
    /// rewrite.
    pub held_at_entry: u32,
    /// Written per thread (`switch.rs`): no thread was held.
    pub per_thread: bool,
    /// Per thread: the most CPU time any thread spent in our look or trap handler.
    pub held_cpu: Duration,
    /// Per thread: the most CPU time any thread spent in our trap handler.
    pub trap_cpu: Duration,
}

#[derive(Debug, Default)]
pub struct Entries {
    sites: Vec<Site>,
    /// Site index by entry address.
    index: std::collections::HashMap<u64, usize>,
    dispatches: dispatch::Dispatches,
}

/// One entry to write.
struct Pending {
    want: usize,
    site: usize,
    bytes: [u8; JUMP_LEN],
    holds: Holds,
    /// The retarget a jump through a stub waits for.
    retarget: Option<usize>,
    /// The site a direct jump lands on, which must hold its own bytes first, and the pending
    /// write restoring them.
    after: Option<usize>,
    after_pending: Option<usize>,
    through_proc_mem: bool,
    done: Option<Result<(), i32>>,
}

/// What one request needs.
struct Planned {
    write: Option<Pending>,
    /// The retarget the request depends on (a jump through a stub).
    retarget: Option<usize>,
}

/// One stub slot to point at a new target.
struct Retarget {
    dispatch: dispatch::Dispatch,
    target: u64,
    /// The site of the target's own entry, when it is one of ours, and its restoring write.
    needs: Option<usize>,
    needs_pending: Option<usize>,
    done: bool,
}

impl Entries {
    pub fn get(&self, addr: u64) -> Option<&Site> {
        self.sites.get(*self.index.get(&addr)?)
    }

    /// Forgets every site in `[lo, hi)`: its module was unloaded (a purge), and a later load may
    /// put other code at the same addresses.
    pub fn forget_range(&mut self, lo: u64, hi: u64) {
        self.sites.retain(|s| s.addr < lo || s.addr >= hi);
        self.index = self
            .sites
            .iter()
            .enumerate()
            .map(|(i, s)| (s.addr, i))
            .collect();
    }

    fn position(&self, addr: u64) -> Option<usize> {
        self.index.get(&addr).copied()
    }

    /// Learns the function at `addr` (`size` from its symbol; `None` when unknown, with the
    /// reason) once, reading its code from `mem`.
    pub fn register<M: Memory>(
        &mut self,
        mem: &M,
        layouts: &[Layout],
        addr: u64,
        size: Result<u64, &'static str>,
        label: String,
    ) {
        if self.get(addr).is_some() {
            return;
        }
        let code = size.map_err(EntryError::NoSize).and_then(|n| {
            usize::try_from(n)
                .ok()
                .and_then(|n| mem.bytes(addr, n))
                .ok_or(EntryError::CodeUnreadable)
        });
        let mut site = Site {
            addr,
            window: addr,
            original: [0; JUMP_LEN],
            current: [0; JUMP_LEN],
            holds: Holds::Original,
            refusal: None,
            last_error: None,
            label,
            code: None,
        };
        match code {
            Err(why) => site.refusal = Some(why),
            Ok(code) => {
                let off = arch::window_offset(code);
                match arch::check(code, addr, off) {
                    Err(r) => site.refusal = Some(EntryError::Refused(r)),
                    Ok(()) => {
                        site.window = addr + off as u64;
                        site.code = CodeWindow::within(layouts, site.window, JUMP_LEN as u64);
                        site.original.copy_from_slice(&code[off..off + JUMP_LEN]);
                        site.current = site.original;
                    }
                }
            }
        }
        self.index.insert(addr, self.sites.len());
        self.sites.push(site);
    }

    /// Whether a jump could be written at `addr` now, as far as the site goes (without writing
    /// one): the code allows it and the text can be written. See also `stoppable`.
    pub fn feasible(&self, addr: u64) -> Result<(), EntryError> {
        self.feasibility().feasible(addr)
    }

    /// [`Entries::feasible`] for many sites through one `/proc/self/mem` descriptor: opening
    /// it per site was most of a rollback's check. Held for one batch only, never kept (a
    /// descriptor kept across `fork`, or one the program closed and reused, would write
    /// elsewhere).
    pub fn feasibility(&self) -> Feasibility<'_> {
        Feasibility {
            entries: self,
            proc_mem: std::cell::OnceCell::new(),
        }
    }

    /// Whether the other threads could be stopped now.
    pub fn stoppable() -> Result<(), EntryError> {
        stop::preflight().map_err(EntryError::NoStop)
    }

    /// Where the entry at `addr` leads now: the target of its stub when it jumps, else `None`.
    pub fn lands_at(&self, addr: u64) -> Option<u64> {
        match self.get(addr)?.holds {
            Holds::Jump(to) => Some(self.dispatches.target_of_stub(to).unwrap_or(to)),
            Holds::Original => None,
        }
    }

    /// Brings each `(site address, wanted state)` there. Per request: done, or why the site was
    /// left as it is.
    pub fn converge<M: Memory>(
        &mut self,
        mem: &M,
        wants: &[(u64, Want)],
    ) -> (Vec<Result<(), EntryError>>, Pause) {
        self.converge_with(mem, wants, None)
    }

    /// [`Entries::converge`], with `inside` run first thing while the other threads are parked
    /// (they are parked for it even when no entry needs writing). When it returns false nothing
    /// is written and every request is answered with an error; it must allocate nothing and take
    /// no lock a parked thread may hold. When the threads cannot be stopped it is not run.
    pub fn converge_with<M: Memory>(
        &mut self,
        mem: &M,
        wants: &[(u64, Want)],
        inside: Option<&mut dyn FnMut() -> bool>,
    ) -> (Vec<Result<(), EntryError>>, Pause) {
        let mut results: Vec<Result<(), EntryError>> = vec![Ok(()); wants.len()];
        let mut pending: Vec<Pending> = Vec::new();
        let mut retargets: Vec<Retarget> = Vec::new();
        // Which retarget each want depends on.
        let mut want_retarget: Vec<Option<usize>> = vec![None; wants.len()];
        let proc_mem = self_mem::open_proc_mem().ok();
        let fd = proc_mem.as_ref().map_or(-1, |f| f.as_raw_fd());
        for (k, &(addr, want)) in wants.iter().enumerate() {
            match self.plan(mem, fd, k, addr, want, &mut retargets) {
                Ok(Planned { write, retarget }) => {
                    want_retarget[k] = retarget;
                    pending.extend(write);
                }
                Err(e) => results[k] = Err(e),
            }
        }
        let restoring = |si: usize| {
            pending
                .iter()
                .position(|p| p.site == si && p.holds == Holds::Original)
        };
        for r in &mut retargets {
            r.needs_pending = r.needs.and_then(restoring);
        }
        let after: Vec<Option<usize>> = pending
            .iter()
            .map(|p| p.after.and_then(restoring))
            .collect();
        for (p, a) in pending.iter_mut().zip(after) {
            p.after_pending = a;
        }
        let (pause, stop_failure) = self.write_stopped(fd, &mut pending, &mut retargets, inside);
        if stop_failure
            .as_ref()
            .is_some_and(EntryError::nothing_written)
        {
            let results = wants.iter().map(|_| Err(EntryError::Abandoned)).collect();
            return (results, pause);
        }
        for p in pending.iter().filter(|p| p.done == Some(Ok(()))) {
            let site = &mut self.sites[p.site];
            site.current = p.bytes;
            site.holds = p.holds;
        }
        for p in &pending {
            let why = match (p.done, &stop_failure) {
                (Some(Ok(())), _) => continue,
                (Some(Err(e)), _) => EntryError::WriteFailed(Errno(e)),
                (None, Some(failure)) => failure.clone(),
                (None, None)
                    if p.after
                        .is_some_and(|si| self.sites[si].holds != Holds::Original) =>
                {
                    EntryError::NotRestored
                }
                (None, None) => EntryError::ThreadInside {
                    ms: CONFLICT_BUDGET.as_millis(),
                },
            };
            results[p.want] = Err(why);
        }
        for (k, r) in want_retarget.iter().enumerate() {
            if let (Some(ri), Ok(())) = (r, &results[k]) {
                if !retargets[*ri].done {
                    results[k] = Err(stop_failure.clone().unwrap_or(EntryError::NotRestored));
                }
            }
        }
        for (k, &(addr, _)) in wants.iter().enumerate() {
            if let Some(si) = self.position(addr) {
                self.sites[si].last_error = results[k].clone().err();
            }
        }
        (results, pause)
    }

    /// What request `k` (`want` at the site `addr`) needs: a write, a stub retarget, both or
    /// neither; or why the site must keep what it holds.
    fn plan<M: Memory>(
        &mut self,
        mem: &M,
        fd: i32,
        k: usize,
        addr: u64,
        want: Want,
        retargets: &mut Vec<Retarget>,
    ) -> Result<Planned, EntryError> {
        let si = self.position(addr).ok_or(EntryError::Unknown)?;
        let site = &self.sites[si];
        if let (Want::Jump { .. }, Some(r)) = (want, &site.refusal) {
            return Err(r.clone());
        }
        let direct_to = match want {
            Want::Jump {
                target,
                direct: true,
                ..
            } if arch::jump(site.window, target).is_some() => Some(target),
            _ => None,
        };
        let rewrites = match (want, site.holds) {
            (Want::Original, Holds::Original) => false,
            (Want::Jump { .. }, Holds::Jump(at)) => match direct_to {
                Some(target) => at != target,
                None => self.dispatches.target_of_stub(at).is_none(),
            },
            _ => true,
        };
        // Checked before any stub is made for it: a site that cannot be written needs none.
        let mut through_proc_mem = true;
        if rewrites {
            if mem.bytes(site.window, JUMP_LEN) != Some(&site.current[..]) {
                return Err(EntryError::ChangedElsewhere);
            }
            through_proc_mem = writable(fd, site.code.as_ref(), &site.current)?;
        }
        let (holds, retarget, after) = match (want, direct_to) {
            (Want::Original, _) => (Holds::Original, None, None),
            // Straight to the current code, once its own entry holds its bytes.
            (Want::Jump { target, .. }, Some(_)) => {
                (Holds::Jump(target), None, self.position(target))
            }
            (Want::Jump { symbol, target, .. }, None) => {
                let d = self.dispatches.near(symbol, site.window, target)?;
                let ri = match retargets.iter().position(|r| r.dispatch == d) {
                    Some(ri) => ri,
                    None => {
                        retargets.push(Retarget {
                            dispatch: d,
                            target,
                            needs: self.position(target),
                            needs_pending: None,
                            done: false,
                        });
                        retargets.len() - 1
                    }
                };
                (Holds::Jump(d.stub), Some(ri), None)
            }
        };
        let site = &self.sites[si];
        if site.holds == holds {
            return Ok(Planned {
                write: None,
                retarget,
            });
        }
        let bytes = match holds {
            Holds::Original => site.original,
            Holds::Jump(to) => arch::jump(site.window, to).ok_or(EntryError::TargetOutOfReach)?,
        };
        Ok(Planned {
            write: Some(Pending {
                want: k,
                site: si,
                bytes,
                holds,
                retarget,
                after,
                after_pending: None,
                through_proc_mem,
                done: None,
            }),
            retarget,
        })
    }

    /// Whether a slot or a direct jump may point at a site now: it holds its own bytes (else its
    /// entry could jump back into the stub, forever). `restored[i]`: pending write `i` restored
    /// an entry's bytes.
    fn original_ready(
        &self,
        site: Option<usize>,
        pending: Option<usize>,
        restored: &[bool],
    ) -> bool {
        match (pending, site) {
            (Some(pi), _) => restored[pi],
            (None, Some(si)) => self.sites[si].holds == Holds::Original,
            (None, None) => true,
        }
    }

    /// Writes with the other threads parked (after `inside`, on the first round), in an order no thread can observe as a loop:
    /// restored entries first, then the stubs' slots, then the new jumps. A jump is skipped while
    /// a thread is inside the bytes it replaces, and retried until the budget runs out. Writes
    /// left undone keep `done == None`; the second value says why when the threads could not be
    /// stopped at all.
    fn write_stopped(
        &self,
        fd: i32,
        pending: &mut [Pending],
        retargets: &mut [Retarget],
        mut inside_first: Option<&mut dyn FnMut() -> bool>,
    ) -> (Pause, Option<EntryError>) {
        let mut pause = Pause::default();
        if pending.is_empty() && inside_first.is_none() {
            // Nothing to write in code: the slots alone change, one atomic store each.
            for r in retargets.iter_mut() {
                if self.original_ready(r.needs, r.needs_pending, &[]) {
                    self.dispatches.retarget(r.dispatch, r.target);
                    r.done = true;
                }
            }
            return (pause, None);
        }
        if inside_first.is_none() && !switch::full_stop_asked() {
            match self.write_switched(fd, pending, retargets) {
                Ok(done) => return done,
                Err(why) => tracing::debug!("switching with the threads stopped instead: {why}"),
            }
        }
        let mut restored = vec![false; pending.len()];
        membarrier::prepare();
        let mut tasks = stop::Tasks::default();
        // The raw clock and sleep: `clock_gettime` and `nanosleep` may be what is rolled back.
        // A caller's step waits for a round with every thread out of the way, however long
        // threads keep calling the code being switched: a longer budget.
        let budget = if inside_first.is_some() {
            PARKED_BUDGET
        } else {
            CONFLICT_BUDGET
        };
        let deadline = raw::monotonic() + budget;
        loop {
            let stopped = match stop::stop_others(&mut tasks, ARRIVAL_TIMEOUT) {
                Ok(s) => s,
                Err(e) => return (pause, Some(EntryError::NoStop(e))),
            };
            // Parked: no allocation, no lock, until `release`.
            let inside = |window: u64| {
                let hi = window + JUMP_LEN as u64;
                stopped.pcs().any(|pc| pc > window && pc < hi)
            };
            if let Some(first) = inside_first.as_deref_mut() {
                // The caller's step and every jump go in one round, or none does: a round that
                // wrote the step but had to leave an entry for later would let the threads run
                // the old entry against what the step changed (a migrated variable, an object
                // converted through its vtable).
                let at_entry = pending
                    .iter()
                    .any(|p| p.holds != Holds::Original && inside(self.sites[p.site].window));
                pause.held_at_entry += u32::from(at_entry);
                if at_entry {
                    pause.longest = pause.longest.max(stopped.release());
                    pause.rounds += 1;
                    if raw::monotonic() >= deadline {
                        return (pause, Some(EntryError::HeldInside));
                    }
                    raw::sleep(RETRY_PAUSE);
                    continue;
                }
                if !first() {
                    pause.threads = stopped.threads();
                    pause.asleep = stopped.asleep();
                    pause.longest = pause.longest.max(stopped.release());
                    pause.rounds += 1;
                    return (pause, Some(EntryError::Abandoned));
                }
                inside_first = None;
            }
            let written_before = pending.iter().filter(|p| p.done.is_some()).count();
            for p in pending.iter_mut() {
                if p.done.is_none() && p.holds == Holds::Original {
                    let site = &self.sites[p.site];
                    p.done = Some(self.poke(fd, site, &p.bytes, p.through_proc_mem));
                }
            }
            for (r, p) in restored.iter_mut().zip(pending.iter()) {
                *r = p.holds == Holds::Original && p.done == Some(Ok(()));
            }
            for r in retargets.iter_mut() {
                if !r.done && self.original_ready(r.needs, r.needs_pending, &restored) {
                    self.dispatches.retarget(r.dispatch, r.target);
                    r.done = true;
                }
            }
            for p in pending.iter_mut() {
                if p.done.is_some() || p.holds == Holds::Original {
                    continue;
                }
                let site = &self.sites[p.site];
                let ready = match p.retarget {
                    Some(ri) => retargets[ri].done,
                    None => self.original_ready(p.after, p.after_pending, &restored),
                };
                if ready && !inside(site.window) {
                    p.done = Some(self.poke(fd, site, &p.bytes, p.through_proc_mem));
                }
            }
            membarrier::sync_cores();
            // A located thread that left its sleep meanwhile may have run the bytes while they
            // were written; nothing can be undone without the same exposure (see design.md).
            let wrote = pending.iter().filter(|p| p.done.is_some()).count() > written_before;
            let woke = if wrote { stopped.woke() } else { None };
            let threads = stopped.threads();
            let asleep = stopped.asleep();
            pause.written = pending.iter().filter(|p| p.done == Some(Ok(()))).count();
            let held = stopped.release();
            pause.rounds += 1;
            pause.longest = pause.longest.max(held);
            pause.threads = pause.threads.max(threads);
            pause.asleep = pause.asleep.max(asleep);
            if let Some(tid) = woke {
                tracing::warn!(
                    "thread {tid}, which blocks the stop signal, left its system call while \
                     function entries were written ({} us)",
                    held.as_micros()
                );
                pause.woke = pause.woke.or(woke);
            }
            if pending.iter().all(|p| p.done.is_some()) || raw::monotonic() >= deadline {
                return (pause, None);
            }
            raw::sleep(RETRY_PAUSE);
        }
    }

    fn poke(&self, fd: i32, site: &Site, bytes: &[u8], through_proc_mem: bool) -> Result<(), i32> {
        self.poke_at(fd, site, 0, bytes, through_proc_mem)
    }

    /// Writes `bytes` at `offset` into the site's window.
    fn poke_at(
        &self,
        fd: i32,
        site: &Site,
        offset: u64,
        bytes: &[u8],
        through_proc_mem: bool,
    ) -> Result<(), i32> {
        if through_proc_mem {
            self_mem::poke_proc_mem(fd, site.window + offset, bytes)
        } else {
            site.code
                .as_ref()
                .map_or(Err(libc::EFAULT), |w| w.poke(offset, bytes))
        }
    }
}

/// Whether some other thread is stopped inside one of `ranges` (`[start, end)`) now: one stop,
/// released at once.
pub fn any_thread_in(ranges: &[(u64, u64)]) -> Result<bool, EntryError> {
    let mut tasks = stop::Tasks::default();
    let stopped = stop::stop_others(&mut tasks, ARRIVAL_TIMEOUT).map_err(EntryError::NoStop)?;
    let inside = stopped
        .pcs()
        .any(|pc| ranges.iter().any(|&(lo, hi)| pc >= lo && pc < hi));
    stopped.release();
    Ok(inside)
}

/// Whether the code of `code` can be written, by writing the bytes it already holds: through
/// `/proc/self/mem` (true), else by making its page writable (false).
fn writable(fd: i32, code: Option<&CodeWindow>, holds: &[u8]) -> Result<bool, EntryError> {
    let code = code.ok_or(EntryError::NoSegment)?;
    self_mem::poke_code(fd, code, holds).map_err(EntryError::NotWritable)
}

/// Answers [`Entries::feasible`] for a batch of sites (see [`Entries::feasibility`]).
pub struct Feasibility<'e> {
    entries: &'e Entries,
    /// Opened by the first site that gets as far as writing.
    proc_mem: std::cell::OnceCell<Option<self_mem::ProcMem>>,
}

impl Feasibility<'_> {
    pub fn feasible(&self, addr: u64) -> Result<(), EntryError> {
        let site = self.entries.get(addr).ok_or(EntryError::Unknown)?;
        if let Some(r) = &site.refusal {
            return Err(r.clone());
        }
        let proc_mem = self.proc_mem.get_or_init(|| self_mem::open_proc_mem().ok());
        let fd = proc_mem.as_ref().map_or(-1, |f| f.as_raw_fd());
        // Rewriting the bytes it holds changes nothing but proves the page can be written.
        writable(fd, site.code.as_ref(), &site.current).map(|_| ())
    }
}
