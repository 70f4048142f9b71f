//! Across `fork`: the child gets its own agent, with the state it inherited.
//!
//! The prepare handler never waits for a reload: a fork the program makes while one runs (whose
//! patch constructor may spin for seconds) must not be held up by us. It takes the agent's lock
//! only if no reload or rollback holds it (a status holds it for a moment). A child forked in the middle of a reload inherits a half-made change and a
//! lock no thread of its own will release, so its agent stays off (one line at info level); any other
//! child closes the parent's descriptors and starts its own agent, named by its own pid.

use super::{dispatch, server};
use crate::reload::Agent;
use crate::shadow::{self, Frozen};
use hotagent_protocol::StatusReport;
use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::sync::{MutexGuard, Once, TryLockError};
use std::time::{Duration, Instant};

type Held = (
    Option<MutexGuard<'static, Agent>>,
    Option<MutexGuard<'static, Option<StatusReport>>>,
    Option<Frozen<'static>>,
);

thread_local! {
    /// What `prepare` took, until `parent` or `child` gives it back. `ManuallyDrop`, so that the
    /// thread-local has no destructor: registering one takes the loader's lock
    /// (`__cxa_thread_atexit_impl`), and a fork during a `dlopen` (a patch constructor that
    /// takes seconds) would wait for it.
    static HELD: RefCell<Option<ManuallyDrop<Held>>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// The longest a status computation holds the agent's lock, and so the longest a fork waits.
const STATUS_WAIT: Duration = Duration::from_millis(100);

pub fn install() {
    INSTALL.call_once(|| crate::sys::process::at_fork(prepare, parent, child));
}

/// A probe child (see `sys::probe`) must not start an agent, and the prober holds the lock.
fn probing() -> bool {
    crate::sys::probe::probing()
}

extern "C" fn prepare() {
    if probing() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        let agent = take_agent();
        // Only ever held for a copy, never across a wait: taking it cannot stall the fork.
        let snapshot = dispatch::snapshot_lock();
        // Last: the shadow shards are each held for a lookup only, never while taking the others.
        let shadows = shadow::global().freeze();
        super::history::hold_for_fork();
        HELD.with(|h| {
            *h.borrow_mut() = Some(ManuallyDrop::new((agent, Some(snapshot), Some(shadows))))
        });
    });
}

/// The agent's lock, unless a reload or rollback holds it. A status holds it for a moment only:
/// that is worth a short wait, or the child would start without an agent.
fn take_agent() -> Option<MutexGuard<'static, Agent>> {
    let deadline = Instant::now() + STATUS_WAIT;
    loop {
        match server::agent().try_lock() {
            Ok(g) => return Some(g),
            Err(TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(TryLockError::WouldBlock) if !dispatch::working() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(TryLockError::WouldBlock) => return None,
        }
    }
}

/// Releases what `prepare` took; true if it had the agent's lock.
fn release() -> bool {
    HELD.with(|h| {
        let held = h.borrow_mut().take().map(ManuallyDrop::into_inner);
        let (agent, snapshot, shadows) = held.unwrap_or((None, None, None));
        super::history::release_after_fork();
        drop(shadows);
        drop(snapshot);
        let had = agent.is_some();
        drop(agent);
        had
    })
}

extern "C" fn parent() {
    if probing() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        release();
        // The child may `_exit` without removing its socket: look for leftovers soon.
        server::want_sweep();
    });
}

extern "C" fn child() {
    if probing() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        let had_lock = release();
        server::forget_parent();
        if had_lock {
            server::start();
        } else {
            // Info, not a warning: a pre-forking server forks hundreds of children a second,
            // and each would print the line on the program's stderr.
            tracing::info!(
                "hotagent is off in this process: it was forked while a reload or rollback was under way"
            );
        }
    });
}
