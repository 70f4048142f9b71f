//! The fatal-signal watch: while a reload or rollback runs (and in its settle time), a crash of
//! the process is told to the client before the process dies, with the signal that kills it.
//!
//! Without it, a client only sees its connection close (or, worse, a success report written just
//! before the new code crashed the target). The watch installs handlers for the signals a fault
//! raises (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) in front of whatever was there, and its
//! handler:
//! - sends a pre-formatted `{"kind":"died","signal":N}` line on the request's connection (raw
//!   `sendto`, no allocation, no lock), but only when the previous action kills the process (the
//!   default action, or an ignored fault): a program's own handler may recover;
//! - puts the previous action back, exactly, and then lets the signal take its course: a fault
//!   returns and faults again (now under the previous action), a sent signal is raised again
//!   (pending, since it is blocked while we run) — so the process dies, dumps core, or runs its
//!   own handler exactly as it would have without the agent. As wasmtime's trap handler does,
//!   a program that chained to us after we left is sent on to the previous handler directly.
//!
//! Every call is a raw system call: a patch may have replaced `sigaction`, `send` or `raise`.

use super::raw::{self, KernelSigaction};
use super::saved_action::{SavedAction, FATAL_SIGNALS as SIGNALS, SA_RESTORER};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// glibc's internal signals (SIGCANCEL, SIGSETXID): their handlers carry glibc's restorer.
const GLIBC_SIGNALS: [i32; 2] = [32, 33];

static PREVIOUS: [SavedAction; 5] = [const { SavedAction::new() }; 5];
/// The connection to report on (-1: none), what it named, and the process that armed the watch
/// (a forked child inherits the handlers, not the connection).
static FD: AtomicI32 = AtomicI32::new(-1);
static FD_DEV: AtomicU64 = AtomicU64::new(0);
static FD_INO: AtomicU64 = AtomicU64::new(0);
static PID: AtomicI32 = AtomicI32::new(0);

fn our_handler() -> usize {
    on_fatal as extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) as usize
}

/// Whether `handler` is the watch's own (a handler installed behind it gets put back when the
/// watch leaves, so it must not be installed in front of it again).
pub fn is_watch_handler(handler: usize) -> bool {
    handler == our_handler()
}

/// glibc's signal return trampoline, taken from one of its own handlers: a handler installed
/// with the raw system call needs one (x86_64 has no other way back from a handler).
fn restorer() -> Option<usize> {
    let stop = super::stop::signal();
    stop.into_iter()
        .chain(GLIBC_SIGNALS)
        .filter_map(|sig| raw::rt_sigaction(sig, None).ok())
        .find(|a| a.flags & SA_RESTORER != 0 && a.restorer != 0)
        .map(|a| a.restorer)
}

/// Starts watching for a crash, to be reported on connection `fd`. False when the handlers
/// cannot be installed (the client then learns of a death from the process's end alone).
pub fn arm(fd: i32) -> bool {
    let Some(restorer) = restorer() else {
        return false;
    };
    let Some((dev, ino)) = super::socket::fd_identity(fd) else {
        return false;
    };
    FD_DEV.store(dev, Ordering::SeqCst);
    FD_INO.store(ino, Ordering::SeqCst);
    PID.store(raw::getpid(), Ordering::SeqCst);
    FD.store(fd, Ordering::SeqCst);
    let ours = KernelSigaction {
        handler: our_handler(),
        // SA_ONSTACK: a stack overflow reaches us on the thread's alternate stack, if it has
        // one, as it would reach the program's handler.
        flags: (libc::SA_SIGINFO | libc::SA_ONSTACK) as u64 | SA_RESTORER,
        restorer,
        mask: 0,
    };
    let mut all = true;
    for (i, &sig) in SIGNALS.iter().enumerate() {
        match raw::rt_sigaction(sig, None) {
            Ok(current) if current.handler == ours.handler => {}
            Ok(current) => {
                PREVIOUS[i].store(current);
                match raw::rt_sigaction(sig, Some(&ours)) {
                    // Changed between our two calls: what was really there is the previous one.
                    Ok(was) if was != current && was.handler != ours.handler => {
                        PREVIOUS[i].store(was)
                    }
                    Ok(_) => {}
                    Err(_) => all = false,
                }
            }
            Err(_) => all = false,
        }
    }
    all
}

/// Stops watching: each signal whose handler is still ours gets its previous action back (one
/// the program installed meanwhile stays).
pub fn disarm() {
    FD.store(-1, Ordering::SeqCst);
    for (i, &sig) in SIGNALS.iter().enumerate() {
        put_back(i, sig);
    }
}

/// In a forked child: the parent's connection is not ours, nor its watch.
pub fn forget_parent() {
    disarm();
}

fn put_back(i: usize, sig: i32) -> bool {
    let ours = raw::rt_sigaction(sig, None).is_ok_and(|a| a.handler == our_handler());
    if ours {
        let _ = raw::rt_sigaction(sig, Some(&PREVIOUS[i].load()));
    }
    ours
}

/// `{"kind":"died","signal":N}\n` into `buf`, allocating nothing; the bytes written.
fn died_line(sig: i32, buf: &mut [u8; 48]) -> usize {
    const HEAD: &[u8] = b"{\"kind\":\"died\",\"signal\":";
    buf[..HEAD.len()].copy_from_slice(HEAD);
    let mut n = HEAD.len();
    let mut digits = [0u8; 10];
    let mut k = 0;
    let mut v = sig.unsigned_abs();
    loop {
        digits[k] = b'0' + (v % 10) as u8;
        k += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while k > 0 {
        k -= 1;
        buf[n] = digits[k];
        n += 1;
    }
    buf[n] = b'}';
    buf[n + 1] = b'\n';
    n + 2
}

fn report(sig: i32) {
    let fd = FD.swap(-1, Ordering::SeqCst);
    if fd < 0 || PID.load(Ordering::SeqCst) != raw::getpid() {
        return;
    }
    let same = super::socket::fd_identity(fd).is_some_and(|(dev, ino)| {
        dev == FD_DEV.load(Ordering::SeqCst) && ino == FD_INO.load(Ordering::SeqCst)
    });
    if !same {
        return;
    }
    let mut buf = [0u8; 48];
    let n = died_line(sig, &mut buf);
    let _ = raw::send(fd, &buf[..n]);
}

extern "C" fn on_fatal(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(i) = SIGNALS.iter().position(|&s| s == sig) else {
        return;
    };
    let prev = PREVIOUS[i].load();
    let code = if info.is_null() {
        0
    } else {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler (a program that
        // chains to us passes the one it got).
        unsafe { (*info).si_code }
    };
    // A fault (si_code > 0) faults again when we return; a signal someone sent must be sent again.
    let fault = code > 0;
    let kills = prev.handler == libc::SIG_DFL || (prev.handler == libc::SIG_IGN && fault);
    if kills {
        report(sig);
    }
    if !put_back(i, sig) {
        // Not installed as ours any more, yet called: a program handler chained to us after we
        // left. Go on to the action before us, as the kernel would have.
        if prev.handler <= libc::SIG_IGN {
            let _ = raw::rt_sigaction(sig, Some(&prev));
        } else {
            // SAFETY: `prev` is the action the kernel reported for `sig` before ours, a
            // function here, and `info`/`ctx` are this delivery's.
            unsafe { super::saved_action::call_handler(&prev, sig, info, ctx) };
            return;
        }
    }
    if !fault {
        // Blocked while we run: it stays pending and is taken, under the previous action, as
        // this handler returns.
        let _ = raw::tgkill(raw::getpid(), raw::gettid(), sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_a_died_response() {
        let mut buf = [0u8; 48];
        let n = died_line(11, &mut buf);
        assert_eq!(&buf[..n], b"{\"kind\":\"died\",\"signal\":11}\n");
        let resp: hotagent_protocol::Response = serde_json::from_slice(&buf[..n]).unwrap();
        assert_eq!(
            resp,
            hotagent_protocol::Response::Died(hotagent_protocol::DiedReport { signal: 11 })
        );
        let n = died_line(6, &mut buf);
        assert_eq!(&buf[..n], b"{\"kind\":\"died\",\"signal\":6}\n");
    }
}
