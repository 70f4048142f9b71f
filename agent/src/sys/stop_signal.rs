//! Choosing the stop signal: a real-time signal the program leaves at its default (or the one
//! `HOTAGENT_SIGNAL` names), with the agent's handler installed on it for the life of the process.

use super::raw;
use super::stop_handler::on_signal;
use std::sync::atomic::{AtomicI32, Ordering};

/// The signal in use, 0 when none could be installed.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Installs the handler on a free real-time signal (or `HOTAGENT_SIGNAL`). Returns the signal.
/// In a forked child the inherited handler is ours already and is kept.
pub fn install() -> Option<i32> {
    let requested = match std::env::var("HOTAGENT_SIGNAL") {
        Ok(text) if !text.trim().is_empty() => match requested_signal(&text) {
            Some(sig) => Some(sig),
            None => {
                // Taking SIGTERM or SIGINT would make the program deaf to them.
                tracing::warn!(
                    "HOTAGENT_SIGNAL={text:?} is not a real-time signal ({}..={}): function entries will not be rewritten (GOT only)",
                    libc::SIGRTMIN(),
                    libc::SIGRTMAX()
                );
                return None;
            }
        },
        _ => None,
    };
    let candidates: Vec<i32> = match requested {
        Some(s) => vec![s],
        // From the top: programs that use real-time signals usually count up from SIGRTMIN.
        None => (libc::SIGRTMIN() + 4..=libc::SIGRTMAX()).rev().collect(),
    };
    for sig in candidates {
        match current_handler(sig) {
            Some(h) if h == handler_address() => {
                SIGNAL.store(sig, Ordering::SeqCst);
                return Some(sig);
            }
            Some(h) if h == libc::SIG_DFL && set_handler(sig) => {
                SIGNAL.store(sig, Ordering::SeqCst);
                return Some(sig);
            }
            _ => {}
        }
    }
    None
}

/// A real-time signal's number, or None.
fn requested_signal(text: &str) -> Option<i32> {
    let sig = text.trim().parse::<i32>().ok()?;
    (libc::SIGRTMIN()..=libc::SIGRTMAX())
        .contains(&sig)
        .then_some(sig)
}

/// The signal in use, if any.
pub fn signal() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

pub(super) fn handler_address() -> libc::sighandler_t {
    on_signal as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
        as libc::sighandler_t
}

/// The kernel's view of the handler: libc's `sigaction` may be the very function a patch broke.
pub(super) fn current_handler(sig: i32) -> Option<libc::sighandler_t> {
    raw::signal_handler(sig).ok()
}

fn set_handler(sig: i32) -> bool {
    // SAFETY: the action is fully initialised; the handler is async-signal-safe (atomics and
    // raw futex/gettid system calls only) and lives as long as the process (this library is
    // never unloaded: it is preloaded).
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler_address();
        act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // No other handler may run on a parked thread: it could run code we are rewriting.
        libc::sigfillset(&mut act.sa_mask);
        libc::sigaction(sig, &act, std::ptr::null_mut()) == 0
    }
}
