//! The stop signal's handler, and the shared state it reports into: each thread records where it
//! was interrupted, reports in, and parks on a futex until the stopper releases the round. It
//! allocates nothing, takes no lock and enters the kernel only through `sys::raw`.

use super::raw;
use super::stop::MAX_THREADS;
use super::ucontext;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// One thread's place in a stop.
pub(super) struct Slot {
    pub(super) tid: AtomicI32,
    /// The round in which the thread last parked.
    pub(super) round: AtomicU32,
    pub(super) pc: AtomicU64,
    /// A second place the thread may resume at, 0 for none: a thread seen asleep in a system
    /// call without a signal (`stop::park_all`) resumes at the `syscall` instruction instead if a
    /// signal makes the kernel restart the call.
    pub(super) alt_pc: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    tid: AtomicI32::new(0),
    round: AtomicU32::new(0),
    pc: AtomicU64::new(0),
    alt_pc: AtomicU64::new(0),
};

/// In `.bss`: costs no memory until used, and is never freed, so a handler running late can
/// never read freed memory.
pub(super) static SLOTS: [Slot; MAX_THREADS] = [EMPTY; MAX_THREADS];
pub(super) static SLOT_COUNT: AtomicUsize = AtomicUsize::new(0);
/// The round in progress, 0 when none.
pub(super) static ROUND: AtomicU32 = AtomicU32::new(0);
pub(super) static NEXT_ROUND: AtomicU32 = AtomicU32::new(1);
/// Futex word: the last round released.
pub(super) static RELEASED: AtomicU32 = AtomicU32::new(0);
/// Futex word: bumped by every thread that parks.
pub(super) static ARRIVED: AtomicU32 = AtomicU32::new(0);
/// Futex word: threads inside the parking part of the handler. They block every signal while
/// there, so the next stop waits for them to leave rather than take them for blockers.
pub(super) static INSIDE: AtomicU32 = AtomicU32::new(0);

/// The round that only observes: its threads record where they are and return at once.
pub(super) static OBSERVING: AtomicU32 = AtomicU32::new(0);
/// The longest time, in nanoseconds, a thread spent in the handler of an observing round.
pub(super) static LONGEST_LOOK_NS: AtomicU64 = AtomicU64::new(0);
/// The most CPU time, in nanoseconds, a thread spent in the handler of an observing round: the
/// time it could not run its own code because of us (the wall figure above also counts time the
/// scheduler gave other threads, which on few cores dominates).
pub(super) static LONGEST_LOOK_CPU_NS: AtomicU64 = AtomicU64::new(0);

/// A thread reaching round `round` (a look or a stop): counted inside, its PC recorded, its
/// arrival counted and the waiting caller woken. Allocates nothing, takes no lock.
///
/// # Safety
/// `ctx` is the ucontext of the SA_SIGINFO handler invocation that calls this.
unsafe fn arrive(slot: &Slot, round: u32, ctx: *mut libc::c_void) {
    INSIDE.fetch_add(1, Ordering::AcqRel);
    // SAFETY: the caller's promise: ctx is this delivery's ucontext.
    slot.pc
        .store(unsafe { ucontext::pc(ctx) }, Ordering::Relaxed);
    slot.round.store(round, Ordering::Release);
    ARRIVED.fetch_add(1, Ordering::AcqRel);
    raw::futex_wake(&ARRIVED, 1);
}

pub(super) extern "C" fn on_signal(
    _sig: libc::c_int,
    _info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    let round = ROUND.load(Ordering::Acquire);
    if round == 0 {
        // A late signal from a finished round, or someone else's: nothing to do.
        return;
    }
    // Raw system calls leave errno alone: the interrupted code sees its own.
    let tid = raw::gettid();
    let n = SLOT_COUNT.load(Ordering::Acquire).min(MAX_THREADS);
    if let Some(slot) = SLOTS[..n]
        .iter()
        .find(|s| s.tid.load(Ordering::Acquire) == tid)
    {
        if slot.round.load(Ordering::Acquire) != round && OBSERVING.load(Ordering::Acquire) == round
        {
            let came = raw::monotonic();
            let cpu = raw::thread_cpu_ns();
            // Counted as inside: every signal is blocked here, and the next look must not take
            // this thread for a blocker.
            // SAFETY: ctx is the ucontext of this SA_SIGINFO handler invocation.
            unsafe { arrive(slot, round, ctx) };
            let used = raw::thread_cpu_ns().saturating_sub(cpu);
            let stayed = raw::monotonic().saturating_sub(came).as_nanos();
            LONGEST_LOOK_NS.fetch_max(stayed.min(u128::from(u64::MAX)) as u64, Ordering::AcqRel);
            LONGEST_LOOK_CPU_NS.fetch_max(used, Ordering::AcqRel);
            if INSIDE.fetch_sub(1, Ordering::AcqRel) == 1 {
                raw::futex_wake(&INSIDE, i32::MAX);
            }
        } else if slot.round.load(Ordering::Acquire) != round {
            // SAFETY: ctx is the ucontext of this SA_SIGINFO handler invocation.
            unsafe { arrive(slot, round, ctx) };
            loop {
                let released = RELEASED.load(Ordering::Acquire);
                if released.wrapping_sub(round) as i32 >= 0 {
                    break;
                }
                raw::futex_wait(&RELEASED, released, None);
            }
            if INSIDE.fetch_sub(1, Ordering::AcqRel) == 1 {
                raw::futex_wake(&INSIDE, i32::MAX);
            }
        }
    }
}
