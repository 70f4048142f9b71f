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
    TimedOut {
        target: Target,
        after: Duration,
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
            ExchangeError::TimedOut { target, after } => write!(
                f,
                "the agent in process {} did not answer within {} s",
                target.pid,
                after.as_secs_f32()
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

impl Target {
    /// Sends `request` and returns the agent's answer, whatever its kind.
    pub fn exchange(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, ExchangeError> {
        let stream = self.connect_checked(timeout)?;
        let set_timeouts = stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)));
        set_timeouts.map_err(|source| ExchangeError::Connect {
            target: self.clone(),
            source,
        })?;

        let sent = (&stream).write_all(&encode_line(request));
        if let Err(source) = sent {
            if is_timeout(&source) {
                return Err(self.timed_out(timeout));
            }
            // An agent that refuses at once (busy) may answer and close before reading the
            // request; its answer is still waiting in our buffer and says more than EPIPE.
            return match self.receive(&stream, timeout) {
                Err(ExchangeError::Closed { .. } | ExchangeError::Receive { .. }) => {
                    Err(ExchangeError::Send {
                        target: self.clone(),
                        source,
                    })
                }
                answered => answered,
            };
        }
        self.receive(&stream, timeout)
    }

    /// Connects to the agent after checking its folder and socket file, and checks who listens
    /// (see `trust`) before anything is sent.
    fn connect_checked(&self, timeout: Duration) -> Result<UnixStream, ExchangeError> {
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
            io::ErrorKind::TimedOut => self.timed_out(timeout),
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

    fn receive(&self, stream: &UnixStream, timeout: Duration) -> Result<Response, ExchangeError> {
        let mut line = Vec::new();
        BufReader::new(stream.take(MAX_REPLY_BYTES))
            .read_until(b'\n', &mut line)
            .map_err(|source| {
                if is_timeout(&source) {
                    self.timed_out(timeout)
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

    fn timed_out(&self, after: Duration) -> ExchangeError {
        ExchangeError::TimedOut {
            target: self.clone(),
            after,
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
        let answer = target.exchange(&Request::Status, QUICK_TIMEOUT).unwrap();
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
            .exchange(&Request::Status, QUICK_TIMEOUT)
            .unwrap_err();
        assert!(matches!(err, ExchangeError::Closed { .. }), "{err}");
    }

    #[test]
    fn silent_agent_times_out() {
        let dir = tempfile::tempdir().unwrap();
        // Listening but never accepting: the connect completes through the backlog, then silence.
        let (_listener, target) = foreign_listener(dir.path());
        let err = target
            .exchange(&Request::Status, Duration::from_millis(200))
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
            .exchange(&Request::Status, QUICK_TIMEOUT)
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
            .exchange(&Request::Status, QUICK_TIMEOUT)
            .unwrap_err();
        assert!(matches!(err, ExchangeError::BadReply { .. }), "{err}");
    }

    #[test]
    fn process_running_knows_ourselves() {
        assert!(process_running(std::process::id()));
        assert!(!process_running(NO_SUCH_PID));
    }
}
