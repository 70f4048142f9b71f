//! The fatal signals the agent's handlers watch, and the action each had before ours, stored so
//! that a signal handler can read it: field by field, in atomics, no lock; and the call that
//! hands a signal on to it. Shared by the crash watch of a request (`fatal.rs`), the probation
//! handler (`probation.rs`) and the entry trap (`trap.rs`).

use super::raw::KernelSigaction;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The signals a crash raises.
pub const FATAL_SIGNALS: [i32; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];

/// `sa_flags` bit: the action carries its own return trampoline.
pub const SA_RESTORER: u64 = 0x0400_0000;

/// One signal's previous action.
pub struct SavedAction {
    handler: AtomicUsize,
    flags: AtomicU64,
    restorer: AtomicUsize,
    mask: AtomicU64,
}

impl SavedAction {
    pub const fn new() -> SavedAction {
        SavedAction {
            handler: AtomicUsize::new(0),
            flags: AtomicU64::new(0),
            restorer: AtomicUsize::new(0),
            mask: AtomicU64::new(0),
        }
    }

    /// The handler last: a reader that sees it sees the fields that go with it.
    pub fn store(&self, a: KernelSigaction) {
        self.flags.store(a.flags, Ordering::SeqCst);
        self.restorer.store(a.restorer, Ordering::SeqCst);
        self.mask.store(a.mask, Ordering::SeqCst);
        self.handler.store(a.handler, Ordering::SeqCst);
    }

    pub fn load(&self) -> KernelSigaction {
        KernelSigaction {
            handler: self.handler.load(Ordering::SeqCst),
            flags: self.flags.load(Ordering::SeqCst),
            restorer: self.restorer.load(Ordering::SeqCst),
            mask: self.mask.load(Ordering::SeqCst),
        }
    }
}

/// Hands `sig` to `prev`'s handler as the kernel would have: with the siginfo and context when
/// the action asked for them (`SA_SIGINFO`), with the signal number alone otherwise.
///
/// # Safety
/// `prev` is the action the kernel reported for `sig`, and its handler is a function (neither
/// `SIG_DFL` nor `SIG_IGN`); `info` and `ctx` are what the kernel passed for this delivery.
pub unsafe fn call_handler(
    prev: &KernelSigaction,
    sig: i32,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    if prev.flags & libc::SA_SIGINFO as u64 != 0 {
        // SAFETY: the caller's promise: an SA_SIGINFO handler the kernel reported, of this type.
        let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute::<usize, _>(prev.handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the caller's promise: a plain handler the kernel reported, of this type.
        let f: extern "C" fn(i32) = unsafe { std::mem::transmute::<usize, _>(prev.handler) };
        f(sig);
    }
}
