//! Across `fork`: the child gets its own agent, with the state it inherited.
//!
//! The agent's lock is taken before the fork (so the child never inherits it held mid-reload)
//! and released on both sides after. The child then drops the parent's listener and starts its
//! own thread and socket, named by its own pid.

use super::server;
use crate::reload::Agent;
use std::cell::RefCell;
use std::sync::{MutexGuard, Once};
use std::time::{Duration, Instant};

/// How long the prepare handler waits for a reload in progress before forking without the lock.
const PREPARE_WAIT: Duration = Duration::from_secs(2);

thread_local! {
    static HELD: RefCell<Option<MutexGuard<'static, Agent>>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

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
        let lock = server::agent();
        let deadline = Instant::now() + PREPARE_WAIT;
        loop {
            match lock.try_lock() {
                Ok(g) => {
                    HELD.with(|h| *h.borrow_mut() = Some(g));
                    return;
                }
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    HELD.with(|h| *h.borrow_mut() = Some(p.into_inner()));
                    return;
                }
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(std::sync::TryLockError::WouldBlock) => return,
            }
        }
    });
}

fn release() {
    HELD.with(|h| drop(h.borrow_mut().take()));
}

extern "C" fn parent() {
    if probing() {
        return;
    }
    let _ = std::panic::catch_unwind(release);
}

extern "C" fn child() {
    if probing() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        release();
        server::forget_parent_listener();
        server::start();
    });
}
