//! Agent threads: started with every signal blocked, so the target's signals are never delivered
//! to them (a target's handler running on our thread could deadlock or misbehave). The one
//! exception is the agent's own stop signal (`sys::stop`): agent threads run library code too
//! (libc's), so they park like any other thread while function entries are rewritten.
//!
//! They also take part in glibc's set*id broadcast as the main thread's twins (`sys::setxid`).

use std::io;

/// Spawns a thread with all signals but the stop signal blocked; the caller's own mask is left as it was.
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
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // The new thread inherits the fully blocked mask.
    let res = std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(stack)
        .spawn(move || {
            let _twin = super::setxid::AgentThread::enter();
            f()
        });
    // SAFETY: restores the mask saved above for the calling thread.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    // glibc installs its set*id handler at the process's first thread creation: from here on.
    super::setxid::chain();
    res
}

fn unsafe_zeroed_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; all-zero is a valid (empty) value on Linux.
    unsafe { std::mem::zeroed() }
}
