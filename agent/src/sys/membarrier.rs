//! Core serialisation after code is rewritten, through `membarrier(2)`, entered by `sys::raw`.

use super::raw;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

const MEMBARRIER_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: i32 = 1 << 6;
const MEMBARRIER_PRIVATE_EXPEDITED_SYNC_CORE: i32 = 1 << 5;
/// The process that registered (a forked child must register again), and whether it could.
static SYNC_CORE_PID: AtomicI32 = AtomicI32::new(0);
static SYNC_CORE_OK: AtomicBool = AtomicBool::new(false);

/// Registers this process for `sync_cores`, once. Slow (the kernel waits for an RCU grace
/// period: the first entry write pays ~10 ms for it), so it is done before threads are stopped,
/// never while they are — and not at start-up either, where a thread stuck in it delays the exit
/// of every short-lived program run with the agent by as long.
pub fn sync_cores_prepare() {
    let pid = raw::getpid();
    if SYNC_CORE_PID.load(Ordering::Acquire) == pid {
        return;
    }
    let ok = raw::membarrier(MEMBARRIER_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0).is_ok();
    SYNC_CORE_OK.store(ok, Ordering::Release);
    SYNC_CORE_PID.store(pid, Ordering::Release);
}

/// Makes every CPU running a thread of this process execute a serialising instruction before it
/// returns to user space, so no core keeps executing code we just rewrote from a stale pipeline.
/// Without registration (or kernel support) it is left to the serialisation of the signal return.
pub fn sync_cores() {
    if SYNC_CORE_OK.load(Ordering::Acquire)
        && SYNC_CORE_PID.load(Ordering::Acquire) == raw::getpid()
    {
        let _ = raw::membarrier(MEMBARRIER_PRIVATE_EXPEDITED_SYNC_CORE, 0);
    }
}
