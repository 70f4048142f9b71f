//! The `int3` half of switching an entry without holding any thread (the kernel's
//! `text_poke_bp`): while an entry is rewritten its first byte is `int3`, and a thread that
//! reaches it is sent on by this SIGTRAP handler to the code that runs there now. A trap at an
//! address that is not one of ours goes to the program's own handler (a debugger's breakpoints
//! never reach a handler at all: ptrace takes them first).
//!
//! Once a rewrite is done its trap stays known, resuming at the entry itself: a thread that hit
//! the `int3` just before it was replaced takes the signal after, and must run what is there now.
//! The handler allocates nothing, takes no lock and enters the kernel only through `sys::raw`.

use super::raw::{self, KernelSigaction};
use super::saved_action::{SavedAction, SA_RESTORER};
use super::ucontext;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Entries one process may have rewritten this way (each keeps its place for good). A whole
/// libcrypto has 5,363; each later generation of it adds as many (its own entries get jumps).
/// Past this the switch falls back to the full stop: it never starts what it cannot finish.
const MAX_TRAPS: usize = 16_384;
/// `si_code` of the SIGTRAP an `int3` raises.
const SI_KERNEL: i32 = 0x80;
/// The instruction written first.
pub const INT3: u8 = 0xCC;

struct Trap {
    at: AtomicU64,
    /// Where a thread that traps at `at` goes; 0: back to `at`, rewritten by now.
    to: AtomicU64,
}

static TRAPS: [Trap; MAX_TRAPS] = [const {
    Trap {
        at: AtomicU64::new(0),
        to: AtomicU64::new(0),
    }
}; MAX_TRAPS];
static COUNT: AtomicUsize = AtomicUsize::new(0);
static PREVIOUS: SavedAction = SavedAction::new();
/// The most CPU time, in nanoseconds, a thread spent in this handler for one of our traps.
static LONGEST_CPU_NS: AtomicU64 = AtomicU64::new(0);

/// Why an entry cannot be rewritten behind a trap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrapError {
    #[error("the SIGTRAP handler could not be installed (errno {0})")]
    Install(i32),
    #[error("more than {MAX_TRAPS} entries were rewritten behind a trap")]
    Full,
}

fn our_handler() -> usize {
    on_trap as extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) as usize
}

/// Puts the handler in front of whatever handles SIGTRAP now (the program may have installed
/// its own since the last switch), keeping that one to chain to.
pub fn arm() -> Result<(), TrapError> {
    let current = raw::rt_sigaction(libc::SIGTRAP, None).map_err(TrapError::Install)?;
    if current.handler == our_handler() {
        return Ok(());
    }
    PREVIOUS.store(current);
    let ours = KernelSigaction {
        handler: our_handler(),
        // NODEFER: a handler we chain to may itself call a function behind a trap, and a
        // blocked SIGTRAP raised by `int3` would kill the process.
        flags: (libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER | libc::SA_RESTART) as u64
            | SA_RESTORER,
        restorer: super::guard::restorer_address() as usize,
        mask: 0,
    };
    let was = raw::rt_sigaction(libc::SIGTRAP, Some(&ours)).map_err(TrapError::Install)?;
    if was != current && was.handler != ours.handler {
        PREVIOUS.store(was);
    }
    Ok(())
}

/// Whether the table can take every one of `windows` (those already in it take no new place).
/// Asked before the first `int3` of a switch is written, so a switch is never left half done
/// with `int3`s behind for want of room.
pub fn room_for(windows: &[u64]) -> Result<(), TrapError> {
    let n = COUNT.load(Ordering::Acquire).min(MAX_TRAPS);
    let mut known: Vec<u64> = TRAPS[..n]
        .iter()
        .map(|t| t.at.load(Ordering::Acquire))
        .collect();
    known.sort_unstable();
    let mut new: Vec<u64> = windows
        .iter()
        .copied()
        .filter(|w| known.binary_search(w).is_err())
        .collect();
    new.sort_unstable();
    new.dedup();
    if n + new.len() > MAX_TRAPS {
        return Err(TrapError::Full);
    }
    Ok(())
}

/// From now on a thread that traps at `at` goes to `to`. Before the `int3` is written.
pub fn set(at: u64, to: u64) -> Result<(), TrapError> {
    let n = COUNT.load(Ordering::Acquire);
    if let Some(t) = TRAPS[..n]
        .iter()
        .find(|t| t.at.load(Ordering::Acquire) == at)
    {
        t.to.store(to, Ordering::Release);
        return Ok(());
    }
    // Only the switching thread adds traps (under the reload lock), so no two race for a place.
    if n == MAX_TRAPS {
        return Err(TrapError::Full);
    }
    TRAPS[n].to.store(to, Ordering::Release);
    TRAPS[n].at.store(at, Ordering::Release);
    COUNT.store(n + 1, Ordering::Release);
    Ok(())
}

/// The entry at `at` holds its final bytes: a late trap there runs them.
pub fn settle(at: u64) {
    let n = COUNT.load(Ordering::Acquire);
    if let Some(t) = TRAPS[..n]
        .iter()
        .find(|t| t.at.load(Ordering::Acquire) == at)
    {
        t.to.store(0, Ordering::Release);
    }
}

/// The most CPU time a thread spent in the handler for one of our traps since the last call
/// (then reset); zero when no thread reached an entry while its first byte was `int3`.
pub fn take_longest_cpu() -> std::time::Duration {
    std::time::Duration::from_nanos(LONGEST_CPU_NS.swap(0, Ordering::AcqRel))
}

/// Where a thread that trapped just after `pc - 1` goes, when that is one of ours.
fn resume_at(pc: u64) -> Option<u64> {
    let at = pc.checked_sub(1)?;
    let n = COUNT.load(Ordering::Acquire).min(MAX_TRAPS);
    let t = TRAPS[..n]
        .iter()
        .find(|t| t.at.load(Ordering::Acquire) == at)?;
    Some(match t.to.load(Ordering::Acquire) {
        0 => at,
        to => to,
    })
}

extern "C" fn on_trap(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let came = raw::thread_cpu_ns();
    let code = if info.is_null() {
        0
    } else {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
        unsafe { (*info).si_code }
    };
    if code == SI_KERNEL && !ctx.is_null() {
        // SAFETY: ctx is this SA_SIGINFO invocation's ucontext.
        let pc = unsafe { ucontext::pc(ctx) };
        if let Some(to) = resume_at(pc) {
            // SAFETY: `to` is where the entry's bytes lead (or the entry itself), reached with
            // the registers a call to the entry has.
            unsafe { ucontext::set_pc(ctx, to) };
            let used = raw::thread_cpu_ns().saturating_sub(came);
            LONGEST_CPU_NS.fetch_max(used, Ordering::AcqRel);
            return;
        }
    }
    chain(sig, info, ctx);
}

/// Goes on to the program's own action for a trap that is not ours.
fn chain(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREVIOUS.load();
    if prev.handler == libc::SIG_IGN {
        return;
    }
    if prev.handler == libc::SIG_DFL {
        // The default action (a core dump), as without us: put it back and raise again.
        let _ = raw::rt_sigaction(sig, Some(&prev));
        let _ = raw::tgkill(raw::getpid(), raw::gettid(), sig);
    } else {
        // SAFETY: `prev` is the action the kernel reported for `sig` before ours, a function
        // here, and `info`/`ctx` are this delivery's.
        unsafe { super::saved_action::call_handler(&prev, sig, info, ctx) };
    }
}
