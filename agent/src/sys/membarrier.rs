//! Registration for `membarrier`'s core serialisation, and the barrier itself (`sync_cores`).
//!
//! Registering makes the kernel wait for an RCU grace period (10–25 ms measured) — except while
//! the address space has one user: then it only sets a flag (~3 µs). So the agent registers in
//! its constructor, before it starts a thread of its own, when glibc says the process is still
//! single-threaded. Then neither a reload nor the program's exit ever waits for a grace period.
//! A process that already had threads at start (or a forked child, whose registration the
//! kernel dropped) registers before its first entry write instead, as it always did.

use super::raw;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

const REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: i32 = 1 << 6;
const PRIVATE_EXPEDITED_SYNC_CORE: i32 = 1 << 5;
/// The process that registered (a forked child must register again), and whether it could.
static PID: AtomicI32 = AtomicI32::new(0);
static OK: AtomicBool = AtomicBool::new(false);

// Called by the constructor alone, which unit tests and fuzz builds do not have.
#[cfg_attr(any(test, not(feature = "autostart")), allow(dead_code))]
/// glibc's own answer to "has this process ever started a second thread?" (glibc 2.32 and
/// later); unknown (false) when the symbol is missing.
fn single_threaded() -> bool {
    // SAFETY: RTLD_DEFAULT is a valid pseudo-handle and the name a valid C string.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__libc_single_threaded".as_ptr()) };
    // SAFETY: when present, the symbol is glibc's `char __libc_single_threaded`, alive for the
    // whole process; only the process's first thread creation changes it.
    !p.is_null() && unsafe { std::ptr::read_volatile(p.cast::<libc::c_char>()) } != 0
}

fn register() {
    let ok = raw::membarrier(REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0).is_ok();
    OK.store(ok, Ordering::Release);
    PID.store(raw::getpid(), Ordering::Release);
}

#[cfg_attr(any(test, not(feature = "autostart")), allow(dead_code))]
/// At start-up, before the agent starts a thread: registers when that costs no grace period.
/// Returns whether it did.
pub fn register_if_single_threaded() -> bool {
    let single = single_threaded();
    if single {
        register();
    }
    single
}

/// Registers this process, once (slow unless done at start-up: see the module's comment). Done
/// before threads are stopped, never while they are.
pub fn prepare() {
    if PID.load(Ordering::Acquire) != raw::getpid() {
        register();
    }
}

/// Is this process registered (not only its parent before a fork)?
pub fn registered() -> bool {
    OK.load(Ordering::Acquire) && PID.load(Ordering::Acquire) == raw::getpid()
}

/// Makes every CPU running a thread of this process execute a serialising instruction before it
/// returns to user space, so no core keeps executing code we just rewrote from a stale pipeline.
/// Without registration (or kernel support) it is left to the serialisation of the signal return.
pub fn sync_cores() {
    if registered() {
        let _ = raw::membarrier(PRIVATE_EXPEDITED_SYNC_CORE, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test runner has threads: registering there would wait for a grace period, so the
    /// early path must decline (and leave the registration to the first entry write).
    #[test]
    fn a_threaded_process_is_not_registered_early() {
        let other = std::thread::spawn(|| ());
        other.join().expect("join");
        assert!(!single_threaded());
        assert!(!register_if_single_threaded());
    }
}
