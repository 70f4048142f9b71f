//! What a thunk does when it is reached: convert the object exactly once (the winner of a
//! compare-and-swap on its vptr), make every other caller wait for the vptr to change, let the
//! converter itself call the object it is converting, then say where to jump.
//!
//! While an object is being converted its vptr points at a "busy" vtable of ours whose every
//! slot leads to a wait thunk: whatever path a call takes (a virtual call, a direct call through
//! an entry thunk, a stale slot loaded before the switch), it cannot reach a method of either
//! version before the converter is done. A thread-local list of the objects this thread is
//! converting tells a converter's own calls (re-entry) from other threads' (wait).

use super::vtable::Vtable;
use crate::sys::object;
use crate::sys::raw;
use crate::sys::thunk::Dispatch;
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

pub(super) const UPGRADE: u64 = 0;
pub(super) const DOWNGRADE: u64 = 1;
pub(super) const WAIT: u64 = 2;
pub(super) const ENTRY: u64 = 3;
pub(super) const ENTRY_DOWN: u64 = 4;

/// A thunk's `code` constant: its kind and its method slot.
pub(super) fn code(kind: u64, slot: usize) -> u64 {
    kind | (slot as u64) << 8
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Up,
    Down,
}

enum Claim {
    Done,
    /// Another thread claimed it first (or it changed meanwhile): look again.
    Lost,
    /// This thread already holds as many claims as it can record: leave the object as it is.
    TooDeep,
}

/// The part of a class the thunks reach: leaked, it lives as long as they do.
pub(super) struct Core {
    pub old: Vtable,
    pub new: Vtable,
    /// The old vtable's method slots when the class was registered.
    pub old_methods: Vec<u64>,
    /// The new vtable's method slots just before rollback pointed them at downgrade thunks
    /// (0 until then).
    pub new_methods: Vec<AtomicU64>,
    pub upgrade: usize,
    pub downgrade: Option<usize>,
    /// The vptrs of our two busy vtables (set once the thunks are mapped, before any is reached).
    pub busy_up: AtomicU64,
    pub busy_down: AtomicU64,
    pub upgraded: AtomicU64,
    pub downgraded: AtomicU64,
    /// Threads asleep (or about to sleep) on some object's vptr of this class.
    pub waiters: AtomicU64,
    /// 1 while objects may convert; 0 from just before a switch until no thread is left in the
    /// middle of a method of the class (see `Class::hold`), so that a call in flight at the
    /// switch finishes on the layout it started with before anyone converts the object.
    pub gate: AtomicU32,
}

/// The longest a conversion waits for the gate (see [`Core::pass_gate`]).
const GATE_WAIT: Duration = Duration::from_secs(1);

/// Nested conversions one thread can hold (a converter that touches another old object).
const DEPTH: usize = 16;

thread_local! {
    static HELD: Cell<[u64; DEPTH]> = const { Cell::new([0; DEPTH]) };
}

fn held(obj: u64) -> bool {
    HELD.try_with(|h| h.get().contains(&obj)).unwrap_or(false)
}

/// Records `obj` as being converted by this thread; false when there is no room (or the thread
/// is exiting and its locals are gone).
fn hold(obj: u64) -> bool {
    HELD.try_with(|h| {
        let mut a = h.get();
        let Some(free) = a.iter_mut().find(|s| **s == 0) else {
            return false;
        };
        *free = obj;
        h.set(a);
        true
    })
    .unwrap_or(false)
}

fn release(obj: u64) {
    let _ = HELD.try_with(|h| {
        let mut a = h.get();
        if let Some(s) = a.iter_mut().find(|s| **s == obj) {
            *s = 0;
        }
        h.set(a);
    });
}

impl Core {
    fn old_vptr(&self) -> u64 {
        self.old.vptr()
    }

    fn new_vptr(&self) -> u64 {
        self.new.vptr()
    }

    fn busy(&self, v: u64) -> Option<Dir> {
        if v == self.busy_up.load(Ordering::Relaxed) {
            Some(Dir::Up)
        } else if v == self.busy_down.load(Ordering::Relaxed) {
            Some(Dir::Down)
        } else {
            None
        }
    }

    fn old_method(&self, i: usize) -> u64 {
        self.old_methods[i]
    }

    /// The new version's method i: as recorded at rollback, else as the new vtable holds it.
    fn new_method(&self, i: usize) -> u64 {
        match self.new_methods[i].load(Ordering::Relaxed) {
            0 => object::load_word(self.new_vptr() + 8 * i as u64),
            m => m,
        }
    }

    /// Where a call of slot i goes for an object whose vptr is `v` (not busy).
    fn through(&self, v: u64, i: usize) -> u64 {
        if v == self.new_vptr() || v == self.old_vptr() {
            object::load_word(v + 8 * i as u64)
        } else {
            // Not an object of this class at all: the original code is the least harmful guess.
            self.old_method(i)
        }
    }

    /// Where a converter's own call of slot i goes: the code of the layout the object still has.
    fn reentry(&self, dir: Dir, i: usize) -> u64 {
        match dir {
            Dir::Up => self.old_method(i),
            Dir::Down => self.new_method(i),
        }
    }

    /// Waits while the gate is closed, at most [`GATE_WAIT`]: past it the conversion goes on
    /// (a thread in flight that never leaves — it waits for this very gate deeper in its call —
    /// must not hang the program).
    fn pass_gate(&self) {
        if self.gate.load(Ordering::Acquire) == 1 {
            return;
        }
        let deadline = raw::monotonic() + GATE_WAIT;
        while self.gate.load(Ordering::Acquire) == 0 {
            let now = raw::monotonic();
            if now >= deadline {
                return;
            }
            raw::futex_wait(&self.gate, 0, Some(deadline - now));
        }
    }

    fn convert(&self, obj: u64, dir: Dir) -> Claim {
        self.pass_gate();
        let (from, busy, to, f, count) = match (dir, self.downgrade) {
            (Dir::Up, _) => (
                self.old_vptr(),
                &self.busy_up,
                self.new_vptr(),
                self.upgrade,
                &self.upgraded,
            ),
            (Dir::Down, Some(down)) => (
                self.new_vptr(),
                &self.busy_down,
                self.old_vptr(),
                down,
                &self.downgraded,
            ),
            (Dir::Down, None) => return Claim::TooDeep,
        };
        if !hold(obj) {
            return Claim::TooDeep;
        }
        if !object::claim(obj, from, busy.load(Ordering::Relaxed)) {
            release(obj);
            return Claim::Lost;
        }
        // Nothing between the claim and the publish can panic: a stuck busy vptr would hang
        // every later caller of this object.
        object::call_converter(f, obj);
        release(obj);
        object::publish(obj, to);
        // A futex wake is a system call (most of a conversion's cost): only when someone waits.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            object::wake(obj);
        }
        count.fetch_add(1, Ordering::Relaxed);
        Claim::Done
    }

    /// Waits (bounded, then the caller looks again) until the busy vptr `v` changes.
    fn wait(&self, obj: u64, v: u64) {
        let low = v as u32;
        // The futex compares the low half only: if the vptr the converter will store has the
        // same low half, the sleeper would not see the change.
        if low == self.old_vptr() as u32 || low == self.new_vptr() as u32 {
            object::yield_now();
        } else {
            self.waiters.fetch_add(1, Ordering::SeqCst);
            object::wait_while_low(obj, low, Duration::from_millis(50));
            self.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A call of slot i reached the upgrade thunk (through the old vtable).
    fn upgrade_call(&self, obj: u64, i: usize) -> u64 {
        loop {
            let v = object::vptr(obj);
            if v == self.old_vptr() {
                match self.convert(obj, Dir::Up) {
                    Claim::Done | Claim::Lost => continue,
                    // Old code on an object that stays old: consistent.
                    Claim::TooDeep => return self.old_method(i),
                }
            }
            match self.busy(v) {
                Some(dir) if held(obj) => return self.reentry(dir, i),
                Some(_) => self.wait(obj, v),
                None => return self.through(v, i),
            }
        }
    }

    /// A call of slot i reached the downgrade thunk (through the new vtable, after rollback).
    fn downgrade_call(&self, obj: u64, i: usize) -> u64 {
        loop {
            let v = object::vptr(obj);
            if v == self.new_vptr() {
                match self.convert(obj, Dir::Down) {
                    Claim::Done | Claim::Lost => continue,
                    Claim::TooDeep => return self.new_method(i),
                }
            }
            match self.busy(v) {
                Some(dir) if held(obj) => return self.reentry(dir, i),
                Some(_) => self.wait(obj, v),
                // The original old method, recorded when the class was registered.
                None => return self.old_method(i),
            }
        }
    }

    /// A call of slot i reached a busy vtable's wait thunk.
    fn wait_call(&self, obj: u64, i: usize) -> u64 {
        loop {
            let v = object::vptr(obj);
            match self.busy(v) {
                Some(dir) if held(obj) => return self.reentry(dir, i),
                Some(_) => self.wait(obj, v),
                None => return self.through(v, i),
            }
        }
    }

    /// A direct call reached the entry thunk of `method` (a new method) with an old or busy
    /// object. A converter's own direct call runs `method` too: the old method's entry may
    /// itself lead here, so jumping there could never end.
    fn entry_call(&self, obj: u64, method: u64) -> u64 {
        loop {
            let v = object::vptr(obj);
            if v == self.old_vptr() {
                match self.convert(obj, Dir::Up) {
                    Claim::Done | Claim::Lost => continue,
                    Claim::TooDeep => {
                        tracing::error!(
                            class = %self.new.name,
                            "too many nested conversions in one thread: a new method runs on \
                             an old object"
                        );
                        return method;
                    }
                }
            }
            match self.busy(v) {
                Some(_) if held(obj) => return method,
                Some(_) => self.wait(obj, v),
                None => return method,
            }
        }
    }
}

impl Core {
    /// A direct call reached the rollback entry thunk of `method` (an old method) with an
    /// object on the new vtable, or a busy one.
    fn entry_down_call(&self, obj: u64, method: u64) -> u64 {
        loop {
            let v = object::vptr(obj);
            if v == self.new_vptr() {
                match self.convert(obj, Dir::Down) {
                    Claim::Done | Claim::Lost => continue,
                    Claim::TooDeep => {
                        tracing::error!(
                            class = %self.new.name,
                            "too many nested conversions in one thread: an old method runs on \
                             a new object"
                        );
                        return method;
                    }
                }
            }
            match self.busy(v) {
                Some(_) if held(obj) => return method,
                Some(_) => self.wait(obj, v),
                None => return method,
            }
        }
    }
}

impl Dispatch for Core {
    fn dispatch(&self, obj: u64, code: u64, target: u64) -> u64 {
        let i = (code >> 8) as usize;
        if obj == 0 || !obj.is_multiple_of(8) || i >= self.old_methods.len() {
            return self.fallback(code, target);
        }
        match code & 0xff {
            UPGRADE => self.upgrade_call(obj, i),
            DOWNGRADE => self.downgrade_call(obj, i),
            WAIT => self.wait_call(obj, i),
            ENTRY => self.entry_call(obj, target),
            ENTRY_DOWN => self.entry_down_call(obj, target),
            _ => self.fallback(code, target),
        }
    }

    fn fallback(&self, code: u64, target: u64) -> u64 {
        if matches!(code & 0xff, ENTRY | ENTRY_DOWN) {
            return target;
        }
        let i = ((code >> 8) as usize).min(self.old_methods.len() - 1);
        self.old_methods[i]
    }
}
