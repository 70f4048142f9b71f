//! Facts about this process.

/// This process's id (changes in a forked child).
pub fn pid() -> u32 {
    std::process::id()
}

/// The effective user id: who the socket's peers must be.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The running executable's path.
pub fn exe() -> String {
    std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs `f` at process exit (not in a forked child unless it also exits normally).
pub fn at_exit(f: extern "C" fn()) {
    // SAFETY: f is a plain function with no captured state; atexit only records it.
    unsafe { libc::atexit(f) };
}

/// Registers fork handlers (prepare in the parent before fork, then parent / child after).
pub fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: the handlers are plain functions that catch their own panics.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}
