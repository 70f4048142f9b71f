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

/// The path the process was started with, which is what the operator knows it by: Debian's
/// `/usr/bin/redis-server` is a link to `redis-check-rdb`, and the process is redis-server.
/// That is `AT_EXECFN` (the path given to `execve`), else `argv[0]`, made absolute against the
/// working folder at start — provided it names the very file running (`/proc/self/exe`, same
/// inode); otherwise, and for a script run by its interpreter, the executable's real path.
/// Taken once, at the agent's start, before the program can change its folder.
pub fn exe() -> String {
    static STARTED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    STARTED.get_or_init(started_path).clone()
}

/// The running executable's real path (links resolved).
pub fn real_exe() -> String {
    std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn started_path() -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(running) = std::fs::metadata("/proc/self/exe") else {
        return real_exe();
    };
    // Each candidate is looked at only when the one before it fails: this runs in every
    // process's constructor, and the usual case (an absolute AT_EXECFN naming the running
    // file) costs two `stat`s — no `readlink`, no working folder, no /proc/self/cmdline.
    let mut cwd = None;
    let mut named_running = |p: String| -> Option<String> {
        // A bare name was looked up on PATH: no folder to resolve it against.
        if !p.contains('/') {
            return None;
        }
        let path = std::path::Path::new(&p);
        let abs: std::path::PathBuf = if path.is_absolute() {
            path.components().collect()
        } else {
            let dir = cwd.get_or_insert_with(|| std::env::current_dir().ok());
            dir.as_ref()?.join(path).components().collect()
        };
        let m = std::fs::metadata(&abs).ok()?;
        (m.dev() == running.dev() && m.ino() == running.ino())
            .then(|| abs.to_string_lossy().into_owned())
    };
    exec_fn()
        .and_then(&mut named_running)
        .or_else(|| argv0().and_then(&mut named_running))
        .unwrap_or_else(real_exe)
}

fn exec_fn() -> Option<String> {
    // SAFETY: getauxval has no preconditions; AT_EXECFN, when present, is the address of a
    // NUL-terminated string the kernel put on the initial stack, alive for the whole process.
    let p = unsafe { libc::getauxval(libc::AT_EXECFN) } as *const libc::c_char;
    if p.is_null() {
        return None;
    }
    // SAFETY: as above: a valid C string.
    Some(
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn argv0() -> Option<String> {
    let cmdline = std::fs::read("/proc/self/cmdline").ok()?;
    let first = cmdline.split(|&b| b == 0).next()?;
    (!first.is_empty()).then(|| String::from_utf8_lossy(first).into_owned())
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
