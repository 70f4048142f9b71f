//! One exchange with an agent: connect, send one request line, read one answer line.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use hotagent_protocol::{encode_line, ErrorReply, Request, Response};

use crate::death::{Death, Watch};
use crate::passfd;
use crate::trust::{self, Distrust, Folder, Uids};

/// A reload stages, checks and loads a library inside the target, which takes a while for a big one.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// A rollback writes slots and entries; stopping the threads may take a second of retries.
pub const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Everything else is bookkeeping inside the agent.
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(5);

/// Only a guard against an agent that never stops talking: a real status answer is a few kB.
const MAX_REPLY_BYTES: u64 = 16 * 1024 * 1024;
/// How long a process whose agent said it is dying, or whose connection broke, has to be seen
/// gone (a core dump takes a while).
const DYING_WAIT: Duration = Duration::from_secs(2);
const BROKEN_WAIT: Duration = Duration::from_millis(500);
/// After the settle time, how long hotctl waits for the agent to end its watch and close.
const SETTLE_CLOSE_WAIT: Duration = Duration::from_secs(1);
/// After a reported change, how long hotctl watches the process by default before it calls the
/// change a success.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(100);

/// What goes with a request besides its line.
#[derive(Debug, Default)]
pub struct Extras<'a> {
    /// The patch file's descriptor, passed along with the request (`SCM_RIGHTS`).
    pub fd: Option<std::os::fd::BorrowedFd<'a>>,
    /// After a reported change, watch the process this long (zero: not at all).
    pub settle: Duration,
    /// Told when a change is reported, before the settle watch: a caller bounding how many
    /// requests run at once frees the place then, the watch being a wait rather than work.
    pub on_report: Option<OnReport<'a>>,
}

/// See [`Extras::on_report`].
#[derive(Clone, Copy)]
pub struct OnReport<'a>(pub &'a (dyn Fn() + Sync));

impl fmt::Debug for OnReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnReport")
    }
}

/// An agent, known by its socket and the pid in the socket's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pid: u32,
    pub socket: PathBuf,
}

/// The agent answered with an error. Its message is the whole story, so it is shown as is; `main`
/// tells it apart from hotctl's own failures by its type to pick the exit code.
#[derive(Debug)]
pub struct AgentError(pub ErrorReply);

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for AgentError {}

/// Why no answer came back. Each message names the process, because that is what the user passed.
#[derive(Debug)]
pub enum ExchangeError {
    /// The socket file is there but nobody listens on it: the process is gone or lost its agent.
    Stale {
        target: Target,
        running: bool,
    },
    Connect {
        target: Target,
        source: io::Error,
    },
    /// No answer in time. With `nothing_changed`, the request was one the agent only carries out
    /// on our commit, and we never sent it.
    TimedOut {
        target: Target,
        after: Duration,
        nothing_changed: bool,
    },
    /// We committed, then heard nothing: the change may or may not have happened.
    Unknown {
        target: Target,
        after: Duration,
        why: String,
    },
    Send {
        target: Target,
        source: io::Error,
    },
    Receive {
        target: Target,
        source: io::Error,
    },
    Closed {
        target: Target,
    },
    BadReply {
        target: Target,
        source: serde_json::Error,
    },
    /// The folder, the socket file or the listener is not what the target's agent would have
    /// made (see `trust`): nothing was sent.
    Untrusted {
        target: Target,
        why: Distrust,
    },
    /// The process is gone: it died during the request, or within the settle time after the
    /// agent reported its change (`after_switch`).
    Died {
        target: Target,
        verb: &'static str,
        after_switch: Option<Duration>,
        how: Death,
    },
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::Stale {
                target,
                running: true,
            } => write!(
                f,
                "nothing listens on {}: process {} is running but its agent is gone",
                target.socket.display(),
                target.pid
            ),
            ExchangeError::Stale {
                target,
                running: false,
            } => write!(
                f,
                "nothing listens on {}: process {} is not running (stale socket)",
                target.socket.display(),
                target.pid
            ),
            ExchangeError::Connect { target, source } => {
                write!(f, "cannot connect to {}: {source}", target.socket.display())
            }
            ExchangeError::TimedOut {
                target,
                after,
                nothing_changed,
            } => {
                write!(
                    f,
                    "the agent in process {} did not answer within {} s",
                    target.pid,
                    after.as_secs_f32()
                )?;
                if *nothing_changed {
                    f.write_str(
                        "; nothing was changed (the agent drops a request that was not confirmed before its deadline)",
                    )?;
                }
                Ok(())
            }
            ExchangeError::Unknown { target, after, why } => write!(
                f,
                "outcome unknown: the agent in process {} was told to go ahead, then {why} within {} s; the change may or may not have been made: check with `hotctl status --pid {}`",
                target.pid,
                after.as_secs_f32(),
                target.pid
            ),
            ExchangeError::Send { target, source } => {
                write!(
                    f,
                    "cannot send the request to process {}: {source}",
                    target.pid
                )
            }
            ExchangeError::Receive { target, source } => {
                write!(
                    f,
                    "cannot read the answer of process {}: {source}",
                    target.pid
                )
            }
            ExchangeError::Closed { target } => write!(
                f,
                "the agent in process {} closed the connection without answering",
                target.pid
            ),
            ExchangeError::BadReply { target, source } => write!(
                f,
                "the agent in process {} sent an unreadable answer: {source}",
                target.pid
            ),
            ExchangeError::Untrusted { target, why } => {
                write!(f, "{why}; nothing was sent to process {}", target.pid)
            }
            ExchangeError::Died {
                target,
                verb,
                after_switch: None,
                how,
            } => write!(f, "process {} died during the {verb}: {how}", target.pid),
            ExchangeError::Died {
                target,
                verb,
                after_switch: Some(settle),
                how,
            } => write!(
                f,
                "process {} died right after the switch (within {} ms of the agent's {verb} report): {how}",
                target.pid,
                settle.as_millis()
            ),
        }
    }
}

// No `source()`: the messages above already carry the cause, and anyhow's `{:#}` would repeat it.
impl std::error::Error for ExchangeError {}

/// `CLOCK_MONOTONIC` now, in milliseconds: the clock of the deadline the agent checks.
fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// Gives a request that changes the target its deadline, `timeout` from now, and asks the agent
/// to wait for our commit before the change.
pub fn with_deadline(request: Request, timeout: Duration) -> Request {
    let deadline = monotonic_ms().saturating_add(timeout.as_millis() as u64);
    match request {
        Request::Reload(mut r) => {
            r.deadline_ms = Some(deadline);
            r.confirm = !r.dry_run;
            Request::Reload(r)
        }
        Request::Rollback(mut r) => {
            r.deadline_ms = Some(deadline);
            r.confirm = true;
            Request::Rollback(r)
        }
        other => other,
    }
}

/// The hooks' time limit, when the user gave one, on a request that changes the target.
pub fn with_hook_timeout(request: Request, limit: Option<Duration>) -> Request {
    let ms = limit.map(|d| (d.as_millis() as u64).max(1));
    match request {
        Request::Reload(mut r) => {
            r.hook_timeout_ms = ms;
            Request::Reload(r)
        }
        Request::Rollback(mut r) => {
            r.hook_timeout_ms = ms;
            Request::Rollback(r)
        }
        other => other,
    }
}

/// Whether a request changes the target: `settle_ms` goes with it then.
pub fn with_settle(request: Request, settle: Duration) -> Request {
    let ms = (!settle.is_zero()).then_some(settle.as_millis() as u64);
    match request {
        Request::Reload(mut r) if !r.dry_run => {
            r.settle_ms = ms;
            Request::Reload(r)
        }
        Request::Rollback(mut r) => {
            r.settle_ms = ms;
            Request::Rollback(r)
        }
        other => other,
    }
}

fn verb(request: &Request) -> &'static str {
    match request {
        Request::Reload(_) => "reload",
        Request::Rollback(_) => "rollback",
        Request::Status(_) => "status request",
        Request::Commit(_) => "commit",
        Request::History(_) => "history request",
        Request::Purge(_) => "purge",
    }
}

impl Target {
    /// Sends `request` and returns the agent's answer, whatever its kind. A request with
    /// `confirm` gets a `ready` answer first: we commit only while its deadline has not passed,
    /// so a timeout before the commit means that nothing changed.
    pub fn exchange(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, ExchangeError> {
        self.exchange_with(request, timeout, &Extras::default())
    }

    /// [`exchange`](Self::exchange), with a descriptor to pass and a settle time; a process that
    /// dies meanwhile is reported as [`ExchangeError::Died`], never as the answer it gave.
    pub fn exchange_with(
        &self,
        request: &Request,
        timeout: Duration,
        extras: &Extras<'_>,
    ) -> Result<Response, ExchangeError> {
        // Before anything is sent: the pidfd names this very process, whatever happens next.
        let watch = Watch::open(self.pid);
        let result = self.exchange_raw(request, timeout, extras.fd);
        let Some(watch) = watch else {
            return result.map(|(r, _)| r);
        };
        let died = |after_switch, said| ExchangeError::Died {
            target: self.clone(),
            verb: verb(request),
            after_switch,
            how: watch.how(said),
        };
        match result {
            Ok((Response::Died(d), _)) => {
                watch.gone_within(DYING_WAIT);
                Err(died(None, Some(d.signal)))
            }
            Ok((resp, stream)) => {
                let changed = matches!(&resp, Response::Reload(r) if !r.dry_run)
                    || matches!(resp, Response::Rollback(_));
                if let (true, Some(told)) = (changed, extras.on_report) {
                    (told.0)();
                }
                if changed && !extras.settle.is_zero() {
                    if let Some(said) = settle(&stream, &watch, extras.settle) {
                        return Err(died(Some(extras.settle), said));
                    }
                } else if watch.gone_within(Duration::ZERO) {
                    return Err(died(None, None));
                }
                Ok(resp)
            }
            Err(e) => {
                let broken = matches!(
                    e,
                    ExchangeError::Closed { .. }
                        | ExchangeError::Receive { .. }
                        | ExchangeError::BadReply { .. }
                        | ExchangeError::Unknown { .. }
                        | ExchangeError::Send { .. }
                );
                let wait = if broken { BROKEN_WAIT } else { Duration::ZERO };
                if watch.gone_within(wait) {
                    return Err(died(None, None));
                }
                Err(e)
            }
        }
    }

    fn exchange_raw(
        &self,
        request: &Request,
        timeout: Duration,
        fd: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<(Response, UnixStream), ExchangeError> {
        let start = std::time::Instant::now();
        let confirm = request.control().confirm;
        let stream = self.connect_checked(timeout, confirm)?;
        let left = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(1));
        let set_timeouts = stream
            .set_read_timeout(Some(left))
            .and_then(|()| stream.set_write_timeout(Some(left)));
        set_timeouts.map_err(|source| ExchangeError::Connect {
            target: self.clone(),
            source,
        })?;

        let line = encode_line(request);
        let sent = match fd {
            Some(fd) => passfd::send_with_fd(&stream, &line, fd),
            None => (&stream).write_all(&line),
        };
        if let Err(source) = sent {
            if is_timeout(&source) {
                return Err(self.timed_out(timeout, confirm));
            }
            // An agent that refuses at once (busy) may answer and close before reading the
            // request; its answer is still waiting in our buffer and says more than EPIPE.
            return match self.receive(&stream, timeout, confirm) {
                Err(ExchangeError::Closed { .. } | ExchangeError::Receive { .. }) => {
                    Err(ExchangeError::Send {
                        target: self.clone(),
                        source,
                    })
                }
                answered => answered.map(|r| (r, stream)),
            };
        }
        let first = self.receive(&stream, timeout, confirm)?;
        if !(confirm && first == Response::Ready) {
            return Ok((first, stream));
        }
        // The agent is ready to change the target. Past our deadline it will not, and we must
        // not ask it to: then we know for certain that nothing changed.
        if start.elapsed() >= timeout {
            return Err(self.timed_out(timeout, confirm));
        }
        if (&stream)
            .write_all(&encode_line(&Request::commit()))
            .is_err()
        {
            // The agent gave up waiting (its deadline passed): it changes nothing without a commit.
            return Err(self.timed_out(timeout, confirm));
        }
        // Once committed, the change (loading the library, its constructors, writing slots and
        // entries) has no deadline in the agent; we wait as long again for its report.
        let _ = stream.set_read_timeout(Some(timeout));
        let report = self.receive(&stream, timeout, false).map_err(|e| {
            let why = match e {
                ExchangeError::TimedOut { .. } => "did not report".to_string(),
                ExchangeError::Closed { .. } => {
                    "closed the connection without a report".to_string()
                }
                other => format!("failed: {other}"),
            };
            ExchangeError::Unknown {
                target: self.clone(),
                after: timeout,
                why,
            }
        })?;
        Ok((report, stream))
    }

    /// Connects to the agent after checking its folder and socket file, and checks who listens
    /// (see `trust`) before anything is sent.
    fn connect_checked(
        &self,
        timeout: Duration,
        confirm: bool,
    ) -> Result<UnixStream, ExchangeError> {
        let untrusted = |why| ExchangeError::Untrusted {
            target: self.clone(),
            why,
        };
        let stale = || ExchangeError::Stale {
            target: self.clone(),
            running: process_running(self.pid),
        };
        if !Path::new("/proc/self/fd").is_dir() {
            // Without it neither the peer's uids nor the checked folder can be reached.
            return Err(ExchangeError::Connect {
                target: self.clone(),
                source: io::Error::other(
                    "/proc is not mounted; hotctl needs it to check who listens",
                ),
            });
        }
        let dir = self.socket.parent().unwrap_or(Path::new("/"));
        let folder = match Folder::open(dir) {
            Ok(folder) => folder,
            Err(why) if why.is_missing_folder() => return Err(stale()),
            Err(why) => return Err(untrusted(why)),
        };
        let uids = Uids::of(self.pid);
        if folder
            .socket_file(self.pid, uids)
            .map_err(untrusted)?
            .is_none()
        {
            return Err(stale());
        }
        let stream = connect(folder, self.pid, timeout).map_err(|source| match source.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => stale(),
            io::ErrorKind::TimedOut => self.timed_out(timeout, confirm),
            _ => ExchangeError::Connect {
                target: self.clone(),
                source,
            },
        })?;
        let peer = trust::peer_cred(&stream).map_err(|source| {
            untrusted(Distrust::PeerCred {
                path: self.socket.clone(),
                source,
            })
        })?;
        // Read again now that the listener is known: the process may have started meanwhile,
        // and a fresh look narrows the window for a reused pid.
        let uids = Uids::of(self.pid).or(uids);
        trust::check_peer(&self.socket, self.pid, uids, peer).map_err(untrusted)?;
        Ok(stream)
    }

    fn receive(
        &self,
        stream: &UnixStream,
        timeout: Duration,
        confirm: bool,
    ) -> Result<Response, ExchangeError> {
        let mut line = Vec::new();
        BufReader::new(stream.take(MAX_REPLY_BYTES))
            .read_until(b'\n', &mut line)
            .map_err(|source| {
                if is_timeout(&source) {
                    self.timed_out(timeout, confirm)
                } else {
                    ExchangeError::Receive {
                        target: self.clone(),
                        source,
                    }
                }
            })?;
        if line.iter().all(u8::is_ascii_whitespace) {
            return Err(ExchangeError::Closed {
                target: self.clone(),
            });
        }
        serde_json::from_slice(&line).map_err(|source| ExchangeError::BadReply {
            target: self.clone(),
            source,
        })
    }

    fn timed_out(&self, after: Duration, nothing_changed: bool) -> ExchangeError {
        ExchangeError::TimedOut {
            target: self.clone(),
            after,
            nothing_changed,
        }
    }
}

/// The error for an answer of the wrong kind: the agent's own error if it sent one, otherwise a
/// protocol mismatch. `asked` names the request, e.g. "reload".
pub fn unexpected(response: Response, asked: &str) -> anyhow::Error {
    let kind = match response {
        Response::Error(reply) => return AgentError(reply).into(),
        Response::Reload(_) => "reload",
        Response::Rollback(_) => "rollback",
        Response::Status(_) => "status",
        Response::Ready => "ready",
        Response::Died(_) => "died",
        Response::History(_) => "history",
        Response::Purge(_) => "purge",
    };
    anyhow::anyhow!("the agent answered a {asked} request with a {kind} report")
}

/// Watches the process for `settle` after a reported change, and the connection for the agent's
/// `died` line: Some (with the signal the agent named, if it did) when the process is gone.
fn settle(stream: &UnixStream, watch: &Watch, settle: Duration) -> Option<Option<i32>> {
    let until = std::time::Instant::now() + settle;
    let mut open = stream.set_nonblocking(true).is_ok();
    let mut said = Vec::new();
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        let mut polled = Vec::with_capacity(2);
        if open {
            polled.push(libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(stream),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let pidfd = watch.raw_fd();
        if let Some(fd) = pidfd {
            polled.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // Without a pidfd (an old kernel), /proc is looked at every few milliseconds.
        let slice = if pidfd.is_some() {
            left
        } else {
            left.min(Duration::from_millis(5))
        };
        let ms = slice.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: polled holds valid pollfds for its whole length.
        let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
        if n > 0 && open && polled[0].revents != 0 {
            open = read_more(stream, &mut said);
            if let Some(line) = first_line(&said) {
                if let Some(signal) = died(line) {
                    watch.gone_within(DYING_WAIT);
                    return Some(Some(signal));
                }
                said.clear();
            }
        }
        if watch.gone_within(Duration::ZERO) {
            return Some(None);
        }
        if left.is_zero() {
            break;
        }
    }
    // Our side done: the agent ends its watch, then closes. Waiting for that close means the
    // program has its own signal actions back when hotctl returns.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let until = std::time::Instant::now() + SETTLE_CLOSE_WAIT;
    let mut p = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(stream),
        events: libc::POLLIN,
        revents: 0,
    };
    while open {
        let ms = until
            .saturating_duration_since(std::time::Instant::now())
            .as_millis() as i32;
        // SAFETY: p is one valid pollfd.
        if ms <= 0 || unsafe { libc::poll(&mut p, 1, ms) } <= 0 {
            break;
        }
        open = read_more(stream, &mut said);
    }
    if let Some(signal) = first_line(&said).and_then(died) {
        watch.gone_within(DYING_WAIT);
        return Some(Some(signal));
    }
    None
}

/// Reads what the agent sent into `said`; false once the connection is closed or broken.
fn read_more(stream: &UnixStream, said: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 256];
    match (&*stream).read(&mut buf) {
        Ok(0) => false,
        Ok(k) => {
            said.extend_from_slice(&buf[..k]);
            true
        }
        Err(e) => is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted,
    }
}

/// The first complete line of `said`, without its newline.
fn first_line(said: &[u8]) -> Option<&[u8]> {
    said.iter()
        .position(|&b| b == b'\n')
        .map(|end| &said[..end])
}

/// The signal a `died` line names.
fn died(line: &[u8]) -> Option<i32> {
    match serde_json::from_slice(line) {
        Ok(Response::Died(d)) => Some(d.signal),
        _ => None,
    }
}

/// Whether a process with this pid exists (zombies included), to explain a missing or dead socket.
pub fn process_running(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// std offers no connect timeout for Unix sockets, and a blocking connect waits for as long as the
/// listener's backlog is full (a stopped or wedged target). So a connect that cannot complete at
/// once (`quick_connect`) runs on a helper thread that is simply abandoned on timeout: hotctl exits soon after anyway. The thread owns a share
/// of the folder's descriptor, which its path goes through, so the number cannot be reused
/// under it.
fn connect(folder: Folder, pid: u32, timeout: Duration) -> io::Result<UnixStream> {
    if let Some(stream) = crate::quick_connect::try_connect(&folder.via(pid))? {
        return Ok(stream);
    }
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // The receiver is gone only if we already gave up; nothing to do then.
        let _ = tx.send(folder.connect(pid));
    });
    rx.recv_timeout(timeout)
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Socket timeouts surface as EAGAIN, not ETIMEDOUT.
fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fake_agent, foreign_listener, status_report};
    use hotagent_protocol::{socket_path, ErrorCode};
    use std::os::unix::net::UnixListener;

    /// No process has this pid: Linux caps pids far below it.
    const NO_SUCH_PID: u32 = 4_000_000_000;

    #[test]
    fn returns_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let target = fake_agent(dir.path(), |_| {
            Some(Response::Status(status_report(1234, "/bin/x")))
        });
        let answer = target.exchange(&Request::status(), QUICK_TIMEOUT).unwrap();
        assert_eq!(answer, Response::Status(status_report(1234, "/bin/x")));
    }

    #[test]
    fn the_request_arrives_intact() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let target = fake_agent(dir.path(), move |request| {
            tx.send(request).unwrap();
            None
        });
        let request = Request::Reload(hotagent_protocol::ReloadRequest {
            path: "/abs/libfoo.so".into(),
            replace: Some("libfoo.so.1".into()),
            dry_run: true,
            no_probe: false,
            got_only: false,
            fresh_state: false,
            changed_only: false,
            checkpoint: false,
            deadline_ms: None,
            confirm: false,
            settle_ms: None,
            hook_timeout_ms: None,
            probation_ms: None,
            persist: false,
            on_next_start: false,
            force: false,
        });
        let _ = target.exchange(&request, QUICK_TIMEOUT);
        assert_eq!(rx.recv().unwrap(), request);
    }

    #[test]
    fn error_answers_become_agent_errors() {
        let reply = ErrorReply {
            code: ErrorCode::NothingToRollBack,
            message: "nothing to roll back".into(),
        };
        let err = unexpected(Response::Error(reply), "rollback");
        let agent = err.downcast_ref::<AgentError>().expect("an AgentError");
        assert_eq!(agent.0.code, ErrorCode::NothingToRollBack);
        assert_eq!(format!("{err:#}"), "nothing to roll back");
    }

    #[test]
    fn answers_of_the_wrong_kind_are_errors() {
        let err = unexpected(Response::Status(status_report(1, "/bin/x")), "reload");
        assert!(err.downcast_ref::<AgentError>().is_none());
        assert_eq!(
            err.to_string(),
            "the agent answered a reload request with a status report"
        );
    }

    #[test]
    fn closed_without_answer() {
        let dir = tempfile::tempdir().unwrap();
        let target = fake_agent(dir.path(), |_| None);
        let err = target
            .exchange(&Request::status(), QUICK_TIMEOUT)
            .unwrap_err();
        assert!(matches!(err, ExchangeError::Closed { .. }), "{err}");
    }

    #[test]
    fn silent_agent_times_out() {
        let dir = tempfile::tempdir().unwrap();
        // Listening but never accepting: the connect completes through the backlog, then silence.
        let (_listener, target) = foreign_listener(dir.path());
        let err = target
            .exchange(&Request::status(), Duration::from_millis(200))
            .unwrap_err();
        assert!(matches!(err, ExchangeError::TimedOut { .. }), "{err}");
        assert!(
            err.to_string().contains("did not answer within 0.2 s"),
            "{err}"
        );
    }

    #[test]
    fn stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = socket_path(dir.path(), NO_SUCH_PID);
        drop(UnixListener::bind(&socket).unwrap());
        assert!(
            socket.exists(),
            "std leaves the socket file behind, like a crashed agent"
        );
        let target = Target {
            pid: NO_SUCH_PID,
            socket,
        };
        let err = target
            .exchange(&Request::status(), QUICK_TIMEOUT)
            .unwrap_err();
        assert!(
            matches!(err, ExchangeError::Stale { running: false, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("is not running"), "{err}");
    }

    #[test]
    fn garbage_answer() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, target) = foreign_listener(dir.path());
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(b"{\"kind\":\"explode\"}\n").unwrap();
        });
        let err = target
            .exchange(&Request::status(), QUICK_TIMEOUT)
            .unwrap_err();
        assert!(matches!(err, ExchangeError::BadReply { .. }), "{err}");
    }

    #[test]
    fn process_running_knows_ourselves() {
        assert!(process_running(std::process::id()));
        assert!(!process_running(NO_SUCH_PID));
    }
}
