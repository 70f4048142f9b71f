//! The listener and the agent's I/O thread.
//!
//! One thread serves every connection with `ppoll`: it reads requests, answers `status` itself
//! (from the live state, or from the snapshot a running reload left), and hands reloads and
//! rollbacks to the worker (`worker.rs`) together with their connection. It makes every system
//! call raw (`sys::raw`), so no patch of libc can cut the agent's lifeline, and it never waits
//! for a reload: a status answers in milliseconds whatever the worker is doing. Every connection
//! has a deadline for the whole request, not per read.

use super::line::{LineBuf, Progress};
use super::{dispatch, fds, fork, socket_dir, worker};
use crate::reload::Agent;
use crate::sys::fd::{self, Fd};
use crate::sys::{process, raw, socket, thread};
use hotagent_protocol::{encode_line, ErrorCode, ErrorReply, Response, MAX_LINE_BYTES};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// Connections served at once; more are told "busy" and closed.
const MAX_CONNECTIONS: usize = 32;
/// A client has this long from connecting to send its whole request, and as long to take the
/// answer.
const IO_TIMEOUT_MS: u64 = 10_000;
/// Stale sockets of exited children are looked for at most this often.
const SWEEP_EVERY_MS: u64 = 1_000;
const IO_STACK: usize = 256 * 1024;

static AGENT: OnceLock<Mutex<Agent>> = OnceLock::new();
/// (pid, paths) of the sockets this process created (its folder's, the registry's), removed at
/// exit.
static SOCKET: Mutex<Option<(u32, Vec<PathBuf>)>> = Mutex::new(None);
/// The writing end of the I/O thread's wake-up pair: a byte sent there wakes it (a fork
/// happened, a sweep is due).
static WAKE: AtomicI32 = AtomicI32::new(-1);
static SWEEP_WANTED: AtomicBool = AtomicBool::new(false);
/// Set when the constructor is over: the I/O thread then gives back the agent's read-only pages,
/// once, `TRIM_AFTER_MS` later, just before it sleeps in `ppoll` again (see `sys::trim`). Done
/// there, not in the constructor, so the thread's own first steps do not fault them back in;
/// and late, so a short-lived process (a shell's `true`, under /etc/ld.so.preload) never pays
/// for it.
static STARTED: AtomicBool = AtomicBool::new(false);
/// How long after its start the I/O thread gives back the agent's pages: its one wake-up of
/// its own, ever.
const TRIM_AFTER_MS: u64 = 1_000;
/// The effective uid the agent started with: who may talk to it (with root), and whose sockets a
/// sweep removes. A program that drops privileges later does not hand its agent to the new uid.
static OWNER: AtomicU32 = AtomicU32::new(u32::MAX);

pub(crate) fn agent() -> &'static Mutex<Agent> {
    AGENT.get_or_init(|| Mutex::new(Agent::new()))
}

/// Starts the agent in this process: called from the constructor, and in a forked child.
/// `HOTAGENT_SKIP` is looked at by the constructor, before anything else (see `take_skip`); a
/// forked child inherits the environment it left.
pub fn start() {
    let _ = agent();
    fork::install();
    // Before any agent thread exists: they leave this signal unblocked.
    if crate::sys::stop::install().is_none() {
        tracing::warn!(
            "no free real-time signal: function entries will not be rewritten (GOT only)"
        );
    }
    let dir = socket_dir::resolve();
    let pid = process::pid();
    let path = hotagent_protocol::socket_path(&dir, pid);
    let owner = raw::geteuid();
    OWNER.store(owner, Ordering::SeqCst);
    let listener = match socket_dir::listen(&dir, pid, owner) {
        Ok(l) => Fd::from(OwnedFd::from(l)),
        Err(e) => {
            tracing::warn!("hotagent disabled: {e}");
            return;
        }
    };
    let mut listeners = vec![listener];
    let mut paths = vec![path.clone()];
    let mut dirs = vec![dir.clone()];
    if let Some((fd, registry)) = register(&dir, pid, owner) {
        listeners.push(fd);
        paths.push(hotagent_protocol::socket_path(&registry, pid));
        dirs.push(registry);
    }
    let (wake, waker) = match fd::socketpair() {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!("hotagent disabled: no socket pair to wake its thread (errno {e})");
            drop(listeners);
            for path in &paths {
                let _ = std::fs::remove_file(path);
            }
            return;
        }
    };
    let n = listeners.len();
    let mut ours = Vec::with_capacity(n + 2);
    for fd in listeners.into_iter().chain([wake, waker]) {
        match fds::register(fd) {
            Ok(r) => ours.push(r),
            Err(_) => return give_up(&ours, &paths, &"its descriptors cannot be registered"),
        }
    }
    let (listeners, wake, waker) = (
        ours[..n].iter().map(|r| r.raw()).collect(),
        ours[n].raw(),
        ours[n + 1].raw(),
    );
    WAKE.store(waker, Ordering::SeqCst);
    crate::reload::probation::set_wake(waker);
    *SOCKET.lock().unwrap_or_else(|p| p.into_inner()) = Some((pid, paths.clone()));
    process::at_exit(remove_socket);
    let io = IoLoop {
        listeners,
        wake,
        dirs,
        jobs: worker::Queue::default(),
        conns: Vec::new(),
        next_sweep: 0,
        trimmed: false,
        trim_at: raw::monotonic_ms() + TRIM_AFTER_MS,
    };
    if let Err(e) = thread::spawn_quiet("hotagent", IO_STACK, move || io.run()) {
        return give_up(&ours, &paths, &format!("cannot start its threads: {e}"));
    }
    tracing::info!(socket = %path.display(), "hotagent listening");
}

/// The constructor is over. False when no I/O thread runs to give back the agent's pages (the
/// caller does it then). The thread is not woken for it: its first timeout covers it.
pub fn started() -> bool {
    STARTED.store(true, Ordering::SeqCst);
    let fd = WAKE.load(Ordering::SeqCst);
    fd >= 0 && fds::is_ours(fd)
}

/// `HOTAGENT_SKIP` (non-empty, not `0`) keeps the agent off in this process. It is removed from
/// the environment before the program's `main` reads it, so a wrapper script started with it
/// does not pass it on: the program the wrapper runs gets the agent, the shell does not.
///
/// The constructor asks first, so a skipped process pays for loading the library and this
/// lookup alone: no log, no state, no journal (persisted patches are not applied either), no
/// page trimming.
pub fn take_skip() -> bool {
    let skip = std::env::var_os("HOTAGENT_SKIP").is_some_and(|v| !v.is_empty() && v != "0");
    if skip {
        std::env::remove_var("HOTAGENT_SKIP");
        // The log is set up only for whoever asked for it, so the line is not lost to them.
        if std::env::var_os("HOTAGENT_LOG").is_some() {
            crate::log::init();
            tracing::info!("hotagent off in this process: HOTAGENT_SKIP is set (consumed, so the program it starts gets the agent)");
        }
    }
    skip
}

/// Also listens in the per-uid registry folder when the environment chose another folder, so a
/// hotctl without the same variables finds this process. Best effort: a registry folder that
/// fails the checks (another user made it first) costs the registration only, logged.
fn register(dir: &std::path::Path, pid: u32, owner: u32) -> Option<(Fd, PathBuf)> {
    let registry = hotagent_protocol::registry_dir(owner);
    if dir.components().eq(registry.components()) {
        return None;
    }
    match socket_dir::listen(&registry, pid, owner) {
        Ok(l) => Some((Fd::from(OwnedFd::from(l)), registry)),
        Err(e) => {
            tracing::info!("not registered in {}: {e}", registry.display());
            None
        }
    }
}

fn give_up(ours: &[fds::Registered], paths: &[PathBuf], why: &dyn std::fmt::Display) {
    tracing::warn!("hotagent disabled: {why}");
    WAKE.store(-1, Ordering::SeqCst);
    for &fd in ours {
        fds::close(fd);
    }
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

extern "C" fn remove_socket() {
    let _ = std::panic::catch_unwind(|| {
        let guard = SOCKET.lock().unwrap_or_else(|p| p.into_inner());
        // A forked child inherits this handler; only the creator removes its socket.
        if let Some((pid, paths)) = guard.as_ref() {
            if *pid == process::pid() {
                for path in paths {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    });
}

/// Asks the I/O thread to look for sockets of exited processes (called after each fork: their
/// children may `_exit` without removing theirs). Allocates nothing and takes no lock.
pub(super) fn want_sweep() {
    SWEEP_WANTED.store(true, Ordering::Relaxed);
    let fd = WAKE.load(Ordering::Relaxed);
    // The program may have closed our end and reused its number for a file of its own.
    if fd >= 0 && fds::is_ours(fd) {
        let _ = raw::send(fd, &[1]);
    }
}

/// In a forked child: the parent's descriptors are not ours.
pub(super) fn forget_parent() {
    crate::sys::fatal::forget_parent();
    crate::sys::probation::forget_parent();
    fds::close_inherited();
    worker::forget_parent();
    WAKE.store(-1, Ordering::SeqCst);
}

/// One connection the I/O thread reads a request from or writes an answer to.
struct Conn {
    fd: fds::Registered,
    input: LineBuf,
    /// The answer, once there is one, and how much of it is sent.
    output: Option<(Vec<u8>, usize)>,
    deadline: u64,
}

struct IoLoop {
    /// The socket folder's listener, then the registry's if there is one.
    listeners: Vec<i32>,
    wake: i32,
    /// The folder of each listener, in the same order.
    dirs: Vec<PathBuf>,
    jobs: worker::Queue,
    conns: Vec<Conn>,
    next_sweep: u64,
    /// The agent's read-only pages were given back (see `STARTED`).
    trimmed: bool,
    /// When to give them back (monotonic ms).
    trim_at: u64,
}

impl IoLoop {
    fn run(mut self) {
        // Never closed by us: when this loop stops, the descriptor number may already belong to
        // the program, and closing it would close the program's file.
        let ours: Vec<_> = self
            .listeners
            .iter()
            .map(|&l| socket::fd_identity(l))
            .collect();
        let my_pid = raw::getpid();
        loop {
            // A program that closed our descriptors may have reused their numbers for sockets
            // or files of its own: accepting or reading there would steal its data.
            if self
                .listeners
                .iter()
                .map(|&l| socket::fd_identity(l))
                .ne(ours.iter().copied())
                || !fds::is_ours(self.wake)
                || raw::getpid() != my_pid
            {
                tracing::warn!(
                    "hotagent stopped listening: the program closed or replaced its socket"
                );
                return;
            }
            let n = self.listeners.len();
            let mut polled = Vec::with_capacity(n + 1 + self.conns.len());
            polled.extend(self.listeners.iter().map(|&l| pollfd(l, libc::POLLIN)));
            polled.push(pollfd(self.wake, libc::POLLIN));
            for c in &self.conns {
                let events = if c.output.is_some() {
                    libc::POLLOUT
                } else {
                    libc::POLLIN
                };
                polled.push(pollfd(c.fd.raw(), events));
            }
            let now = raw::monotonic_ms();
            if !self.trimmed && now >= self.trim_at {
                if STARTED.load(Ordering::SeqCst) {
                    self.trimmed = true;
                    let released = crate::sys::trim::release_own_pages();
                    tracing::trace!(released, "agent pages given back after start-up");
                } else {
                    // The constructor still runs (persisted patches being applied): later.
                    self.trim_at = now + TRIM_AFTER_MS;
                }
            }
            let timeout = self.next_timeout(now);
            match raw::poll(&mut polled, timeout) {
                Ok(_) | Err(libc::EINTR) => {}
                Err(e) => {
                    tracing::warn!("hotagent stopped listening: poll failed (errno {e})");
                    return;
                }
            }
            if polled[n].revents != 0 {
                raw::drain(self.wake);
            }
            self.sweep_if_due();
            self.end_probation_if_due();
            let ready: Vec<i16> = polled[n + 1..].iter().map(|p| p.revents).collect();
            self.serve_ready(&ready);
            let incoming: Vec<i32> = polled[..n]
                .iter()
                .zip(&self.listeners)
                .filter(|(p, _)| p.revents & libc::POLLIN != 0)
                .map(|(_, &l)| l)
                .collect();
            for listener in incoming {
                if !self.accept_all(listener) {
                    return;
                }
            }
            self.expire();
        }
    }

    fn next_timeout(&self, now: u64) -> Option<u64> {
        let mut until = self.conns.iter().map(|c| c.deadline).min();
        if SWEEP_WANTED.load(Ordering::Relaxed) {
            until = Some(until.map_or(self.next_sweep, |u| u.min(self.next_sweep)));
        }
        if let Some(due) = crate::reload::probation::due_at() {
            until = Some(until.map_or(due, |u| u.min(due)));
        }
        if !self.trimmed {
            until = Some(until.map_or(self.trim_at, |u| u.min(self.trim_at)));
        }
        until.map(|u| u.saturating_sub(now))
    }

    /// Hands the worker a probation that is over: a crash reverted it (the handler woke us), or
    /// its time ran out.
    fn end_probation_if_due(&mut self) {
        if let Some(set) = crate::sys::probation::take_reverted() {
            self.jobs.submit_probation(worker::Probation::Reverted(set));
        }
        if crate::reload::probation::take_due(raw::monotonic_ms()) {
            self.jobs.submit_probation(worker::Probation::Passed);
        }
    }

    fn sweep_if_due(&mut self) {
        let now = raw::monotonic_ms();
        if SWEEP_WANTED.load(Ordering::Relaxed) && now >= self.next_sweep {
            SWEEP_WANTED.store(false, Ordering::Relaxed);
            self.next_sweep = now + SWEEP_EVERY_MS;
            let owner = OWNER.load(Ordering::SeqCst);
            let removed: usize = self
                .dirs
                .iter()
                .map(|dir| socket_dir::sweep_stale(dir, owner))
                .sum();
            if removed > 0 {
                tracing::debug!(removed, "removed sockets of exited processes");
            }
        }
    }

    /// Accepts every waiting client; false when the listener is gone for good.
    fn accept_all(&mut self, listener: i32) -> bool {
        loop {
            let fd = match fd::accept(listener) {
                Ok(fd) => fd,
                Err(libc::EAGAIN) => return true,
                Err(libc::EINTR | libc::ECONNABORTED | libc::EPROTO) => continue,
                // Out of descriptors or memory: the next poll tries again.
                Err(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => return true,
                Err(e) => {
                    tracing::warn!("hotagent stopped listening: accept failed (errno {e}; the program closed or replaced its socket)");
                    return false;
                }
            };
            // A refused connection is closed as `fd` drops.
            if !peer_allowed(fd.raw()) {
                continue;
            }
            if self.conns.len() >= MAX_CONNECTIONS {
                reply_busy(fd.raw());
                continue;
            }
            let fd = match fds::register(fd) {
                Ok(fd) => fd,
                Err(fd) => {
                    reply_busy(fd.raw());
                    continue;
                }
            };
            self.conns.push(Conn {
                fd,
                input: LineBuf::default(),
                output: None,
                deadline: raw::monotonic_ms() + IO_TIMEOUT_MS,
            });
        }
    }

    /// Reads from or writes to every connection poll found ready (`ready` follows `conns`).
    fn serve_ready(&mut self, ready: &[i16]) {
        let mut keep = Vec::with_capacity(self.conns.len());
        let conns = std::mem::take(&mut self.conns);
        for (mut c, &rev) in conns.into_iter().zip(ready) {
            if rev == 0 {
                keep.push(c);
                continue;
            }
            match c.output.take() {
                Some((bytes, sent)) => match raw::send(c.fd.raw(), &bytes[sent..]) {
                    Ok(n) if sent + n == bytes.len() => fds::close(c.fd),
                    Ok(n) => {
                        c.output = Some((bytes, sent + n));
                        keep.push(c);
                    }
                    Err(libc::EAGAIN) => {
                        c.output = Some((bytes, sent));
                        keep.push(c);
                    }
                    Err(_) => fds::close(c.fd),
                },
                None => match c.input.feed(c.fd.raw()) {
                    Progress::Pending => keep.push(c),
                    Progress::Closed => fds::close(c.fd),
                    Progress::TooLong(n) => {
                        answer(&mut c, &too_long(n));
                        keep.push(c);
                    }
                    Progress::Line(line) => match dispatch::route(agent(), &line) {
                        dispatch::Route::Answer(resp) => {
                            answer(&mut c, &resp);
                            keep.push(c);
                        }
                        dispatch::Route::Job(req) => {
                            let passed = c.input.take_passed();
                            if let Err(resp) = self.jobs.submit(c.fd, req, passed) {
                                answer(&mut c, &resp);
                                keep.push(c);
                            }
                            // Otherwise the worker owns the connection now.
                        }
                    },
                },
            }
        }
        self.conns = keep;
    }

    /// Hangs up on clients that ran out of time.
    fn expire(&mut self) {
        let now = raw::monotonic_ms();
        self.conns.retain(|c| {
            let alive = c.deadline > now;
            if !alive {
                tracing::debug!(fd = c.fd.raw(), "hung up on a client that ran out of time");
                fds::close(c.fd);
            }
            alive
        });
    }
}

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Starts sending `resp` (the rest goes out as the socket drains), with a fresh deadline.
fn answer(c: &mut Conn, resp: &Response) {
    c.output = Some((encode_line(resp), 0));
    c.deadline = raw::monotonic_ms() + IO_TIMEOUT_MS;
}

/// Only the user the agent started as, and root, may talk to it.
fn peer_allowed(fd: i32) -> bool {
    let me = OWNER.load(Ordering::SeqCst);
    match raw::peer_cred(fd) {
        Ok((_, uid)) if uid == me || uid == 0 => true,
        Ok((_, uid)) => {
            // Not a warning: anyone could fill the target's stderr by knocking.
            tracing::info!(uid, "refused a client with another uid");
            false
        }
        Err(e) => {
            tracing::warn!("cannot identify a client (errno {e})");
            false
        }
    }
}

fn too_long(n: usize) -> Response {
    Response::Error(ErrorReply {
        code: ErrorCode::BadRequest,
        message: format!("request longer than {MAX_LINE_BYTES} bytes ({n} read); refused"),
    })
}

fn reply_busy(fd: i32) {
    let busy = Response::Error(ErrorReply {
        code: ErrorCode::Busy,
        message: "the agent is serving too many clients; try again".into(),
    });
    // Best effort: the socket is new, so its buffer takes the whole line.
    let _ = raw::send(fd, &encode_line(&busy));
}
