//! The descriptors the agent holds open: its listener, its wake-up socket pair, its connections.
//!
//! A forked child inherits every one of them, but none is its own: it must close them before it
//! starts its own agent, or a client of the parent would wait on a connection the child also
//! holds. The child runs with one thread and whatever locks the parent's threads held at the
//! fork, so this registry is a fixed array of atomics, never a lock.
//!
//! The program may close descriptors it did not open (a daemon after `fork`, a patch's
//! constructor) and get the same numbers back for files of its own. So each descriptor is
//! remembered with the identity (device, inode) of what it named, and the agent reads, writes
//! or closes a number only while it still names that: never the program's file.

use crate::sys::{raw, socket};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// Listener, wake-up pair, the connections the I/O thread serves and the one the worker holds.
const SLOTS: usize = 64;

static FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];
static DEVS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
static INOS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

/// Remembers `fd` and what it names now; false when the registry is full (the caller refuses
/// the connection).
pub fn register(fd: i32) -> bool {
    let Some((dev, ino)) = socket::fd_identity(fd) else {
        return false;
    };
    FDS.iter()
        .zip(DEVS.iter().zip(&INOS))
        .any(|(slot, (d, i))| {
            let free = slot
                .compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            if free {
                d.store(dev, Ordering::SeqCst);
                i.store(ino, Ordering::SeqCst);
            }
            free
        })
}

fn slot_of(fd: i32) -> Option<usize> {
    FDS.iter()
        .position(|s| fd >= 0 && s.load(Ordering::SeqCst) == fd)
}

fn names_what_it_did(slot: usize, fd: i32) -> bool {
    socket::fd_identity(fd).is_some_and(|(dev, ino)| {
        DEVS[slot].load(Ordering::SeqCst) == dev && INOS[slot].load(Ordering::SeqCst) == ino
    })
}

/// Whether `fd` is registered and still names what it named then. Allocates nothing and takes
/// no lock (a fork handler asks it).
pub fn is_ours(fd: i32) -> bool {
    slot_of(fd).is_some_and(|slot| names_what_it_did(slot, fd))
}

/// Forgets `fd` and closes it, unless the number now names something else (the program's).
pub fn close(fd: i32) {
    let Some(slot) = slot_of(fd) else {
        return;
    };
    let ours = names_what_it_did(slot, fd);
    if FDS[slot]
        .compare_exchange(fd, -1, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
        && ours
    {
        raw::close(fd);
    }
}

/// In a forked child: closes every descriptor the parent's agent held (and still holds).
pub fn close_inherited() {
    for (slot, fd) in FDS.iter().enumerate() {
        let fd = fd.swap(-1, Ordering::SeqCst);
        if fd >= 0 && names_what_it_did(slot, fd) {
            raw::close(fd);
        }
    }
}

/// A descriptor a client passed with its request (the patch file hotctl opened): registered, so
/// it is closed exactly once, on every path, and never after the program reused its number.
#[derive(Debug)]
pub struct Received(i32);

impl Received {
    /// Takes a descriptor just received; None (and it is closed) when the registry is full.
    pub fn register(fd: i32) -> Option<Received> {
        if register(fd) {
            Some(Received(fd))
        } else {
            raw::close(fd);
            None
        }
    }

    /// Its number, while it still names what was received.
    pub fn fd(&self) -> Option<i32> {
        is_ours(self.0).then_some(self.0)
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        close(self.0);
    }
}
