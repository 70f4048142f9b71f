//! Looking at every other thread once without holding it: each is signalled, its handler records
//! where it was interrupted and returns at once. The delivery of a signal also serialises the
//! thread's instruction stream. Used by switching through a trap (`entry::switch`), which only
//! needs to know that no thread is inside the bytes it is about to write.

use super::raw;
use super::stop::{ours, park_all, wait_handler_left, Missing, StopError, Tasks};
use super::stop_handler::{
    LONGEST_LOOK_CPU_NS, LONGEST_LOOK_NS, NEXT_ROUND, OBSERVING, ROUND, SLOTS, SLOT_COUNT,
};
use super::task;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a thread asleep with the look or SIGTRAP blocked is waited for before the look is
/// refused.
const BLOCKER_SETTLE: Duration = Duration::from_millis(5);
/// The same for a thread that blocks them while it runs or waits for a CPU: on a loaded machine
/// a thread still returning from a handler, or starting in glibc with every signal blocked, can
/// wait that long for the scheduler before it unblocks them.
const RUNNABLE_BLOCKER_SETTLE: Duration = Duration::from_millis(100);
const BLOCKER_POLL: Duration = Duration::from_micros(100);

/// Where every other thread was when it was looked at.
pub struct Observed {
    count: usize,
}

impl Observed {
    /// Every place a thread looked at may resume at (those that exited meanwhile left out): one
    /// per thread, two for one seen asleep in a system call (see `Slot::alt_pc`).
    pub fn pcs(&self) -> impl Iterator<Item = u64> + '_ {
        SLOTS[..self.count]
            .iter()
            .filter(|s| s.tid.load(Ordering::Relaxed) > 0)
            .flat_map(|s| {
                let alt = s.alt_pc.load(Ordering::Acquire);
                [
                    Some(s.pc.load(Ordering::Acquire)),
                    (alt != 0).then_some(alt),
                ]
            })
            .flatten()
    }

    /// The threads (by tid) that were at a place `at` accepts.
    pub fn tids_where(&self, mut at: impl FnMut(u64) -> bool) -> Vec<i32> {
        SLOTS[..self.count]
            .iter()
            .filter(|s| s.tid.load(Ordering::Relaxed) > 0)
            .filter(|s| {
                let alt = s.alt_pc.load(Ordering::Acquire);
                at(s.pc.load(Ordering::Acquire)) || (alt != 0 && at(alt))
            })
            .map(|s| s.tid.load(Ordering::Relaxed))
            .collect()
    }

    pub fn threads(&self) -> usize {
        SLOTS[..self.count]
            .iter()
            .filter(|s| s.tid.load(Ordering::Relaxed) > 0)
            .count()
    }
}

/// The longest a thread spent in the handler of a look since the last call (then reset).
pub fn take_longest_look() -> Duration {
    Duration::from_nanos(LONGEST_LOOK_NS.swap(0, Ordering::AcqRel))
}

/// The most CPU time a thread spent in the handler of a look since the last call (then reset).
pub fn take_longest_look_cpu() -> Duration {
    Duration::from_nanos(LONGEST_LOOK_CPU_NS.swap(0, Ordering::AcqRel))
}

/// Looks at every other thread once, waiting at most `timeout` for each to answer. A thread
/// asleep in the kernel is seen where it sleeps, through /proc, and not woken — except those in
/// `wake`, which are signalled like running ones (one asleep inside bytes about to change, a
/// system call made from an entry's first bytes, is woken and returns out of the way). Refused
/// when a thread blocks the stop signal or SIGTRAP: the first cannot be looked at, and the
/// second would be killed by the trap (the kernel forces a blocked SIGTRAP to its default
/// action).
pub fn observe_others(
    tasks: &mut Tasks,
    timeout: Duration,
    wake: &[i32],
) -> Result<Observed, StopError> {
    let sig = ours()?;
    // glibc blocks every signal for a moment while a thread starts or exits, and a thread leaving
    // a handler has them blocked until its sigreturn: only a blocker that stays one refuses, and
    // one that is running or runnable is given longer (it only waits for a CPU).
    let start = raw::monotonic();
    let (settle, runnable_settle) = (start + BLOCKER_SETTLE, start + RUNNABLE_BLOCKER_SETTLE);
    loop {
        wait_handler_left();
        tasks
            .list()
            .map_err(|e| StopError::Os(std::io::Error::from_raw_os_error(e).to_string()))?;
        tasks.classify(sig);
        let blocker = match tasks.blockers.first() {
            Some(&tid) => Some((tid, sig)),
            None => tasks.trap_blockers.first().map(|&tid| (tid, libc::SIGTRAP)),
        };
        match blocker {
            None => break,
            Some((tid, signal))
                if raw::monotonic() >= settle
                    && (raw::monotonic() >= runnable_settle
                        || !matches!(task::locate(tid), task::Seen::Running(_))) =>
            {
                return Err(StopError::Unobservable { tid, signal })
            }
            Some(_) => raw::sleep(BLOCKER_POLL),
        }
    }
    let mut round = NEXT_ROUND.fetch_add(1, Ordering::SeqCst);
    if round == 0 {
        round = NEXT_ROUND.fetch_add(1, Ordering::SeqCst);
    }
    SLOT_COUNT.store(0, Ordering::SeqCst);
    OBSERVING.store(round, Ordering::SeqCst);
    ROUND.store(round, Ordering::SeqCst);
    tasks.see_asleep = true;
    tasks.wake.clear();
    tasks.wake.extend_from_slice(wake);
    let result = park_all(tasks, sig, round, raw::monotonic() + timeout);
    tasks.see_asleep = false;
    ROUND.store(0, Ordering::SeqCst);
    OBSERVING.store(0, Ordering::SeqCst);
    if let Some(&tid) = tasks.blockers.first() {
        return Err(StopError::Unobservable { tid, signal: sig });
    }
    match result {
        Ok(count) => Ok(Observed { count }),
        Err(Missing::Tid(tid)) => Err(StopError::NoAnswer {
            tid,
            signal: sig,
            waited_ms: timeout.as_millis() as u64,
        }),
        Err(Missing::Running(tid, _)) => Err(StopError::Unobservable { tid, signal: sig }),
        Err(Missing::Os(e)) => Err(StopError::Os(
            std::io::Error::from_raw_os_error(e).to_string(),
        )),
        Err(Missing::TooMany) => Err(StopError::TooManyThreads),
    }
}
