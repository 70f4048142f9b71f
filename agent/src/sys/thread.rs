//! Agent threads: started with every signal blocked, so the target's signals are never delivered
//! to them (a target's handler running on our thread could deadlock or misbehave). The one
//! exception is the agent's own stop signal (`sys::stop`): agent threads run library code too
//! (libc's), so they park like any other thread while function entries are rewritten.
//!
//! They also take part in glibc's set*id broadcast as the main thread's twins (`sys::setxid`).

use std::io;

/// Spawns a thread with all signals but the stop signal and SIGTRAP blocked; the caller's own mask is left as it was.
pub fn spawn_quiet<F>(name: &str, stack: usize, f: F) -> io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let mut all: libc::sigset_t = unsafe_zeroed_sigset();
    let mut old: libc::sigset_t = unsafe_zeroed_sigset();
    // SAFETY: both sets are valid, initialised sigset_t values owned by this frame.
    unsafe {
        libc::sigfillset(&mut all);
        if let Some(sig) = super::stop::signal() {
            libc::sigdelset(&mut all, sig);
        }
        // An agent thread may run a function while it is switched behind an `int3` (libc's),
        // and a blocked SIGTRAP from it would kill the process (`sys::trap`).
        libc::sigdelset(&mut all, libc::SIGTRAP);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // glibc installs its set*id handler at the process's first thread creation; the new thread
    // must be known as ours before any set*id call can reach it. We register it here as soon
    // as it exists (the caller, often the program's main thread in our constructor, cannot
    // make a set*id call meanwhile), instead of waiting for it to be scheduled and register
    // itself: that wait was most of the agent's start-up time on a busy machine. A program
    // thread's set*id racing a later spawn is the rest.
    let res = std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(stack)
        .spawn(move || {
            let _twin = super::setxid::AgentThread::enter();
            f()
        });
    if let Ok(handle) = &res {
        super::setxid::register(std::os::unix::thread::JoinHandleExt::as_pthread_t(handle));
    }
    // SAFETY: restores the mask saved above for the calling thread.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    super::setxid::chain();
    res
}

fn unsafe_zeroed_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; all-zero is a valid (empty) value on Linux.
    unsafe { std::mem::zeroed() }
}
