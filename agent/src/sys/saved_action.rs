//! The fatal signals the agent's handlers watch, and the action each had before ours, stored so
//! that a signal handler can read it: field by field, in atomics, no lock. Shared by the crash
//! watch of a request (`fatal.rs`) and the probation handler (`probation.rs`).

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
