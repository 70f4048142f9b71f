//! The page size, which every protection change and mapping is rounded to.

use std::sync::atomic::{AtomicU64, Ordering};

static PAGE_SIZE: AtomicU64 = AtomicU64::new(0);

/// The system page size: asked once (the agent asks at start, before any patch), then cached.
pub fn page_size() -> u64 {
    match PAGE_SIZE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions.
            let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let n = if n > 0 { n as u64 } else { 4096 };
            PAGE_SIZE.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}
