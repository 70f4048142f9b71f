//! The listener: one accepting thread, and a short-lived thread per connection so a slow or
//! silent client never holds up another. Requests are serialised by the agent's lock.

use super::{dispatch, fork, socket_dir};
use crate::reload::Agent;
use crate::sys::{process, socket, thread};
use hotagent_protocol::{encode_line, ErrorCode, ErrorReply, Response, MAX_LINE_BYTES};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Connections served at once; more are told "busy" and closed.
const MAX_CONNECTIONS: usize = 32;
/// A client has this long to send its request and to take the reply.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT_STACK: usize = 128 * 1024;
const CONNECTION_STACK: usize = 1024 * 1024;

static AGENT: OnceLock<Mutex<Agent>> = OnceLock::new();
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// The listening socket's descriptor, so a forked child can close its parent's.
static LISTENER_FD: AtomicI32 = AtomicI32::new(-1);
/// (pid, path) of the socket this process created, removed at exit.
static SOCKET: Mutex<Option<(u32, PathBuf)>> = Mutex::new(None);

pub(super) fn agent() -> &'static Mutex<Agent> {
    AGENT.get_or_init(|| Mutex::new(Agent::new()))
}

/// Starts the agent in this process: called from the constructor, and in a forked child.
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
    if let Err(e) = socket_dir::prepare(&dir, process::euid()) {
        tracing::warn!("hotagent disabled: {e}");
        return;
    }
    let path = hotagent_protocol::socket_path(&dir, process::pid());
    // A socket file with our pid is left over from a dead process that had the same pid.
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(
                "hotagent disabled: cannot listen on {}: {e}",
                path.display()
            );
            return;
        }
    };
    LISTENER_FD.store(listener.as_raw_fd(), Ordering::SeqCst);
    *SOCKET.lock().unwrap_or_else(|p| p.into_inner()) = Some((process::pid(), path.clone()));
    process::at_exit(remove_socket);
    if let Err(e) = thread::spawn_quiet("hotagent", ACCEPT_STACK, move || accept_loop(listener)) {
        tracing::warn!("hotagent disabled: cannot start its thread: {e}");
        let _ = std::fs::remove_file(&path);
        return;
    }
    tracing::info!(socket = %path.display(), "hotagent listening");
}

extern "C" fn remove_socket() {
    let _ = std::panic::catch_unwind(|| {
        let guard = SOCKET.lock().unwrap_or_else(|p| p.into_inner());
        // A forked child inherits this handler; only the creator removes its socket.
        if let Some((pid, path)) = guard.as_ref() {
            if *pid == process::pid() {
                let _ = std::fs::remove_file(path);
            }
        }
    });
}

/// Forgets the parent's listener in a forked child (the parent keeps serving on it).
pub(super) fn forget_parent_listener() {
    let fd = LISTENER_FD.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        socket::close_fd(fd);
    }
    ACTIVE.store(0, Ordering::SeqCst);
}

fn accept_loop(listener: UnixListener) {
    // Never closed by us: when this loop stops, the descriptor number may already belong to the
    // program, and closing it would close the program's file.
    let listener = std::mem::ManuallyDrop::new(listener);
    let my_pid = process::pid();
    let fd = listener.as_raw_fd();
    let ours = socket::fd_identity(fd);
    loop {
        // After fork the child closes this descriptor; a parent-side thread never runs there.
        if process::pid() != my_pid {
            return;
        }
        // A program that closed our descriptor may have reused its number for a socket of its
        // own: accepting on it would steal its clients.
        if socket::fd_identity(fd) != ours {
            tracing::warn!("hotagent stopped listening: the program closed or replaced its socket");
            return;
        }
        let conn = listener.accept().map(|(s, _)| s);
        let stream = match conn {
            Ok(s) => s,
            Err(e) => match accept_failure(&e) {
                Failure::Retry => continue,
                Failure::Backoff => {
                    // Out of descriptors or memory: waiting beats spinning on the same error.
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Failure::Stop => {
                    tracing::warn!("hotagent stopped listening: {e} (the program closed or replaced its socket)");
                    return;
                }
            },
        };
        if ACTIVE.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
            reply_busy(stream);
            continue;
        }
        let spawned = thread::spawn_quiet("hotagent-conn", CONNECTION_STACK, move || {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(stream)));
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

enum Failure {
    Retry,
    Backoff,
    Stop,
}

/// A daemon that closes every descriptor it did not open takes our listener with it: accept then
/// fails the same way forever, and must stop rather than spin.
fn accept_failure(e: &std::io::Error) -> Failure {
    match e.raw_os_error() {
        Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO) => Failure::Retry,
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => Failure::Backoff,
        _ => Failure::Stop,
    }
}

fn reply_busy(mut stream: UnixStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let busy = Response::Error(ErrorReply {
        code: ErrorCode::Busy,
        message: "the agent is serving too many clients; try again".into(),
    });
    let _ = stream.write_all(&encode_line(&busy));
}

fn serve(mut stream: UnixStream) {
    let me = process::euid();
    match socket::peer_uid(&stream) {
        Ok(uid) if uid == me || uid == 0 => {}
        Ok(uid) => {
            // Not a warning: anyone could fill the target's stderr by knocking.
            tracing::info!(uid, "refused a client with another uid");
            return;
        }
        Err(e) => {
            tracing::warn!("cannot identify a client: {e}");
            return;
        }
    }
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let line = match read_line(&mut stream) {
        Ok(Some(line)) => line,
        // The client went away or sent nothing: nobody to answer.
        Ok(None) | Err(_) => return,
    };
    let response = match line {
        Line::TooLong(n) => Response::Error(ErrorReply {
            code: ErrorCode::BadRequest,
            message: format!("request longer than {MAX_LINE_BYTES} bytes ({n} read); refused"),
        }),
        Line::Complete(bytes) => dispatch::handle_line(agent(), &bytes),
    };
    // `write` sends with MSG_NOSIGNAL: a client that left gives EPIPE here, not SIGPIPE.
    let _ = stream.write_all(&encode_line(&response));
}

enum Line {
    Complete(Vec<u8>),
    TooLong(usize),
}

/// Reads up to the first newline (or end of stream), refusing to buffer more than the limit.
fn read_line(stream: &mut UnixStream) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            // The stop signal (`sys::stop`) interrupts this thread's read like any other's: a
            // read with a timeout is not restarted by SA_RESTART.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok((!buf.is_empty()).then_some(Line::Complete(buf)));
        }
        if let Some(pos) = chunk[..n].iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&chunk[..pos]);
            return Ok(Some(if buf.len() > MAX_LINE_BYTES {
                Line::TooLong(buf.len())
            } else {
                Line::Complete(buf)
            }));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_LINE_BYTES {
            return Ok(Some(Line::TooLong(buf.len())));
        }
    }
}
