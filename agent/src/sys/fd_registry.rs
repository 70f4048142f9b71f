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
//!
//! It lives in `sys` because it closes the numbers it keeps: only a descriptor the agent made and
//! handed over as an [`Fd`] gets registered, so closing a registered number (while it names what
//! it did) closes the agent's own and nothing else.

use super::fd::Fd;
use super::{raw, socket};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Listener, wake-up pair, the connections the I/O thread serves and the one the worker holds.
const SLOTS: usize = 64;

/// Each slot holds a registration's serial (high half) and its number (low half), so a stale
/// token of a number since closed and registered again matches nothing; `EMPTY` when free.
static FDS: [AtomicU64; SLOTS] = [const { AtomicU64::new(EMPTY) }; SLOTS];
const EMPTY: u64 = u64::MAX;
static SERIAL: AtomicU32 = AtomicU32::new(0);
static DEVS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
static INOS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

/// A descriptor the agent made and registered: only [`register`] mints one. Copied freely (the
/// I/O thread hands its connection to the worker by number), it is closed once: `close` empties
/// its slot first, and a stale copy matches no later registration of the same number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered(u64);

impl Registered {
    pub fn raw(self) -> i32 {
        number(self.0)
    }
}

fn number(packed: u64) -> i32 {
    packed as u32 as i32
}

/// Remembers `fd` and what it names now, taking it over; gives it back when the registry is
/// full (the caller refuses the connection, and dropping it closes it).
pub fn register(mut fd: Fd) -> Result<Registered, Fd> {
    let n = fd.raw();
    let Some((dev, ino)) = socket::fd_identity(n) else {
        return Err(fd);
    };
    let packed = (u64::from(SERIAL.fetch_add(1, Ordering::SeqCst)) << 32) | u64::from(n as u32);
    let taken = FDS
        .iter()
        .zip(DEVS.iter().zip(&INOS))
        .any(|(slot, (d, i))| {
            let free = slot
                .compare_exchange(EMPTY, packed, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            if free {
                d.store(dev, Ordering::SeqCst);
                i.store(ino, Ordering::SeqCst);
            }
            free
        });
    if !taken {
        return Err(fd);
    }
    // The registry closes it from now on.
    fd.disown();
    Ok(Registered(packed))
}

fn slot_of(fd: i32) -> Option<usize> {
    FDS.iter().position(|s| {
        let v = s.load(Ordering::SeqCst);
        fd >= 0 && v != EMPTY && number(v) == fd
    })
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
pub fn close(token: Registered) {
    let fd = token.raw();
    let Some(slot) = FDS.iter().position(|s| s.load(Ordering::SeqCst) == token.0) else {
        return;
    };
    let ours = names_what_it_did(slot, fd);
    if FDS[slot]
        .compare_exchange(token.0, EMPTY, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
        && ours
    {
        close_forgotten(fd);
    }
}

/// In a forked child: closes every descriptor the parent's agent held (and still holds).
pub fn close_inherited() {
    for (slot, v) in FDS.iter().enumerate() {
        let v = v.swap(EMPTY, Ordering::SeqCst);
        let fd = number(v);
        if v != EMPTY && names_what_it_did(slot, fd) {
            close_forgotten(fd);
        }
    }
}

/// Closes a number just taken out of its slot.
fn close_forgotten(fd: i32) {
    // SAFETY: `fd` was handed over as an `Fd` (ours alone) when it was registered, still names
    // what it did then (not a number the program reused), and its slot was just emptied by
    // this thread's compare-exchange or swap, so nobody closes it twice or uses it after.
    unsafe { raw::close(fd) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fd;

    /// Puts a new descriptor for what `src` names at number `n`, replacing what `n` named in one
    /// step (as a program that closed our number and got it back for its own file).
    fn place(src: &Fd, n: i32) -> Fd {
        // SAFETY: dup3 takes no memory; `n` is the test's own number, replaced atomically.
        let got = unsafe { libc::dup3(src.raw(), n, libc::O_CLOEXEC) };
        assert_eq!(got, n);
        // SAFETY: `n` now names our new duplicate, owned by nobody else.
        unsafe { Fd::from_raw(n) }
    }

    /// A registered descriptor whose number the program took over for a file of its own is not
    /// closed by the agent's close, and a stale token does not close a later registration that
    /// got the same number.
    #[test]
    fn close_never_closes_a_reused_number() {
        let (a, b) = fd::socketpair().unwrap();
        let token = register(a).unwrap();
        assert!(is_ours(token.raw()));
        let exe = fd::open_at(libc::AT_FDCWD, c"/proc/self/exe", libc::O_RDONLY).unwrap();
        let theirs = place(&exe, token.raw());
        assert!(!is_ours(token.raw()));
        close(token);
        assert!(
            fd::fstat(theirs.raw()).is_ok(),
            "the program's file was closed"
        );
        drop(theirs);

        let mine = register(b).unwrap();
        let n = mine.raw();
        let (c, d) = fd::socketpair().unwrap();
        close(mine);
        let again = register(place(&c, n)).unwrap();
        close(mine);
        assert!(is_ours(n), "a stale token closed a later descriptor");
        drop(c);
        close(again);
        // Its last descriptor closed, the peer reads the end of the stream.
        assert_eq!(raw::read(d.raw(), &mut [0u8; 1]), Ok(0));
    }
}
