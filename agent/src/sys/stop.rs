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
//! Everything here enters the kernel through `sys::raw`, never through libc: the threads are
//! stopped to write function entries, and the function being rolled back may be any libc
//! export (`sigaction`, `syscall`, `clock_gettime`, `open` ...), broken by the patch that
//! replaced it. Deadlines use the raw monotonic clock for the same reason.

use super::raw;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Threads one stop can hold; a process with more is refused (and the reload falls back).
pub const MAX_THREADS: usize = 8192;
/// How long a thread may block the signal before it is taken to block it for good.
const BLOCKED_GRACE: Duration = Duration::from_millis(50);
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
    #[error("thread {tid} blocks signal {signal}, so it cannot be stopped")]
    Blocked { tid: i32, signal: i32 },
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

/// Lists `/proc/self/task` into a buffer allocated beforehand, so it can run while threads are
/// parked.
pub struct Tasks {
    buf: Vec<u8>,
    tids: Vec<i32>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks {
            buf: vec![0; 64 * 1024],
            tids: Vec::with_capacity(MAX_THREADS),
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
                    if tid != me {
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

/// Every other thread, parked. Dropping it releases them.
pub struct Stopped {
    round: u32,
    count: usize,
    /// `raw::monotonic()` when the threads were signalled.
    started: Duration,
}

impl Stopped {
    /// The interrupted program counter of each parked thread (threads that exited meanwhile are
    /// left out).
    pub fn pcs(&self) -> impl Iterator<Item = u64> + '_ {
        SLOTS[..self.count]
            .iter()
            .filter(|s| s.tid.load(Ordering::Relaxed) > 0)
            .map(|s| s.pc.load(Ordering::Acquire))
    }

    pub fn threads(&self) -> usize {
        self.pcs().count()
    }

    /// Releases the threads and waits for them to leave the handler; returns how long they
    /// were held.
    pub fn release(self) -> Duration {
        let held = raw::monotonic().saturating_sub(self.started);
        drop(self);
        let deadline = raw::monotonic() + LEAVE_TIMEOUT;
        loop {
            let inside = INSIDE.load(Ordering::Acquire);
            let now = raw::monotonic();
            if inside == 0 || now >= deadline {
                break;
            }
            futex_wait(&INSIDE, inside, Some(deadline - now));
        }
        held
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        release_round(self.round);
    }
}

fn release_round(round: u32) {
    ROUND.store(0, Ordering::SeqCst);
    RELEASED.store(round, Ordering::Release);
    futex_wake(&RELEASED, i32::MAX);
}

/// The stop signal, if one was installed and its handler is still ours.
fn ours() -> Result<i32, StopError> {
    let sig = signal().ok_or(StopError::NoSignal)?;
    if current_handler(sig) != Some(handler_address()) {
        return Err(StopError::HandlerReplaced(sig));
    }
    Ok(sig)
}

/// Whether a stop could work now: the signal is ours and no thread blocks it.
pub fn preflight() -> Result<(), StopError> {
    let sig = ours()?;
    let mut tasks = Tasks::default();
    check_unblocked(&mut tasks, sig)
}

/// Lists the threads and checks that none blocks `sig`. Threads block every signal for a moment
/// while they are created and while they exit (glibc does both), so a blocker gets a short grace
/// period before it counts.
fn check_unblocked(tasks: &mut Tasks, sig: i32) -> Result<(), StopError> {
    let deadline = raw::monotonic() + BLOCKED_GRACE;
    loop {
        tasks
            .list()
            .map_err(|e| StopError::Os(std::io::Error::from_raw_os_error(e).to_string()))?;
        let Some(&tid) = tasks.tids.iter().find(|&&tid| blocks(tid, sig)) else {
            return Ok(());
        };
        if raw::monotonic() >= deadline {
            return Err(StopError::Blocked { tid, signal: sig });
        }
        raw::sleep(Duration::from_millis(1));
    }
}

/// Stops every other thread of the process, waiting at most `timeout` for them to park.
/// Between this call and the release of the returned value, the caller must allocate nothing
/// and take no lock.
pub fn stop_others(tasks: &mut Tasks, timeout: Duration) -> Result<Stopped, StopError> {
    let sig = ours()?;
    // Checked before stopping anyone: a thread that blocks the signal would only time out.
    check_unblocked(tasks, sig)?;
    let mut round = NEXT_ROUND.fetch_add(1, Ordering::SeqCst);
    if round == 0 {
        round = NEXT_ROUND.fetch_add(1, Ordering::SeqCst);
    }
    SLOT_COUNT.store(0, Ordering::SeqCst);
    ROUND.store(round, Ordering::SeqCst);
    let started = raw::monotonic();
    // From here until the caller releases: no allocation, no lock.
    let missing = match park_all(tasks, sig, round, started + timeout) {
        Ok(count) => {
            return Ok(Stopped {
                round,
                count,
                started,
            })
        }
        Err(m) => m,
    };
    release_round(round);
    Err(match missing {
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
    })
}

enum Missing {
    Tid(i32),
    Os(i32),
    TooMany,
}

/// Signals every listed thread and waits for each to park; lists again until no thread appears
/// that was not stopped (only a running thread can create one). Allocates nothing.
fn park_all(tasks: &mut Tasks, sig: i32, round: u32, deadline: Duration) -> Result<usize, Missing> {
    let pid = raw::getpid();
    let mut count = 0usize;
    loop {
        let before = count;
        for &tid in &tasks.tids {
            if SLOTS[..count]
                .iter()
                .any(|s| s.tid.load(Ordering::Relaxed).abs() == tid)
            {
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
        if count == before {
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

/// Whether thread `tid` blocks `sig` (from its `/proc` status; false when unreadable).
fn blocks(tid: i32, sig: i32) -> bool {
    let mut path = [0u8; 48];
    let Some(path) = task_status_path(tid, &mut path) else {
        return false;
    };
    let mut buf = [0u8; 4096];
    let Ok(n) = raw::read_file_into(path, &mut buf) else {
        return false;
    };
    buf[..n]
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"SigBlk:"))
        .and_then(|m| std::str::from_utf8(m).ok())
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (sig - 1)) != 0)
}

/// `/proc/self/task/TID/status`, NUL-terminated, in `buf`.
fn task_status_path(tid: i32, buf: &mut [u8; 48]) -> Option<&std::ffi::CStr> {
    use std::io::Write;
    let mut w = std::io::Cursor::new(&mut buf[..]);
    write!(w, "/proc/self/task/{tid}/status\0").ok()?;
    let n = w.position() as usize;
    std::ffi::CStr::from_bytes_with_nul(&buf[..n]).ok()
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

    #[test]
    fn reads_own_mask() {
        let mut b = [0u8; 48];
        assert_eq!(
            task_status_path(12, &mut b).unwrap().to_bytes(),
            b"/proc/self/task/12/status"
        );
        // No thread of the test harness blocks SIGKILL's bit... nor any bit of a missing thread.
        assert!(!blocks(i32::MAX, libc::SIGUSR1));
    }
}
