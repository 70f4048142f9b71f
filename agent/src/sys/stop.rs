//! Stopping the process's other threads for a moment, in-process (no ptrace).
//!
//! Each thread gets a signal; its handler records where the thread was interrupted (the program
//! counter in its `ucontext`), reports in, and parks on a futex until the stopper releases the
//! round. While threads are parked the stopper may hold none of the locks they might hold: this
//! module allocates nothing and takes no lock between `stop_others` and `release`, and its caller
//! must do the same. The signal is chosen once, at start-up, among the real-time signals the
//! target leaves at their default; the handler stays installed for the life of the process, so a
//! late signal is never fatal.
//!
//! A thread that blocks the signal cannot be parked, but one asleep in the kernel need not be: it
//! runs nothing until it wakes. Such a thread is *located* instead (`sys::task`): where it will
//! resume counts like a parked thread's program counter, and `Stopped::woke` tells afterwards
//! whether it left its sleep while the round was held. Only a blocker that keeps running past a
//! short grace makes the stop fail.
//!
//! Everything here enters the kernel through `sys::raw`, never through libc: the threads are
//! stopped to write function entries, and the function being rolled back may be any libc
//! export (`sigaction`, `syscall`, `clock_gettime`, `open` ...), broken by the patch that
//! replaced it. Deadlines use the raw monotonic clock for the same reason.

use super::raw;
use super::stop_grace::Grace;
use super::stop_handler::{
    ARRIVED, INSIDE, NEXT_ROUND, OBSERVING, RELEASED, ROUND, SLOTS, SLOT_COUNT,
};
use super::stop_signal::{current_handler, handler_address};
use super::task::{self, Asleep};
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use super::stop_signal::{install, signal};
pub use super::stop_tasks::{exempt, Tasks};

/// Threads one stop can hold; a process with more is refused (and the reload falls back).
pub const MAX_THREADS: usize = 8192;
/// Between two looks at a running blocker: it usually enters a system call within microseconds.
const BLOCKED_POLL: Duration = Duration::from_micros(200);
/// How often a wait for threads to park checks whether the missing ones still exist.
const EXIT_CHECK: Duration = Duration::from_millis(2);
/// How long a release waits for the parked threads to leave the handler.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the other threads could not be stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopError {
    #[error("no real-time signal was free for stopping threads when the agent started")]
    NoSignal,
    #[error(
        "the program replaced the agent's stop-signal handler (signal {0}): entries cannot be \
         written safely"
    )]
    HandlerReplaced(i32),
    #[error("the process has more than {MAX_THREADS} threads")]
    TooManyThreads,
    #[error(
        "thread {tid} blocks signal {signal} and kept running (looked at for {waited_ms} ms), so \
         it cannot be stopped"
    )]
    Blocked {
        tid: i32,
        signal: i32,
        waited_ms: u64,
    },
    #[error("thread {tid} did not answer signal {signal} within {waited_ms} ms")]
    NoAnswer {
        tid: i32,
        signal: i32,
        waited_ms: u64,
    },
    #[error("thread {tid} blocks signal {signal}, so it cannot be switched without a stop")]
    Unobservable { tid: i32, signal: i32 },
    #[error("cannot list or signal this process's threads: {0}")]
    Os(String),
}

/// Every other thread, parked or located asleep. Dropping it releases them.
pub struct Stopped<'a> {
    round: u32,
    count: usize,
    /// `raw::monotonic()` when the threads were signalled.
    started: Duration,
    /// Threads that block the signal, asleep in the kernel, and where.
    asleep: &'a [(i32, Asleep)],
}

impl Stopped<'_> {
    /// Every address a held thread will resume at: the interrupted program counter of each parked
    /// thread (threads that exited meanwhile are left out), and where each located one sleeps.
    pub fn pcs(&self) -> impl Iterator<Item = u64> + '_ {
        SLOTS[..self.count]
            .iter()
            .filter(|s| s.tid.load(Ordering::Relaxed) > 0)
            .map(|s| s.pc.load(Ordering::Acquire))
            .chain(self.asleep.iter().flat_map(|(_, a)| a.resume_pcs()))
    }

    /// Threads parked by the signal.
    pub fn threads(&self) -> usize {
        SLOTS[..self.count]
            .iter()
            .filter(|s| s.tid.load(Ordering::Relaxed) > 0)
            .count()
    }

    /// Threads that block the signal and were located asleep instead.
    pub fn asleep(&self) -> usize {
        self.asleep.len()
    }

    /// A located thread that has left its sleep since it was located (so, asked after writes, it
    /// may have run code while it was written), if any. Allocates nothing.
    pub fn woke(&self) -> Option<i32> {
        self.asleep
            .iter()
            .find(|(tid, a)| !task::still_asleep(*tid, a))
            .map(|&(tid, _)| tid)
    }

    /// Releases the threads and waits for them to leave the handler; returns how long they
    /// were held.
    pub fn release(self) -> Duration {
        let held = raw::monotonic().saturating_sub(self.started);
        drop(self);
        wait_handler_left();
        held
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        release_round(self.round);
    }
}

fn release_round(round: u32) {
    ROUND.store(0, Ordering::SeqCst);
    RELEASED.store(round, Ordering::Release);
    raw::futex_wake(&RELEASED, i32::MAX);
}

/// Waits (bounded) until no thread is inside the parking part of the handler: there it blocks
/// every signal, and must not be taken for a blocker (nor located asleep on our futex).
pub(super) fn wait_handler_left() {
    let deadline = raw::monotonic() + LEAVE_TIMEOUT;
    loop {
        let inside = INSIDE.load(Ordering::Acquire);
        let now = raw::monotonic();
        if inside == 0 || now >= deadline {
            break;
        }
        raw::futex_wait(&INSIDE, inside, Some(deadline - now));
    }
}

/// The stop signal, if one was installed and its handler is still ours.
pub(super) fn ours() -> Result<i32, StopError> {
    let sig = signal().ok_or(StopError::NoSignal)?;
    if current_handler(sig) != Some(handler_address()) {
        return Err(StopError::HandlerReplaced(sig));
    }
    Ok(sig)
}

/// Whether a stop could work now: the signal is ours and no thread that blocks it keeps running.
pub fn preflight() -> Result<(), StopError> {
    let sig = ours()?;
    let mut tasks = Tasks::default();
    settle_blockers(&mut tasks, sig, &mut Grace::new())
}

/// Lists the threads, and waits until every one that blocks `sig` is asleep in the kernel (see
/// `Grace`). glibc blocks every signal for a moment while a thread is created and while it exits,
/// and a real blocker (jemalloc's background thread, a `sigwait` loop) spends nearly all its life
/// asleep: only one that keeps running counts.
fn settle_blockers(tasks: &mut Tasks, sig: i32, grace: &mut Grace) -> Result<(), StopError> {
    loop {
        tasks
            .list()
            .map_err(|e| StopError::Os(std::io::Error::from_raw_os_error(e).to_string()))?;
        tasks.classify(sig);
        let Err((tid, voluntary)) = tasks.locate_blockers() else {
            return Ok(());
        };
        if grace.running(tid, voluntary) {
            return Err(grace.blocked(tid, sig));
        }
        raw::sleep(BLOCKED_POLL);
    }
}

/// Stops every other thread of the process, waiting at most `timeout` for them to park; threads
/// that block the signal are located asleep instead. Between this call and the release of the
/// returned value, the caller must allocate nothing and take no lock.
pub fn stop_others(tasks: &mut Tasks, timeout: Duration) -> Result<Stopped<'_>, StopError> {
    let sig = ours()?;
    wait_handler_left();
    let mut grace = Grace::new();
    let (round, count, started) = loop {
        // Before anyone is stopped: a blocker that is running now is waited for here.
        settle_blockers(tasks, sig, &mut grace)?;
        let mut round = NEXT_ROUND.fetch_add(1, Ordering::SeqCst);
        if round == 0 {
            round = NEXT_ROUND.fetch_add(1, Ordering::SeqCst);
        }
        SLOT_COUNT.store(0, Ordering::SeqCst);
        ROUND.store(round, Ordering::SeqCst);
        let started = raw::monotonic();
        // From here until the caller releases: no allocation, no lock.
        let missing = match park_all(tasks, sig, round, started + timeout) {
            // Located again with the others parked, right before the caller writes: the
            // baseline `woke` compares with.
            Ok(count) => match tasks.locate_blockers() {
                Ok(()) => break (round, count, started),
                Err((tid, voluntary)) => Missing::Running(tid, voluntary),
            },
            Err(m) => m,
        };
        release_round(round);
        wait_handler_left();
        if let Missing::Running(tid, voluntary) = missing {
            if !grace.running(tid, voluntary) {
                raw::sleep(BLOCKED_POLL);
                continue;
            }
        }
        return Err(match missing {
            Missing::Running(tid, _) => grace.blocked(tid, sig),
            Missing::Tid(tid) if raw::tgkill(raw::getpid(), tid, 0) != Err(libc::ESRCH) => {
                StopError::NoAnswer {
                    tid,
                    signal: sig,
                    waited_ms: timeout.as_millis() as u64,
                }
            }
            Missing::Tid(tid) => StopError::Os(format!("thread {tid} exited while being stopped")),
            Missing::Os(e) => StopError::Os(std::io::Error::from_raw_os_error(e).to_string()),
            Missing::TooMany => StopError::TooManyThreads,
        });
    };
    Ok(Stopped {
        round,
        count,
        started,
        asleep: &tasks.asleep,
    })
}

pub(super) enum Missing {
    Tid(i32),
    /// A thread that blocks the signal was found running (with its voluntary switches).
    Running(i32, Option<u64>),
    Os(i32),
    TooMany,
}

/// Signals every listed thread but the blockers and waits for each to park; lists again until
/// no thread appears that was not stopped (only a running thread can create one). A new thread
/// that blocks the signal joins the blockers (it inherited its creator's mask: jemalloc starts its
/// background threads so). Allocates nothing.
pub(super) fn park_all(
    tasks: &mut Tasks,
    sig: i32,
    round: u32,
    deadline: Duration,
) -> Result<usize, Missing> {
    let pid = raw::getpid();
    let mut count = 0usize;
    let mut first = true;
    let observing = tasks.see_asleep
        && OBSERVING.load(Ordering::Acquire) == round
        && super::membarrier::registered();
    loop {
        let before = count;
        let mut new_blockers = false;
        for i in 0..tasks.tids.len() {
            let tid = tasks.tids[i];
            if tasks.blockers.contains(&tid)
                || SLOTS[..count]
                    .iter()
                    .any(|s| s.tid.load(Ordering::Relaxed).abs() == tid)
            {
                continue;
            }
            // The first list was classified just before; later ones bring new threads.
            if !first && task::blocks(tid, sig) {
                if tasks.blockers.len() == tasks.blockers.capacity() {
                    return Err(Missing::TooMany);
                }
                tasks.blockers.push(tid);
                new_blockers = true;
                continue;
            }
            if count == MAX_THREADS {
                return Err(Missing::TooMany);
            }
            let slot = &SLOTS[count];
            // A look (not a stop) needs one sighting of each thread outside the bytes about to
            // change. A thread asleep in the kernel is seen where it will resume, from
            // /proc/self/task/TID/syscall, without a signal to wake it (and its program's
            // call interrupted). Only with the cores synchronised by membarrier after each
            // write: the signal's return was the other way a woken thread got serialised.
            if observing && tasks.sleeping.contains(&tid) && !tasks.wake.contains(&tid) {
                if let Some((pc, in_syscall)) = task::asleep_at(tid) {
                    slot.pc.store(pc, Ordering::Relaxed);
                    let alt = if in_syscall { pc.wrapping_sub(2) } else { 0 };
                    slot.alt_pc.store(alt, Ordering::Relaxed);
                    slot.round.store(round, Ordering::Release);
                    slot.tid.store(tid, Ordering::Release);
                    count += 1;
                    SLOT_COUNT.store(count, Ordering::Release);
                    continue;
                }
            }
            slot.round.store(0, Ordering::Relaxed);
            slot.pc.store(0, Ordering::Relaxed);
            slot.alt_pc.store(0, Ordering::Relaxed);
            slot.tid.store(tid, Ordering::Release);
            count += 1;
            SLOT_COUNT.store(count, Ordering::Release);
            if let Err(e) = raw::tgkill(pid, tid, sig) {
                if e != libc::ESRCH {
                    return Err(Missing::Os(e));
                }
                // Exited already: remembered as gone (negative tid), not waited for.
                slot.tid.store(-tid, Ordering::Release);
            }
        }
        first = false;
        if count == before && !new_blockers {
            return Ok(count);
        }
        loop {
            let seen = ARRIVED.load(Ordering::Acquire);
            let missing = SLOTS[..count].iter().find(|s| {
                s.tid.load(Ordering::Relaxed) > 0 && s.round.load(Ordering::Acquire) != round
            });
            let Some(missing) = missing else { break };
            let tid = missing.tid.load(Ordering::Relaxed);
            // A thread that exits with the signal pending never runs the handler.
            if raw::tgkill(pid, tid, 0) == Err(libc::ESRCH) {
                missing.tid.store(-tid, Ordering::Release);
                continue;
            }
            // One that blocked the signal since it was listed is located instead (the signal
            // stays pending; it finds no round, or a later one, when it unblocks). One that
            // blocks it because it is entering our handler has it no longer pending, and parks.
            if task::holds_pending(tid, sig) {
                if tasks.blockers.len() == tasks.blockers.capacity() {
                    return Err(Missing::TooMany);
                }
                tasks.blockers.push(tid);
                missing.tid.store(-tid, Ordering::Release);
                continue;
            }
            let now = raw::monotonic();
            if now >= deadline {
                return Err(Missing::Tid(tid));
            }
            raw::futex_wait(&ARRIVED, seen, Some((deadline - now).min(EXIT_CHECK)));
        }
        tasks.list().map_err(|e| {
            if e == libc::E2BIG {
                Missing::TooMany
            } else {
                Missing::Os(e)
            }
        })?;
    }
}
