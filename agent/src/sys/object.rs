//! The words of live C++ objects and vtables that the class conversion runtime reads and writes.
//!
//! Every address here is either the `this` of a call that is in progress through a conversion
//! thunk (so its first word, the vptr, is readable and writable: the caller is about to run a
//! method on it) or a word of a vtable symbol of a loaded module (never unmapped: the agent keeps
//! every generation mapped). Objects that carry a vptr are 8-aligned by the C++ ABI; callers
//! check the alignment before coming here.

use super::raw;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

fn word(addr: u64) -> &'static AtomicU64 {
    debug_assert!(addr.is_multiple_of(8));
    // SAFETY: an aligned word of a live object or of a mapped vtable (module contract); the
    // program's own code reads and writes the vptr with plain moves, which x86-64 makes atomic
    // for aligned words, so mixing them with atomics is sound at the machine level.
    unsafe { AtomicU64::from_ptr(addr as *mut u64) }
}

/// The object's vptr.
pub fn vptr(obj: u64) -> u64 {
    word(obj).load(Ordering::Acquire)
}

/// Replaces the vptr `from` by `to`; false when another value was there (someone else won).
pub fn claim(obj: u64, from: u64, to: u64) -> bool {
    word(obj)
        .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// Stores the final vptr, after the converter's writes. Sequentially consistent: the caller
/// then reads its waiter count, which each waiter raises before its futex looks at the word, so
/// either the publisher sees the waiter and wakes it, or the waiter sees the new vptr.
pub fn publish(obj: u64, vptr: u64) {
    word(obj).store(vptr, Ordering::SeqCst);
}

/// Wakes every thread waiting on the low half of the object's vptr.
pub fn wake(obj: u64) {
    raw::futex_wake(low_half(obj), i32::MAX);
}

fn low_half(obj: u64) -> &'static AtomicU32 {
    // SAFETY: the first 4 bytes of an aligned, live vptr word (little-endian: its low half).
    unsafe { AtomicU32::from_ptr(obj as *mut u32) }
}

/// Sleeps while the low half of the object's vptr is `low`, at most `timeout` (a wake, a signal
/// or a changed value ends it early: callers loop and look again).
pub fn wait_while_low(obj: u64, low: u32, timeout: Duration) {
    raw::futex_wait(low_half(obj), low, Some(timeout));
}

/// `sched_yield(2)`: for the rare wait a futex on the low half cannot express.
pub fn yield_now() {
    // SAFETY: no arguments.
    let _ = unsafe { raw::syscall(libc::SYS_sched_yield, &[]) };
}

/// A word of a mapped vtable.
pub fn load_word(addr: u64) -> u64 {
    word(addr).load(Ordering::Acquire)
}

/// Runs a converter `void f(void *object)` on the object.
pub fn call_converter(f: usize, obj: u64) {
    // SAFETY: `f` is the patch's converter, checked to point into code when the class was
    // registered; its C signature is the API contract (include/hotagent.h). A C++ exception
    // thrown out of it cannot unwind through here: the header tells converters not to throw.
    let f: extern "C" fn(*mut core::ffi::c_void) = unsafe { std::mem::transmute(f) };
    f(obj as *mut core::ffi::c_void);
}

/// `n` words at `addr`, read by the kernel (`process_vm_readv` on ourselves), so an address that
/// is not mapped gives `None` instead of a fault.
pub fn read_words(addr: u64, n: usize) -> Option<Vec<u64>> {
    let mut out = vec![0u64; n];
    let len = n.checked_mul(8)?;
    let local = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` describes our own buffer of `len` bytes; the kernel checks `remote`.
    let r = unsafe {
        raw::syscall(
            libc::SYS_process_vm_readv,
            &[
                raw::getpid() as usize,
                &local as *const libc::iovec as usize,
                1,
                &remote as *const libc::iovec as usize,
                1,
                0,
            ],
        )
    };
    (r == Ok(len)).then_some(out)
}
