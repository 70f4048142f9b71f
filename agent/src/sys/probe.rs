//! The probe: load a library in a throwaway copy of this process first.
//!
//! A library can pass every structural check and still crash `dlopen` (a corrupted constructor,
//! a loader bug). Loading it first in a forked child — the same address space, the same modules,
//! the same lookup scope as the real load will have — turns such a crash into a refusal. The
//! child reports through a pipe, so the verdict does not depend on `waitpid`: a target that reaps
//! every child (its SIGCHLD handler) cannot steal it.
//!
//! A copy can be born with the loader locked. glibc's fork resets the loader's big lock
//! (`dl_load_lock`) in the child but not its module-list lock (`dl_load_write_lock`), which
//! another thread holds while `dlopen` links a module into the list, while `dlclose` unlinks one,
//! and for the whole of a `dl_iterate_phdr` walk (unwinders, profilers). Forked at that instant,
//! the child's `dlopen` waits forever for a thread that does not exist there. So the child first
//! takes both locks once (a `dlopen(NULL)` and an empty walk) and tells the parent with one byte;
//! a copy that cannot is killed and another forked, until the probe's deadline.

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
    /// Loaded, but lookup number `n` (of those asked) found nothing.
    NotFound(usize),
    /// Loaded, but lookup number `n` gave an address the caller's `old` test accepts (the code
    /// being replaced).
    ResolvesBack(usize),
    /// `dlopen` failed cleanly, with the loader's message.
    Refused(String),
    /// The child died while loading.
    Crashed(String),
    /// The child did not finish loading in time (a constructor that blocks?).
    TimedOut,
    /// Every copy forked before the deadline was born with the loader's lock held by another
    /// thread (a `dlopen`, `dlclose` or `dl_iterate_phdr` in progress at each fork).
    LoaderBusy,
    /// Loaded, but one of its hooks refused, with the words of `ProbeHooks::run`.
    HookRefused(String),
    /// The copy died inside the named hook, as described.
    HookCrashed(String, String),
    /// The named hook did not return within `ProbeHooks::each`.
    HookHung(String),
}

/// Runs the hooks in the copy: the library's handle, the `mark` to call with each hook's name.
pub type RunHooks<'a> = dyn Fn(super::dl::Handle, &dyn Fn(&str)) -> Option<String> + 'a;

/// The patch's hooks, run in the copy after the load: `run` gets the library's handle and a
/// `mark` to call with each hook's name before it runs it (so a crash or a hang is pinned on
/// the hook), and returns why a hook refused, if one did. Each hook may take `each`.
pub struct ProbeHooks<'a> {
    pub run: &'a RunHooks<'a>,
    pub each: Duration,
}

/// How long a fresh copy may take to show that the loader's locks are free. Taking them costs
/// microseconds; a copy born with one held never gets it, so this only bounds a retry.
const LOCKS_FREE_WAIT: Duration = Duration::from_millis(300);
/// The byte a copy sends once it holds no loader lock another thread could have left held.
const LOCKS_FREE: u8 = b'L';

/// How one forked copy ended.
enum Attempt {
    Done(Probe),
    /// Born with the loader locked: try again in a new copy.
    LoaderLocked,
}

/// Loads `path` in a forked child, looks up `symbols` in it (name, version) as the real reload
/// will — each must be found, at an address `old` rejects —, unloads it, and reports. A copy
/// born with the loader locked is replaced by a new one until `timeout` has passed.
pub fn probe_load(
    path: &str,
    symbols: &[(String, Option<String>)],
    old: &dyn Fn(u64) -> bool,
    deps: &[String],
    timeout: Duration,
    hooks: Option<&ProbeHooks<'_>>,
) -> std::io::Result<Probe> {
    let c_path =
        CString::new(path).map_err(|_| std::io::Error::other("path contains a NUL byte"))?;
    // Loaded first, as the real load will (see reload/origin.rs).
    let mut c_deps = Vec::with_capacity(deps.len());
    for d in deps {
        c_deps.push(
            CString::new(d.as_str())
                .map_err(|_| std::io::Error::other("path contains a NUL byte"))?,
        );
    }
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
    let deadline = Instant::now() + timeout;
    loop {
        match attempt(&c_path, &c_deps, &lookups, old, deadline, hooks)? {
            Attempt::Done(probe) => return Ok(probe),
            Attempt::LoaderLocked if Instant::now() < deadline => {
                tracing::debug!("probe copy born with the loader locked; forking another");
            }
            Attempt::LoaderLocked => return Ok(Probe::LoaderBusy),
        }
    }
}

/// One forked copy: its verdict, or that it was born with the loader locked.
fn attempt(
    c_path: &CString,
    deps: &[CString],
    lookups: &[(CString, Option<CString>)],
    old: &dyn Fn(u64) -> bool,
    deadline: Instant,
    hooks: Option<&ProbeHooks<'_>>,
) -> std::io::Result<Attempt> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    PROBING.with(|p| p.set(true));
    // SAFETY: fork has no memory preconditions; the child only calls dlopen, write and _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        child(c_path, deps, lookups, old, fds[1], hooks);
    }
    PROBING.with(|p| p.set(false));
    // SAFETY: both descriptors were just created by pipe2 and are owned here alone.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(write_end);
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let locks_by = deadline.min(Instant::now() + LOCKS_FREE_WAIT);
    let each = hooks.map(|h| h.each);
    let answer = read_answer(read_end, pid, locks_by, deadline, each);
    let status = reap(pid, !matches!(answer, Answer::Message(_)));
    let died = || {
        status
            .clone()
            .unwrap_or_else(|| "it died without an answer".to_string())
    };
    Ok(match answer {
        Answer::LoaderLocked => Attempt::LoaderLocked,
        Answer::TimedOut(msg) => Attempt::Done(match last_mark(&msg) {
            Some(hook) => Probe::HookHung(hook),
            None => Probe::TimedOut,
        }),
        Answer::Message(msg) => {
            Attempt::Done(
                verdict(final_line(&msg)).unwrap_or_else(|| match last_mark(&msg) {
                    Some(hook) => Probe::HookCrashed(hook, died()),
                    None => Probe::Crashed(died()),
                }),
            )
        }
    })
}

/// Takes the loader's two locks once, each through a call that needs it, so a copy born with
/// either held by another thread blocks here, before telling the parent anything.
fn take_loader_locks() {
    unsafe extern "C" fn nothing(
        _info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        _data: *mut libc::c_void,
    ) -> libc::c_int {
        1
    }
    // SAFETY: dlopen(NULL) returns the main program's handle and loads nothing; the callback
    // reads nothing and stops the walk at the first module.
    unsafe {
        libc::dlopen(std::ptr::null(), libc::RTLD_LAZY);
        libc::dl_iterate_phdr(Some(nothing), std::ptr::null_mut());
    }
}

/// In the child: quiet, no core dump, load, report, leave without running any exit handler of
/// the target.
fn child(
    path: &CString,
    deps: &[CString],
    lookups: &[(CString, Option<CString>)],
    old: &dyn Fn(u64) -> bool,
    mut fd: i32,
    hooks: Option<&ProbeHooks<'_>>,
) -> ! {
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
    take_loader_locks();
    // SAFETY: fd is the pipe's write end; one byte from a live local.
    unsafe { libc::write(fd, [LOCKS_FREE].as_ptr().cast(), 1) };
    // SAFETY: valid C strings; this is the forked child, which exits right after. A dependency
    // that fails to load shows as the copy's own failure to find it, with the loader's words.
    let h = unsafe {
        for d in deps {
            libc::dlopen(d.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        }
        libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL)
    };
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
        // here. Each must give what the reload needs, or the reload would refuse after loading.
        let mut verdict = None;
        for (i, (name, version)) in lookups.iter().enumerate() {
            // SAFETY: h is a live handle; name and version are valid C strings.
            let at = unsafe {
                match version {
                    Some(v) => libc::dlvsym(h, name.as_ptr(), v.as_ptr()),
                    None => libc::dlsym(h, name.as_ptr()),
                }
            } as u64;
            if verdict.is_none() && at == 0 {
                verdict = Some(format!("sym:{i}"));
            } else if verdict.is_none() && old(at) {
                verdict = Some(format!("back:{i}"));
            }
        }
        // The hooks the real reload will run before its switch, prepare and migrate: a crash or
        // a hang here is one the target was spared.
        if let (None, Some(hooks)) = (&verdict, hooks) {
            let mark = |name: &str| {
                let line = format!("@{name}\n");
                // SAFETY: fd is the pipe's write end; line is a valid buffer.
                unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
            };
            if let Some(why) = (hooks.run)(super::dl::Handle::from_raw(h as usize), &mark) {
                verdict = Some(format!("hook:{why}"));
            }
        }
        // Unloading runs the library's destructors, which the real copy will run at the
        // target's exit: a corrupted one must crash here, not there.
        // SAFETY: h is the handle just returned by dlopen; nothing else uses it in this child.
        unsafe { libc::dlclose(h) };
        verdict.unwrap_or_else(|| "ok".to_string())
    };
    // SAFETY: fd is the pipe's write end; msg is a valid buffer; _exit never returns.
    unsafe {
        libc::write(fd, msg.as_ptr().cast(), msg.len());
        libc::_exit(0)
    }
}

/// A finished copy's answer: `ok`, `err:MESSAGE`, `sym:N` or `back:N`; anything else (nothing,
/// a message cut short) means it died on the way.
fn verdict(msg: &str) -> Option<Probe> {
    let index = |prefix: &str| msg.strip_prefix(prefix)?.parse().ok();
    if msg == "ok" {
        Some(Probe::Loaded)
    } else if let Some(e) = msg.strip_prefix("hook:") {
        Some(Probe::HookRefused(e.to_string()))
    } else if let Some(e) = msg.strip_prefix("err:") {
        Some(Probe::Refused(e.to_string()))
    } else if let Some(i) = index("sym:") {
        Some(Probe::NotFound(i))
    } else {
        index("back:").map(Probe::ResolvesBack)
    }
}

/// What a copy said through the pipe.
enum Answer {
    /// Its whole message after the locks-free byte; empty when it died before writing one.
    Message(String),
    /// No locks-free byte by its deadline: born with the loader locked.
    LoaderLocked,
    /// Locks free, but the load did not finish by the deadline; what it said so far.
    TimedOut(String),
}

/// The hook a copy named last before it stopped answering.
fn last_mark(msg: &str) -> Option<String> {
    msg.lines()
        .rev()
        .find_map(|l| l.strip_prefix('@'))
        .map(str::to_string)
}

/// The verdict: what follows the hooks' marks.
fn final_line(msg: &str) -> &str {
    match msg.rfind('\n') {
        Some(i) if msg.starts_with('@') => &msg[i + 1..],
        _ => msg,
    }
}

/// Reads a copy's answer: the locks-free byte by `locks_by`, the rest by `deadline`.
///
/// The copy's exit ends the answer too, not only the end of the pipe: a constructor may fork a
/// helper that inherits the pipe's write end and outlives the copy (a library that starts its
/// own daemon), and its end of the pipe would keep the copy's answer unfinished for good.
fn read_answer(
    fd: OwnedFd,
    pid: libc::pid_t,
    locks_by: Instant,
    mut deadline: Instant,
    each_hook: Option<Duration>,
) -> Answer {
    let mut marks = 0;
    let mut file = std::fs::File::from(fd);
    let mut out = Vec::new();
    // SAFETY: pidfd_open takes no memory arguments; -1 (an old kernel) is left out of the poll.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    // SAFETY: a pidfd just opened and owned here alone, when there is one.
    let _owned = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    loop {
        let free = out.first() == Some(&LOCKS_FREE);
        let by = if free { deadline } else { locks_by };
        let left = by.saturating_duration_since(Instant::now());
        let mut pfd = [
            libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&file),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: pfd is two valid pollfds.
        let n = unsafe { libc::poll(pfd.as_mut_ptr(), 2, ms) };
        if n == 0 {
            return if free {
                Answer::TimedOut(message(&out))
            } else {
                Answer::LoaderLocked
            };
        }
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Answer::TimedOut(message(&out));
        }
        if pfd[0].revents == 0 {
            // The copy exited and its pipe holds nothing more: what it wrote is all there is.
            return Answer::Message(message(&out));
        }
        let mut buf = [0u8; 4096];
        match file.read(&mut buf) {
            Ok(0) => return Answer::Message(message(&out)),
            Ok(k) => {
                out.extend_from_slice(&buf[..k]);
                // Each hook the copy starts gets its own time, on top of the load's.
                let now = out.iter().filter(|&&b| b == b'@').count();
                if let (true, Some(each)) = (now > marks, each_hook) {
                    deadline = deadline.max(Instant::now() + each);
                }
                marks = now;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Answer::Message(message(&out)),
        }
    }
}

/// The verdict after the locks-free byte ("" if the copy died before it).
fn message(out: &[u8]) -> String {
    match out.split_first() {
        Some((&LOCKS_FREE, rest)) => String::from_utf8_lossy(rest).into_owned(),
        _ => String::new(),
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
