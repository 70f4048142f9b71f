//! One exchange with an agent: connect, send one request line, read one answer line.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use hotagent_protocol::{encode_line, ErrorReply, Request, Response};

use crate::trust::{self, Distrust, Folder, Uids};

/// A reload stages, checks and loads a library inside the target, which takes a while for a big one.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// A rollback writes slots and entries; stopping the threads may take a second of retries.
pub const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Everything else is bookkeeping inside the agent.
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(5);

/// Only a guard against an agent that never stops talking: a real status answer is a few kB.
const MAX_REPLY_BYTES: u64 = 16 * 1024 * 1024;

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

impl Target {
    /// Sends `request` and returns the agent's answer, whatever its kind. A request with
    /// `confirm` gets a `ready` answer first: we commit only while its deadline has not passed,
    /// so a timeout before the commit means that nothing changed.
    pub fn exchange(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, ExchangeError> {
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

        let sent = (&stream).write_all(&encode_line(request));
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
                answered => answered,
            };
        }
        let first = self.receive(&stream, timeout, confirm)?;
        if !(confirm && first == Response::Ready) {
            return Ok(first);
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
        self.receive(&stream, timeout, false).map_err(|e| {
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
        })
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
    };
    anyhow::anyhow!("the agent answered a {asked} request with a {kind} report")
}

/// Whether a process with this pid exists (zombies included), to explain a missing or dead socket.
pub fn process_running(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// std offers no connect timeout for Unix sockets, and a blocking connect waits for as long as the
/// listener's backlog is full (a stopped or wedged target). So the connect runs on a helper thread
/// that is simply abandoned on timeout: hotctl exits soon after anyway. The thread owns a share
/// of the folder's descriptor, which its path goes through, so the number cannot be reused
/// under it.
fn connect(folder: Folder, pid: u32, timeout: Duration) -> io::Result<UnixStream> {
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
            deadline_ms: None,
            confirm: false,
            settle_ms: None,
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
