//! Per-object conversion of C++ objects whose class changed layout (`hotagent_convert_class`).
//!
//! Given the old and the new vtable of a class and the patch's converters, a [`Class`] makes
//! the thunks that convert each old object lazily, on its first call after the switch:
//! - one upgrade thunk per method slot, for the old vtable's slots: it converts `this`
//!   (`upgrade(object)`, then the new vptr) and jumps to the new vtable's method in that slot;
//! - entry thunks for the new methods, for whatever still calls an old method directly: a new
//!   object costs a load and three compares, an old one is converted first;
//! - one downgrade thunk per slot, for the new vtable's slots at rollback: the mirror image,
//!   ending in the original old method.
//!
//! Writing the vtables is the caller's job ([`SlotWrite`]s: they lie in RELRO). Everything here
//! is leaked on purpose: a thread may be inside a thunk, or about to enter one, at any time.

mod error;
mod once;
mod vtable;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_gxx;

pub use error::ConvertError;
pub use vtable::{check, Checked, Vtable};

use crate::entry::error::Errno;
use crate::sys::{object, thunk};
use once::{code, Core, DOWNGRADE, ENTRY, ENTRY_DOWN, UPGRADE, WAIT};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use thunk::{ThunkSpec, THUNK_SIZE};

/// One aligned word to change from `expected` to `value` (compare, then store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotWrite {
    pub addr: u64,
    pub expected: u64,
    pub value: u64,
}

/// A class registered for conversion, with its thunks. Never freed.
pub struct Class {
    core: &'static Core,
    dispatch: u64,
    upgrade_thunks: Vec<u64>,
    /// Empty without a downgrade converter.
    downgrade_thunks: Vec<u64>,
    /// Entry thunks made so far: (kind, method, thunk), one each.
    entries: Mutex<Vec<(u64, u64, u64)>>,
}

impl std::fmt::Debug for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Class")
            .field("old", &self.core.old)
            .field("new", &self.core.new)
            .field("methods", &self.methods())
            .finish()
    }
}

impl Class {
    /// Checks both vtables (see `vtable`) and the converters, and maps the thunks.
    /// `is_code(addr)`: does `addr` lie in an executable segment of a loaded module.
    pub fn new(
        old: Vtable,
        new: Vtable,
        upgrade: usize,
        downgrade: Option<usize>,
        is_code: &dyn Fn(u64) -> bool,
    ) -> Result<&'static Class, ConvertError> {
        let pair = || (old.name.clone(), new.name.clone());
        if upgrade == 0 {
            let (old, new) = pair();
            return Err(ConvertError::NoUpgrade { old, new });
        }
        let downgrade = downgrade.filter(|&d| d != 0);
        for (which, f) in [("upgrade", Some(upgrade)), ("downgrade", downgrade)] {
            if let Some(f) = f.filter(|&f| !is_code(f as u64)) {
                let (old, new) = pair();
                let addr = f as u64;
                return Err(ConvertError::ConverterNotCode {
                    old,
                    new,
                    which,
                    addr,
                });
            }
        }
        let o = vtable::read(&old, is_code)?;
        let n = vtable::read(&new, is_code)?;
        if o.methods.len() != n.methods.len() {
            return Err(ConvertError::CountMismatch {
                old: old.name.clone(),
                old_methods: o.methods.len(),
                new: new.name.clone(),
                new_methods: n.methods.len(),
            });
        }
        let methods = o.methods.len();
        let core: &'static Core = Box::leak(Box::new(Core {
            old,
            new,
            old_methods: o.methods,
            new_methods: (0..methods).map(|_| AtomicU64::new(0)).collect(),
            upgrade,
            downgrade,
            busy_up: AtomicU64::new(0),
            busy_down: AtomicU64::new(0),
            upgraded: AtomicU64::new(0),
            downgraded: AtomicU64::new(0),
            waiters: AtomicU64::new(0),
            gate: AtomicU32::new(1),
        }));
        let dispatch = thunk::dispatcher(core);
        let layout = Layout { methods };
        let base = thunk::install(layout.len(), |base| {
            layout.image(base, dispatch, [o.header, n.header])
        })
        .map_err(|source| {
            let (old, new) = pair_of(core);
            ConvertError::Thunks {
                old,
                new,
                source: Errno::of(&source),
            }
        })?;
        core.busy_up.store(base + 16, Ordering::Release);
        core.busy_down.store(
            base + layout.busy_words() as u64 * 8 + 16,
            Ordering::Release,
        );
        let at = |k: usize| base + layout.thunk(k) as u64;
        Ok(Box::leak(Box::new(Class {
            core,
            dispatch,
            upgrade_thunks: (0..methods).map(at).collect(),
            downgrade_thunks: match downgrade {
                Some(_) => (0..methods).map(|i| at(methods + i)).collect(),
                None => Vec::new(),
            },
            entries: Mutex::new(Vec::new()),
        })))
    }

    pub fn old(&self) -> &Vtable {
        &self.core.old
    }

    pub fn new_vtable(&self) -> &Vtable {
        &self.core.new
    }

    /// Method slots (the same in both vtables).
    pub fn methods(&self) -> usize {
        self.core.old_methods.len()
    }

    /// The old vtable's slot i as it was when the class was registered.
    pub fn old_method(&self, i: usize) -> u64 {
        self.core.old_methods[i]
    }

    pub fn upgrade_thunk(&self, i: usize) -> u64 {
        self.upgrade_thunks[i]
    }

    /// The switch: old vtable slot i := upgrade thunk i.
    pub fn upgrade_writes(&self) -> Vec<SlotWrite> {
        let old = self.core.old.vptr();
        (0..self.methods())
            .map(|i| SlotWrite {
                addr: old + 8 * i as u64,
                expected: self.core.old_methods[i],
                value: self.upgrade_thunks[i],
            })
            .collect()
    }

    /// A thunk for direct calls into the old method that `new_method` replaces: it converts an
    /// old object first, and costs a new object a load and three compares. One per method.
    pub fn entry_thunk(&self, new_method: u64) -> Result<u64, ConvertError> {
        self.entry(ENTRY, new_method, self.core.old.vptr())
    }

    /// The mirror of [`Class::entry_thunk`] for rollback: a thunk for direct calls into the
    /// old method `old_method` (whose entry must then hold its own bytes) that converts an
    /// object still on the new vtable back first. Needs the downgrade converter.
    pub fn rollback_entry_thunk(&self, old_method: u64) -> Result<u64, ConvertError> {
        if self.downgrade_thunks.is_empty() {
            let (old, new) = pair_of(self.core);
            return Err(ConvertError::NoDowngrade { old, new });
        }
        self.entry(ENTRY_DOWN, old_method, self.core.new.vptr())
    }

    fn entry(&self, kind: u64, method: u64, from: u64) -> Result<u64, ConvertError> {
        let mut made = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&(_, _, t)) = made.iter().find(|(k, m, _)| (*k, *m) == (kind, method)) {
            return Ok(t);
        }
        if method == 0 {
            let (old, new) = pair_of(self.core);
            return Err(ConvertError::BadMethod {
                old,
                new,
                addr: method,
            });
        }
        let spec = ThunkSpec {
            dispatch: self.dispatch,
            code: code(kind, 0),
            target: method,
            fast_unless: Some([
                from,
                self.core.busy_up.load(Ordering::Acquire),
                self.core.busy_down.load(Ordering::Acquire),
            ]),
        };
        let t =
            thunk::install(THUNK_SIZE, |_| thunk::encode(&spec).to_vec()).map_err(|source| {
                let (old, new) = pair_of(self.core);
                ConvertError::Thunks {
                    old,
                    new,
                    source: Errno::of(&source),
                }
            })?;
        made.push((kind, method, t));
        Ok(t)
    }

    /// Holds every conversion of this class until [`Class::go`]: taken right before a switch
    /// makes its thunks reachable (or turns them around at rollback).
    pub fn hold(&self) {
        self.core.gate.store(0, Ordering::Release);
    }

    /// Lets conversions go on (and wakes those waiting): once no thread is in the middle of a
    /// method of the class, or when the agent gives up waiting for that.
    pub fn go(&self) {
        self.core.gate.store(1, Ordering::Release);
        crate::sys::raw::futex_wake(&self.core.gate, i32::MAX);
    }

    /// The rollback: old vtable slots back to their original values, new vtable slot i :=
    /// downgrade thunk i (from what it holds now, which is remembered: a converter's own calls
    /// during a downgrade go there).
    pub fn rollback_writes(&self) -> Result<Vec<SlotWrite>, ConvertError> {
        if self.downgrade_thunks.is_empty() {
            let (old, new) = pair_of(self.core);
            return Err(ConvertError::NoDowngrade { old, new });
        }
        let new = self.core.new.vptr();
        let mut writes: Vec<SlotWrite> = self
            .upgrade_writes()
            .into_iter()
            .map(|w| SlotWrite {
                addr: w.addr,
                expected: w.value,
                value: w.expected,
            })
            .collect();
        for (i, &down) in self.downgrade_thunks.iter().enumerate() {
            let addr = new + 8 * i as u64;
            let now = object::load_word(addr);
            if now != down {
                self.core.new_methods[i].store(now, Ordering::Relaxed);
            }
            writes.push(SlotWrite {
                addr,
                expected: self.core.new_methods[i].load(Ordering::Relaxed),
                value: down,
            });
        }
        Ok(writes)
    }

    /// Objects converted so far: (upgraded, downgraded).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.core.upgraded.load(Ordering::Relaxed),
            self.core.downgraded.load(Ordering::Relaxed),
        )
    }
}

fn pair_of(core: &Core) -> (String, String) {
    (core.old.name.clone(), core.new.name.clone())
}

/// The thunk mapping of a class: two busy vtables, then the upgrade, downgrade and wait thunks.
struct Layout {
    methods: usize,
}

impl Layout {
    fn busy_words(&self) -> usize {
        self.methods + 2
    }

    fn thunk(&self, k: usize) -> usize {
        (2 * self.busy_words() * 8).next_multiple_of(64) + k * THUNK_SIZE
    }

    fn len(&self) -> usize {
        self.thunk(3 * self.methods)
    }

    /// The bytes, for a mapping at `base`. The busy vtables copy the header words of the vtable
    /// of the layout the object still has (typeinfo for a converter's `dynamic_cast`).
    fn image(&self, base: u64, dispatch: u64, headers: [[u64; 2]; 2]) -> Vec<u8> {
        let n = self.methods;
        let mut out = vec![0u8; self.len()];
        let mut put = |at: usize, bytes: &[u8]| out[at..at + bytes.len()].copy_from_slice(bytes);
        for (b, header) in headers.iter().enumerate() {
            let start = b * self.busy_words() * 8;
            let wait = (0..n).map(|i| base + self.thunk(2 * n + i) as u64);
            for (w, v) in header.iter().copied().chain(wait).enumerate() {
                put(start + 8 * w, &v.to_le_bytes());
            }
        }
        for (k, kind) in [UPGRADE, DOWNGRADE, WAIT].into_iter().enumerate() {
            for i in 0..n {
                let spec = ThunkSpec {
                    dispatch,
                    code: code(kind, i),
                    target: 0,
                    fast_unless: None,
                };
                put(self.thunk(k * n + i), &thunk::encode(&spec));
            }
        }
        out
    }
}
