//! The agent's threads in glibc's set*id broadcast.
//!
//! Linux credentials are per thread; glibc makes `setuid`, `setresgid`, `setgroups`... act on
//! the whole process by sending every other thread an internal signal (SIGSETXID, 33) whose
//! handler repeats the system call, and it aborts the process (`setxid_error`) when the threads'
//! results differ. A program that believes it is single-threaded may change per-thread state
//! first: `setpriv --reuid=U --regid=G` sets `PR_SET_KEEPCAPS` and raises its effective
//! capabilities with `capset` on its one thread between `setresuid` and `setresgid`. The agent's
//! thread, without either, lost its capabilities at `setresuid` and then failed `setresgid`
//! with EPERM while the main thread succeeded: SIGABRT.
//!
//! So the agent's threads are the main thread's twins for credentials: on SIGSETXID an agent
//! thread first takes the main thread's capability sets and keeps its permitted set through the
//! call, runs glibc's handler (which makes and reports the call), then, if the call dropped the
//! last root uid, waits (bounded) until the main thread has made the call too (its uids in
//! `/proc/self/status` are the new ones) and copies its capabilities, so an agent thread keeps
//! none the main thread gave up — after a lag of the order of 100 µs. When it cannot tell, it
//! gives up its permitted set: a later set*id may then fail on it as on any other thread of the
//! program, but the agent never holds privileges the program dropped.
//!
//! Per-thread changes the program makes without a set*id call (`capset`, `prctl`) reach the
//! agent's threads at the next one. A main thread that has exited (`pthread_exit`) is followed
//! only roughly: its last capabilities before a call, none after a drop.
//!
//! glibc installs its handler when the first thread is created and refuses to let the program
//! change it; the agent chains in front of it with the raw system call, after starting each of
//! its threads. Threads of the program reach glibc's handler unchanged.

use super::raw::{self, KernelSigaction};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// glibc's internal signal for set*id (`__SIGRTMIN + 1`).
const SIGSETXID: i32 = 33;
/// Agent threads that can be registered at once (the listener plus its connections, with room).
const MAX_AGENT_THREADS: usize = 128;
/// How long an agent thread waits for the main thread to make the call too.
const FOLLOW_TIMEOUT_NS: u64 = 200_000_000;
/// `_LINUX_CAPABILITY_VERSION_3`.
const CAP_V3: u32 = 0x2008_0522;
/// `si_code` of a signal sent with `tgkill`.
const SI_TKILL: i32 = -6;

/// glibc's handler, 0 until chained.
static GLIBC_HANDLER: AtomicUsize = AtomicUsize::new(0);
/// The thread pointer (`pthread_self`) of each running agent thread, 0 for a free slot; beside
/// it the pid it was registered in, so entries a forked child inherits (those threads do not
/// exist there, and a new thread may get the same pointer) count for nothing.
static AGENT_THREADS: [AtomicU64; MAX_AGENT_THREADS] =
    [const { AtomicU64::new(0) }; MAX_AGENT_THREADS];
static AGENT_PIDS: [AtomicU32; MAX_AGENT_THREADS] =
    [const { AtomicU32::new(0) }; MAX_AGENT_THREADS];

/// Marks the current thread as the agent's while alive.
pub struct AgentThread {
    slot: Option<usize>,
    me: u64,
}

impl AgentThread {
    /// Registers the calling thread (its spawner may have done it already). With every slot
    /// taken the thread simply stays a plain participant (glibc's behaviour).
    pub fn enter() -> AgentThread {
        let me = thread_pointer();
        AgentThread {
            slot: register(me),
            me,
        }
    }
}

impl Drop for AgentThread {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if AGENT_THREADS[i].load(Ordering::Acquire) == self.me {
                AGENT_PIDS[i].store(0, Ordering::Release);
                AGENT_THREADS[i].store(0, Ordering::Release);
            }
        }
    }
}

/// Registers the thread whose `pthread_t` is `thread` as the agent's. The spawner calls it as
/// soon as `pthread_create` returns, so the program (often its main thread, in our
/// constructor) never waits for the new thread to be scheduled; the thread repeats it first
/// thing (both find the same slot). Lock-free.
pub fn register(thread: u64) -> Option<usize> {
    let pid = raw::getpid() as u32;
    if let Some(i) = (0..MAX_AGENT_THREADS).find(|&i| {
        AGENT_THREADS[i].load(Ordering::Acquire) == thread
            && AGENT_PIDS[i].load(Ordering::Acquire) == pid
    }) {
        return Some(i);
    }
    (0..MAX_AGENT_THREADS).find(|&i| {
        let was = AGENT_THREADS[i].load(Ordering::Acquire);
        let free = was == 0 || AGENT_PIDS[i].load(Ordering::Acquire) != pid;
        free && AGENT_THREADS[i]
            .compare_exchange(was, thread, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && {
                AGENT_PIDS[i].store(pid, Ordering::Release);
                true
            }
    })
}

/// `pthread_self()` read straight from the thread pointer (glibc's `tcbhead_t.self` at
/// `%fs:0x10`): signal-safe, and no libc function a patch could have replaced.
#[cfg(target_arch = "x86_64")]
fn thread_pointer() -> u64 {
    let me: u64;
    // SAFETY: on x86_64 glibc keeps the thread control block at %fs:0, whose `self` field (at
    // 0x10) holds the thread's own `pthread_t`; reading it has no side effect.
    unsafe {
        std::arch::asm!("mov {}, fs:[0x10]", out(reg) me, options(nostack, readonly, preserves_flags))
    };
    me
}

/// Elsewhere glibc's `pthread_self` (signal-safe: it reads the thread pointer too).
#[cfg(not(target_arch = "x86_64"))]
fn thread_pointer() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as u64 }
}

fn is_agent_thread() -> bool {
    let me = thread_pointer();
    let pid = raw::getpid() as u32;
    (0..MAX_AGENT_THREADS).any(|i| {
        AGENT_THREADS[i].load(Ordering::Acquire) == me
            && AGENT_PIDS[i].load(Ordering::Acquire) == pid
    })
}

fn our_handler() -> usize {
    on_setxid as extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) as usize
}

/// Puts the agent's handler in front of glibc's, once glibc has installed its own (at the
/// process's first thread creation). Cheap when already done; called after every agent spawn.
pub fn chain() {
    let Ok(current) = raw::rt_sigaction(SIGSETXID, None) else {
        return;
    };
    let ours = our_handler();
    let glibc_installed = current.handler > 1 && current.flags & libc::SA_SIGINFO as u64 != 0;
    if current.handler == ours || !glibc_installed {
        return;
    }
    GLIBC_HANDLER.store(current.handler, Ordering::SeqCst);
    let new = KernelSigaction {
        handler: ours,
        ..current
    };
    if let Ok(previous) = raw::rt_sigaction(SIGSETXID, Some(&new)) {
        if previous.handler != current.handler && previous.handler > 1 && previous.handler != ours {
            // Someone changed it between our two calls: chain to what was really there.
            GLIBC_HANDLER.store(previous.handler, Ordering::SeqCst);
        }
    }
}

extern "C" fn on_setxid(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let glibc = GLIBC_HANDLER.load(Ordering::Acquire);
    if glibc == 0 {
        return;
    }
    // SAFETY: GLIBC_HANDLER only ever holds the SA_SIGINFO handler the kernel reported for this
    // signal, a function of exactly this signature that lives as long as libc.
    let glibc: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
        unsafe { std::mem::transmute::<usize, _>(glibc) };
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let from_us = !info.is_null() && unsafe { (*info).si_code == SI_TKILL };
    if !from_us || !is_agent_thread() {
        glibc(sig, info, ctx);
        return;
    }
    as_twin_of_main(|| glibc(sig, info, ctx));
}

/// One thread's capability sets (two 32-bit halves each).
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

type Caps = [CapData; 2];

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

fn capget(tid: i32) -> Result<Caps, raw::Errno> {
    let mut h = CapHeader {
        version: CAP_V3,
        pid: tid,
    };
    let mut d = Caps::default();
    // SAFETY: header and data have the kernel's v3 layout (one header, two data records).
    unsafe {
        raw::syscall(
            libc::SYS_capget,
            &[&mut h as *mut CapHeader as usize, d.as_mut_ptr() as usize],
        )
    }?;
    Ok(d)
}

fn capset_self(d: &Caps) -> Result<(), raw::Errno> {
    let mut h = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    // SAFETY: as in capget; the kernel only reads the data.
    unsafe {
        raw::syscall(
            libc::SYS_capset,
            &[&mut h as *mut CapHeader as usize, d.as_ptr() as usize],
        )
    }
    .map(drop)
}

/// Takes `want`'s sets; when the inheritable set cannot be matched (it only matters at exec),
/// the effective and permitted sets alone.
fn take_caps(want: &Caps) {
    if capset_self(want).is_ok() {
        return;
    }
    if let Ok(mine) = capget(0) {
        let mut d = *want;
        for (w, m) in d.iter_mut().zip(mine.iter()) {
            w.inheritable = m.inheritable;
        }
        let _ = capset_self(&d);
    }
}

fn set_keepcaps(on: bool) {
    // SAFETY: prctl(PR_SET_KEEPCAPS) takes integers only.
    let _ = unsafe {
        raw::syscall(
            libc::SYS_prctl,
            &[libc::PR_SET_KEEPCAPS as usize, on as usize],
        )
    };
}

fn getresuid() -> [u32; 3] {
    let mut ids = [u32::MAX; 3];
    // SAFETY: three valid, writable u32 slots.
    let _ = unsafe {
        raw::syscall(
            libc::SYS_getresuid,
            &[
                &mut ids[0] as *mut u32 as usize,
                &mut ids[1] as *mut u32 as usize,
                &mut ids[2] as *mut u32 as usize,
            ],
        )
    };
    ids
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    let _ = unsafe {
        raw::syscall(
            libc::SYS_clock_gettime,
            &[
                libc::CLOCK_MONOTONIC as usize,
                &mut ts as *mut libc::timespec as usize,
            ],
        )
    };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn nap_100us() {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 100_000,
    };
    // SAFETY: ts is a valid timespec; no remainder is asked for.
    let _ = unsafe {
        raw::syscall(
            libc::SYS_nanosleep,
            &[&ts as *const libc::timespec as usize, 0],
        )
    };
}

/// Runs glibc's handler (`call`) on an agent thread with the main thread's capabilities, then
/// leaves the thread with no more than the main thread kept. Signal-safe: raw system calls and
/// stack values only.
fn as_twin_of_main(call: impl FnOnce()) {
    let main = raw::getpid();
    let Ok(before_caps) = capget(main) else {
        call();
        return;
    };
    let before = getresuid();
    take_caps(&before_caps);
    // Whether the main thread keeps its permitted set across this call is its own secret
    // (keep-caps and securebits are per thread, and no interface shows another thread's):
    // keep ours, and give up what the main thread gives up once it has made its call.
    set_keepcaps(true);
    call();
    set_keepcaps(false);
    let after = getresuid();
    let had_root = before.contains(&0);
    let has_root = after.contains(&0);
    let permitted = before_caps.iter().any(|d| d.permitted != 0);
    if !(had_root && !has_root && permitted) {
        return;
    }
    let deadline = monotonic_ns() + FOLLOW_TIMEOUT_NS;
    loop {
        let done = match main_uids() {
            // The main thread's capabilities are final once its uids are ours.
            Some(ids) => ids == after,
            // No /proc (a chroot): a change of its capabilities is the only sign we can see,
            // and one a quick `capset` can hide.
            None => capget(main).is_ok_and(|now| now != before_caps),
        };
        if done {
            match capget(main) {
                Ok(now) => take_caps(&now),
                Err(_) => take_caps(&Caps::default()),
            }
            return;
        }
        if monotonic_ns() >= deadline {
            // Cannot tell what the main thread kept: keep nothing.
            take_caps(&Caps::default());
            return;
        }
        nap_100us();
    }
}

/// The main thread's real, effective and saved uids, from `/proc/self/status` (which describes
/// the thread-group leader). None when it cannot be read.
fn main_uids() -> Option<[u32; 3]> {
    let mut buf = [0u8; 2048];
    let path = c"/proc/self/status";
    // SAFETY: path is a valid C string; the descriptor is closed below.
    let fd = unsafe {
        raw::syscall(
            libc::SYS_openat,
            &[
                libc::AT_FDCWD as usize,
                path.as_ptr() as usize,
                (libc::O_RDONLY | libc::O_CLOEXEC) as usize,
            ],
        )
    }
    .ok()? as i32;
    // The Uid line is among the first dozen: one read is enough.
    let n = raw::read(fd, &mut buf);
    // SAFETY: opened above by this function, used no more.
    unsafe { raw::close(fd) };
    parse_uids(&buf[..n.ok()?])
}

fn parse_uids(status: &[u8]) -> Option<[u32; 3]> {
    const KEY: &[u8] = b"\nUid:";
    let at = status.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let mut ids = [0u32; 3];
    let mut rest = &status[at..];
    for id in &mut ids {
        let start = rest.iter().position(|b| b.is_ascii_digit())?;
        if rest[..start].contains(&b'\n') {
            return None;
        }
        rest = &rest[start..];
        let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let mut v: u32 = 0;
        for &d in &rest[..len] {
            v = v.checked_mul(10)?.checked_add(u32::from(d - b'0'))?;
        }
        *id = v;
        rest = &rest[len..];
    }
    Some(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_line_parses() {
        let s = b"Name:\tx\nUmask:\t0022\nUid:\t1001\t1002\t1003\t1004\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_uids(s), Some([1001, 1002, 1003]));
        assert_eq!(parse_uids(b"Name:\tx\nUid:\t1\n2\t3\n"), None);
        assert_eq!(parse_uids(b"Name:\tx\n"), None);
    }

    #[test]
    fn own_uids_match_status() {
        assert_eq!(main_uids(), Some(getresuid()));
    }
}
