//! Listing the process's threads with `getdents64` on `/proc/self/task` into buffers allocated
//! beforehand, so it can run while threads are parked; and sorting out those that block a signal.

use super::raw;
use super::stop::MAX_THREADS;
use super::task::{self, Asleep, Seen};
use std::sync::atomic::{AtomicI32, Ordering};

/// The one thread a stop leaves running besides the stopper: the agent's hook thread while it
/// runs a migrate hook for the stopper, who waits for it (0: none).
static EXEMPT: AtomicI32 = AtomicI32::new(0);

/// Leaves thread `tid` out of every stop from now on (0: nobody). Only the thread that stops
/// others may use this, for a thread it waits for while the others are parked.
pub fn exempt(tid: i32) {
    EXEMPT.store(tid, Ordering::Release);
}

/// Lists `/proc/self/task` into a buffer allocated beforehand, so it can run while threads are
/// parked.
pub struct Tasks {
    buf: Vec<u8>,
    pub(super) tids: Vec<i32>,
    /// Those of `tids` that block the stop signal.
    pub(super) blockers: Vec<i32>,
    /// Those of `tids` that were not running when classified (asleep, stopped).
    pub(super) sleeping: Vec<i32>,
    /// Those of `tids` that block SIGTRAP (an `int3` would kill them).
    pub(super) trap_blockers: Vec<i32>,
    /// The look in progress may see a sleeping thread through /proc instead of signalling it
    /// (set by `stop_observe::observe_others` for its own round only).
    pub(super) see_asleep: bool,
    /// Threads the look in progress signals even if asleep.
    pub(super) wake: Vec<i32>,
    /// The blockers, each where it sleeps, seen while the others were parked.
    pub(super) asleep: Vec<(i32, Asleep)>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks {
            buf: vec![0; 64 * 1024],
            tids: Vec::with_capacity(MAX_THREADS),
            blockers: Vec::with_capacity(MAX_THREADS),
            sleeping: Vec::with_capacity(MAX_THREADS),
            trap_blockers: Vec::with_capacity(MAX_THREADS),
            see_asleep: false,
            wake: Vec::with_capacity(MAX_THREADS),
            asleep: Vec::with_capacity(MAX_THREADS),
        }
    }
}

impl Tasks {
    /// Fills `self.tids` with every thread but the caller. Allocates nothing.
    pub(super) fn list(&mut self) -> Result<(), i32> {
        self.tids.clear();
        let me = raw::gettid();
        let fd = raw::open(c"/proc/self/task", libc::O_RDONLY | libc::O_DIRECTORY)?;
        let mut result = Ok(());
        loop {
            let n = match raw::getdents64(fd, &mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let mut off = 0usize;
            // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name NUL-ended.
            while off + 19 < n {
                let reclen = u16::from_ne_bytes([self.buf[off + 16], self.buf[off + 17]]) as usize;
                if reclen == 0 || off + reclen > n {
                    break;
                }
                let name = &self.buf[off + 19..off + reclen];
                if let Some(tid) = parse_tid(name) {
                    if tid != me && tid != EXEMPT.load(Ordering::Acquire) {
                        if self.tids.len() == self.tids.capacity() {
                            result = Err(libc::E2BIG);
                            break;
                        }
                        self.tids.push(tid);
                    }
                }
                off += reclen;
            }
        }
        // SAFETY: opened at the top of this function, used no more.
        unsafe { raw::close(fd) };
        result
    }
}

fn parse_tid(name: &[u8]) -> Option<i32> {
    let mut v: i32 = 0;
    let mut any = false;
    for &b in name {
        if b == 0 {
            break;
        }
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i32::from(b - b'0'))?;
        any = true;
    }
    any.then_some(v)
}

impl Tasks {
    /// Fills `self.blockers` with the listed threads that block `sig`. Allocates nothing.
    /// Also notes in `self.sleeping` those not running, and in `self.trap_blockers` those that
    /// block SIGTRAP (from the same read of their status).
    pub(super) fn classify(&mut self, sig: i32) {
        self.blockers.clear();
        self.sleeping.clear();
        self.trap_blockers.clear();
        let bit = |s: i32| 1u64 << (s - 1);
        for &tid in &self.tids {
            let (blocked, running) = task::blocked_and_runs(tid);
            if blocked & bit(sig) != 0 {
                self.blockers.push(tid);
            }
            if blocked & bit(libc::SIGTRAP) != 0 {
                self.trap_blockers.push(tid);
            }
            if !running {
                self.sleeping.push(tid);
            }
        }
    }

    /// Where each blocker sleeps, into `self.asleep`; the first one found running, if any, with
    /// its voluntary context switches. Allocates nothing.
    pub(super) fn locate_blockers(&mut self) -> Result<(), (i32, Option<u64>)> {
        self.asleep.clear();
        for &tid in &self.blockers {
            match task::locate(tid) {
                Seen::Asleep(a) => self.asleep.push((tid, a)),
                Seen::Gone => {}
                Seen::Running(voluntary) => return Err((tid, voluntary)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_task_names() {
        assert_eq!(parse_tid(b"1234\0\0"), Some(1234));
        assert_eq!(parse_tid(b".\0"), None);
        assert_eq!(parse_tid(b"..\0"), None);
        assert_eq!(parse_tid(b"\0"), None);
    }
}
