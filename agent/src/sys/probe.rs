//! The probe: load a library in a throwaway copy of this process first.
//!
//! A library can pass every structural check and still crash `dlopen` (a corrupted constructor,
//! a loader bug). Loading it first in a forked child — the same address space, the same modules,
//! the same lookup scope as the real load will have — turns such a crash into a refusal. The
//! child reports through a pipe, so the verdict does not depend on `waitpid`: a target that reaps
//! every child (its SIGCHLD handler) cannot steal it.

use std::cell::Cell;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

thread_local! {
    /// Set while this thread forks a probe child: the agent's own fork handlers, which run on
    /// the forking thread, stand aside (the probe child must not start an agent of its own).
    /// Per thread, so a fork the target makes meanwhile on another thread is not mistaken.
    static PROBING: Cell<bool> = const { Cell::new(false) };
}

/// Is this thread forking a probe child?
pub fn probing() -> bool {
    PROBING.with(Cell::get)
}

/// What the throwaway load said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Loaded,
    /// `dlopen` failed cleanly, with the loader's message.
    Refused(String),
    /// The child died while loading.
    Crashed(String),
    /// The child did not answer in time (it may be stuck on a lock another thread held at fork).
    TimedOut,
}

/// Loads `path` in a forked child, looks up `symbols` in it (name, version) as the real reload
/// will, unloads it, and reports.
pub fn probe_load(
    path: &str,
    symbols: &[(String, Option<String>)],
    timeout: Duration,
) -> std::io::Result<Probe> {
    let c_path =
        CString::new(path).map_err(|_| std::io::Error::other("path contains a NUL byte"))?;
    // Built before the fork: the child allocates nothing of its own.
    let lookups: Vec<(CString, Option<CString>)> = symbols
        .iter()
        .filter_map(|(n, v)| {
            let version = match v {
                Some(v) => Some(CString::new(v.as_str()).ok()?),
                None => None,
            };
            Some((CString::new(n.as_str()).ok()?, version))
        })
        .collect();
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    PROBING.with(|p| p.set(true));
    // SAFETY: fork has no memory preconditions; the child only calls dlopen, write and _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        child(&c_path, &lookups, fds[1]);
    }
    PROBING.with(|p| p.set(false));
    // SAFETY: both descriptors were just created by pipe2 and are owned here alone.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(write_end);
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let answer = read_answer(read_end, timeout);
    let status = reap(pid, answer.is_none());
    Ok(match answer {
        None => Probe::TimedOut,
        Some(msg) if msg == "ok" => Probe::Loaded,
        Some(msg) if msg.starts_with("err:") => Probe::Refused(msg[4..].to_string()),
        Some(_) => {
            Probe::Crashed(status.unwrap_or_else(|| "it died without an answer".to_string()))
        }
    })
}

/// In the child: quiet, no core dump, load, report, leave without running any exit handler of
/// the target.
fn child(path: &CString, lookups: &[(CString, Option<CString>)], mut fd: i32) -> ! {
    // SAFETY: plain syscalls on this (single-threaded) child's own descriptors and limits. A
    // constructor's output must not reach the target's stdout twice, nor may it read the
    // target's stdin; a crash must not write a core file of the whole target.
    unsafe {
        // A target that closed its standard descriptors may have given the pipe one of them.
        if fd <= 2 {
            fd = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
        }
        // The target's own crash handlers (a crash reporter, a runtime's fault handler) must not
        // run for a crash of the probe: it should simply die, and we read how.
        let mut fatal: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut fatal);
        for sig in [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
            libc::SIGABRT,
            libc::SIGTRAP,
            libc::SIGSYS,
        ] {
            libc::signal(sig, libc::SIG_DFL);
            libc::sigaddset(&mut fatal, sig);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &fatal, std::ptr::null_mut());
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    // SAFETY: path is a valid C string; this is the forked child, which exits right after.
    let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    let msg = if h.is_null() {
        // SAFETY: dlerror returns NULL or a valid C string.
        let e = unsafe { libc::dlerror() };
        let text = if e.is_null() {
            String::new()
        } else {
            // SAFETY: non-NULL dlerror results are valid C strings.
            unsafe { std::ffi::CStr::from_ptr(e) }
                .to_string_lossy()
                .into_owned()
        };
        format!("err:{text}")
    } else {
        // The reload's own lookups walk the library's hash tables: a corrupted one must fault
        // here.
        for (name, version) in lookups {
            // SAFETY: h is a live handle; name and version are valid C strings.
            unsafe {
                match version {
                    Some(v) => libc::dlvsym(h, name.as_ptr(), v.as_ptr()),
                    None => libc::dlsym(h, name.as_ptr()),
                };
            }
        }
        // Unloading runs the library's destructors, which the real copy will run at the
        // target's exit: a corrupted one must crash here, not there.
        // SAFETY: h is the handle just returned by dlopen; nothing else uses it in this child.
        unsafe { libc::dlclose(h) };
        "ok".to_string()
    };
    // SAFETY: fd is the pipe's write end; msg is a valid buffer; _exit never returns.
    unsafe {
        libc::write(fd, msg.as_ptr().cast(), msg.len());
        libc::_exit(0)
    }
}

/// The child's whole message, or None if it did not finish in time. An empty message means it
/// died before writing.
fn read_answer(fd: OwnedFd, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut file = std::fs::File::from(fd);
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&file),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: pfd is one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n == 0 {
            return None;
        }
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        let mut buf = [0u8; 4096];
        match file.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Some(String::from_utf8_lossy(&out).into_owned()),
        }
    }
}

/// Collects the child (killing it first if it hung); describes how it died, if we could see.
fn reap(pid: libc::pid_t, kill: bool) -> Option<String> {
    if kill {
        // SAFETY: pid is our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status = 0;
    let r = loop {
        // SAFETY: status is a valid int; the target may have reaped the child already (ECHILD).
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    if r != pid {
        return None;
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: strsignal returns a valid C string for any signal number.
        let name = unsafe { std::ffi::CStr::from_ptr(libc::strsignal(sig)) }
            .to_string_lossy()
            .into_owned();
        Some(format!("killed by signal {sig} ({name})"))
    } else {
        Some(format!(
            "exited with status {} without an answer",
            libc::WEXITSTATUS(status)
        ))
    }
}
