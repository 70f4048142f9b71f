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
use super::task::{self, Asleep, Seen};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Threads one stop can hold; a process with more is refused (and the reload falls back).
pub const MAX_THREADS: usize = 8192;
/// How long a thread that blocks the signal may keep running, without sleeping once, before it
/// is taken to run on for good. Asleep in the kernel it costs no wait at all.
const BLOCKED_GRACE: Duration = Duration::from_millis(50);
/// Looks at it that must all find it running before it counts: a stopper the scheduler starves
/// could otherwise see the whole grace pass in one or two looks.
const BLOCKED_LOOKS: u32 = 10;
/// Between two looks at a running blocker: it usually enters a system call within microseconds.
const BLOCKED_POLL: Duration = Duration::from_micros(200);
/// However often blockers are caught awake between sleeps (a loaded machine leaves a thread that
/// wakes every few milliseconds runnable much of the time), a stop waits no longer than this.
const BLOCKED_LIMIT: Duration = Duration::from_secs(1);
/// How often a wait for threads to park checks whether the missing ones still exist.
const EXIT_CHECK: Duration = Duration::from_millis(2);

/// One thread's place in a stop.
struct Slot {
    tid: AtomicI32,
    /// The round in which the thread last parked.
    round: AtomicU32,
    pc: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    tid: AtomicI32::new(0),
    round: AtomicU32::new(0),
    pc: AtomicU64::new(0),
};

/// In `.bss`: costs no memory until used, and is never freed, so a handler running late can
/// never read freed memory.
static SLOTS: [Slot; MAX_THREADS] = [EMPTY; MAX_THREADS];
static SLOT_COUNT: AtomicUsize = AtomicUsize::new(0);
/// The signal in use, 0 when none could be installed.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The round in progress, 0 when none.
static ROUND: AtomicU32 = AtomicU32::new(0);
static NEXT_ROUND: AtomicU32 = AtomicU32::new(1);
/// Futex word: the last round released.
static RELEASED: AtomicU32 = AtomicU32::new(0);
/// Futex word: bumped by every thread that parks.
static ARRIVED: AtomicU32 = AtomicU32::new(0);
/// Futex word: threads inside the parking part of the handler. They block every signal while
/// there, so the next stop waits for them to leave rather than take them for blockers.
static INSIDE: AtomicU32 = AtomicU32::new(0);
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
    #[error("cannot list or signal this process's threads: {0}")]
    Os(String),
}

/// Installs the handler on a free real-time signal (or `HOTAGENT_SIGNAL`). Returns the signal.
/// In a forked child the inherited handler is ours already and is kept.
pub fn install() -> Option<i32> {
    let requested = match std::env::var("HOTAGENT_SIGNAL") {
        Ok(text) if !text.trim().is_empty() => match requested_signal(&text) {
            Some(sig) => Some(sig),
            None => {
                // Taking SIGTERM or SIGINT would make the program deaf to them.
                tracing::warn!(
                    "HOTAGENT_SIGNAL={text:?} is not a real-time signal ({}..={}): function entries will not be rewritten (GOT only)",
                    libc::SIGRTMIN(),
                    libc::SIGRTMAX()
                );
                return None;
            }
        },
        _ => None,
    };
    let candidates: Vec<i32> = match requested {
        Some(s) => vec![s],
        // From the top: programs that use real-time signals usually count up from SIGRTMIN.
        None => (libc::SIGRTMIN() + 4..=libc::SIGRTMAX()).rev().collect(),
    };
    for sig in candidates {
        match current_handler(sig) {
            Some(h) if h == handler_address() => {
                SIGNAL.store(sig, Ordering::SeqCst);
                return Some(sig);
            }
            Some(h) if h == libc::SIG_DFL && set_handler(sig) => {
                SIGNAL.store(sig, Ordering::SeqCst);
                return Some(sig);
            }
            _ => {}
        }
    }
    None
}

/// A real-time signal's number, or None.
fn requested_signal(text: &str) -> Option<i32> {
    let sig = text.trim().parse::<i32>().ok()?;
    (libc::SIGRTMIN()..=libc::SIGRTMAX())
        .contains(&sig)
        .then_some(sig)
}

/// The signal in use, if any.
pub fn signal() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

fn handler_address() -> libc::sighandler_t {
    on_signal as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
        as libc::sighandler_t
}

/// The kernel's view of the handler: libc's `sigaction` may be the very function a patch broke.
fn current_handler(sig: i32) -> Option<libc::sighandler_t> {
    raw::signal_handler(sig).ok()
}

fn set_handler(sig: i32) -> bool {
    // SAFETY: the action is fully initialised; the handler is async-signal-safe (atomics and
    // raw futex/gettid system calls only) and lives as long as the process (this library is
    // never unloaded: it is preloaded).
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler_address();
        act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // No other handler may run on a parked thread: it could run code we are rewriting.
        libc::sigfillset(&mut act.sa_mask);
        libc::sigaction(sig, &act, std::ptr::null_mut()) == 0
    }
}

/// The program counter of the interrupted context.
///
/// # Safety
/// `ctx` must be the `ucontext_t` the kernel passed to an `SA_SIGINFO` handler.
unsafe fn interrupted_pc(ctx: *mut libc::c_void) -> u64 {
    let uc = ctx as *const libc::ucontext_t;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller passes the handler's ucontext, valid for the handler's duration.
    let pc = unsafe { (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] as u64 };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above.
    let pc = unsafe { (*uc).uc_mcontext.pc };
    pc
}

extern "C" fn on_signal(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
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
        if slot.round.load(Ordering::Acquire) != round {
            INSIDE.fetch_add(1, Ordering::AcqRel);
            // SAFETY: ctx is the ucontext of this SA_SIGINFO handler invocation.
            slot.pc
                .store(unsafe { interrupted_pc(ctx) }, Ordering::Relaxed);
            slot.round.store(round, Ordering::Release);
            ARRIVED.fetch_add(1, Ordering::AcqRel);
            futex_wake(&ARRIVED, 1);
            loop {
                let released = RELEASED.load(Ordering::Acquire);
                if released.wrapping_sub(round) as i32 >= 0 {
                    break;
                }
                futex_wait(&RELEASED, released, None);
            }
            if INSIDE.fetch_sub(1, Ordering::AcqRel) == 1 {
                futex_wake(&INSIDE, i32::MAX);
            }
        }
    }
}

fn futex_wake(word: &AtomicU32, n: i32) {
    raw::futex_wake(word, n);
}

/// Sleeps while `*word == seen`, at most `timeout`.
fn futex_wait(word: &AtomicU32, seen: u32, timeout: Option<Duration>) {
    raw::futex_wait(word, seen, timeout);
}

/// The one thread a stop leaves running besides the stopper: the agent's hook thread while it
/// runs a migrate hook for the stopper, who waits for it (0: none).
static EXEMPT: AtomicI32 = AtomicI32::new(0);

/// Leaves thread `tid` out of every stop from now on (0: nobody). Only the thread that stops
/// others may use this, for a thread it waits for while the others are parked.
pub fn exempt(tid: i32) {
    EXEMPT.store(tid, Ordering::Release);
}

/// Lists `/proc/self/task` into a buffer allocated beforehand, so it can run while threads are
/// parked.
pub struct Tasks {
    buf: Vec<u8>,
    tids: Vec<i32>,
    /// Those of `tids` that block the stop signal.
    blockers: Vec<i32>,
    /// The blockers, each where it sleeps, seen while the others were parked.
    asleep: Vec<(i32, Asleep)>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks {
            buf: vec![0; 64 * 1024],
            tids: Vec::with_capacity(MAX_THREADS),
            blockers: Vec::with_capacity(MAX_THREADS),
            asleep: Vec::with_capacity(MAX_THREADS),
        }
    }
}

impl Tasks {
    /// Fills `self.tids` with every thread but the caller. Allocates nothing.
    fn list(&mut self) -> Result<(), i32> {
        self.tids.clear();
        let me = raw::gettid();
        let fd = raw::open(c"/proc/self/task", libc::O_RDONLY | libc::O_DIRECTORY)?;
        let mut result = Ok(());
        loop {
            let n = match raw::getdents64(fd, &mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let mut off = 0usize;
            // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name NUL-ended.
            while off + 19 < n {
                let reclen = u16::from_ne_bytes([self.buf[off + 16], self.buf[off + 17]]) as usize;
                if reclen == 0 || off + reclen > n {
                    break;
                }
                let name = &self.buf[off + 19..off + reclen];
                if let Some(tid) = parse_tid(name) {
                    if tid != me && tid != EXEMPT.load(Ordering::Acquire) {
                        if self.tids.len() == self.tids.capacity() {
                            result = Err(libc::E2BIG);
                            break;
                        }
                        self.tids.push(tid);
                    }
                }
                off += reclen;
            }
        }
        raw::close(fd);
        result
    }
}

fn parse_tid(name: &[u8]) -> Option<i32> {
    let mut v: i32 = 0;
    let mut any = false;
    for &b in name {
        if b == 0 {
            break;
        }
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i32::from(b - b'0'))?;
        any = true;
    }
    any.then_some(v)
}

impl Tasks {
    /// Fills `self.blockers` with the listed threads that block `sig`. Allocates nothing.
    fn classify(&mut self, sig: i32) {
        self.blockers.clear();
        for &tid in &self.tids {
            if task::blocks(tid, sig) {
                self.blockers.push(tid);
            }
        }
    }

    /// Where each blocker sleeps, into `self.asleep`; the first one found running, if any, with
    /// its voluntary context switches. Allocates nothing.
    fn locate_blockers(&mut self) -> Result<(), (i32, Option<u64>)> {
        self.asleep.clear();
        for &tid in &self.blockers {
            match task::locate(tid) {
                Seen::Asleep(a) => self.asleep.push((tid, a)),
                Seen::Gone => {}
                Seen::Running(voluntary) => return Err((tid, voluntary)),
            }
        }
        Ok(())
    }
}

/// How long blockers have been seen running. Only one that runs on without sleeping — seen
/// running at `BLOCKED_LOOKS` looks in a row over `BLOCKED_GRACE`, its voluntary switches
/// unchanged — counts as running for good; one that slept in between starts afresh.
struct Grace {
    start: Duration,
    limit: Duration,
    suspect: Option<Suspect>,
}

struct Suspect {
    tid: i32,
    voluntary: Option<u64>,
    since: Duration,
    looks: u32,
}

impl Grace {
    fn new() -> Self {
        let start = raw::monotonic();
        Grace {
            start,
            limit: start + BLOCKED_LIMIT,
            suspect: None,
        }
    }

    /// Records a look that found `tid` running; true once it is taken to run on for good.
    fn running(&mut self, tid: i32, voluntary: Option<u64>) -> bool {
        let now = raw::monotonic();
        match &mut self.suspect {
            Some(s) if s.tid == tid && s.voluntary == voluntary && voluntary.is_some() => {
                s.looks += 1;
            }
            _ => {
                self.suspect = Some(Suspect {
                    tid,
                    voluntary,
                    since: now,
                    looks: 1,
                })
            }
        }
        let s = self
            .suspect
            .as_ref()
            .map_or((now, 0), |s| (s.since, s.looks));
        (s.1 >= BLOCKED_LOOKS && now.saturating_sub(s.0) >= BLOCKED_GRACE) || now >= self.limit
    }

    fn blocked(&self, tid: i32, sig: i32) -> StopError {
        StopError::Blocked {
            tid,
            signal: sig,
            waited_ms: raw::monotonic().saturating_sub(self.start).as_millis() as u64,
        }
    }
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
    futex_wake(&RELEASED, i32::MAX);
}

/// Waits (bounded) until no thread is inside the parking part of the handler: there it blocks
/// every signal, and must not be taken for a blocker (nor located asleep on our futex).
fn wait_handler_left() {
    let deadline = raw::monotonic() + LEAVE_TIMEOUT;
    loop {
        let inside = INSIDE.load(Ordering::Acquire);
        let now = raw::monotonic();
        if inside == 0 || now >= deadline {
            break;
        }
        futex_wait(&INSIDE, inside, Some(deadline - now));
    }
}

/// The stop signal, if one was installed and its handler is still ours.
fn ours() -> Result<i32, StopError> {
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

enum Missing {
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
fn park_all(tasks: &mut Tasks, sig: i32, round: u32, deadline: Duration) -> Result<usize, Missing> {
    let pid = raw::getpid();
    let mut count = 0usize;
    let mut first = true;
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
            slot.round.store(0, Ordering::Relaxed);
            slot.pc.store(0, Ordering::Relaxed);
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
            futex_wait(&ARRIVED, seen, Some((deadline - now).min(EXIT_CHECK)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_task_names() {
        assert_eq!(parse_tid(b"1234\0\0"), Some(1234));
        assert_eq!(parse_tid(b".\0"), None);
        assert_eq!(parse_tid(b"..\0"), None);
        assert_eq!(parse_tid(b"\0"), None);
    }
}
