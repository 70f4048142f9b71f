//! The descriptors the agent holds open: its listener, its wake-up eventfd, its connections.
//!
//! A forked child inherits every one of them, but none is its own: it must close them before it
//! starts its own agent, or a client of the parent would wait on a connection the child also
//! holds. The child runs with one thread and whatever locks the parent's threads held at the
//! fork, so this registry is a fixed array of atomics, never a lock.

use crate::sys::raw;
use std::sync::atomic::{AtomicI32, Ordering};

/// Listener, eventfd, the connections the I/O thread serves and the one the worker holds.
const SLOTS: usize = 64;

static FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];

/// Remembers `fd`; false when the registry is full (the caller refuses the connection).
pub fn register(fd: i32) -> bool {
    FDS.iter().any(|slot| {
        slot.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    })
}

/// Forgets `fd` and closes it.
pub fn close(fd: i32) {
    for slot in &FDS {
        if slot
            .compare_exchange(fd, -1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            break;
        }
    }
    raw::close(fd);
}

/// In a forked child: closes every descriptor the parent's agent held.
pub fn close_inherited() {
    for slot in &FDS {
        let fd = slot.swap(-1, Ordering::SeqCst);
        if fd >= 0 {
            raw::close(fd);
        }
    }
}
