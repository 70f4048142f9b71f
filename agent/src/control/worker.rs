//! The worker: runs reloads and rollbacks one at a time, each with its client's connection.
//!
//! The I/O thread hands over a request with its connection and goes back to serving others. The
//! worker checks, just before starting and again at the point of no return, that the request's
//! deadline has not passed and its client is still there (and, when asked, that the client
//! commits): a request whose client gave up is abandoned, never carried out behind its back.

use super::{dispatch, fds, line, server};
use crate::sys::guard::GuardSet;
use crate::sys::{fatal, raw, thread};
use hotagent_protocol::{encode_line, Control, ErrorCode, Request, Response};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// Requests waiting for the worker; more are told "busy".
const MAX_QUEUED: usize = 16;
/// Without a deadline of its own, a client has this long to take the answer and to commit.
const IO_TIMEOUT_MS: u64 = 10_000;
const WORKER_STACK: usize = 2 * 1024 * 1024;
/// How much longer than the client's settle time the watch stays armed, waiting for its hang-up.
const SETTLE_SLACK_MS: u64 = 1_000;

static QUEUED: AtomicUsize = AtomicUsize::new(0);

enum Job {
    /// A client's reload or rollback, with its connection.
    Client {
        fd: fds::Registered,
        request: Request,
        /// The patch file the client opened and passed along, closed with the job.
        passed: Option<fds::Received>,
    },
    /// The agent's own: a probation is over, or a crash on probation must be rolled back.
    Probation(Probation),
}

/// What the end of a probation asks of the worker.
pub enum Probation {
    /// It ran its time without a crash.
    Passed,
    /// The signal handler reverted this set's generation.
    Reverted(&'static GuardSet),
}

/// The worker's inbox. The worker thread starts with the first job, so an idle target carries
/// one agent thread only; it stops when the I/O thread does.
#[derive(Default)]
pub struct Queue(Option<mpsc::Sender<Job>>);

impl Queue {
    /// Hands `request` and its connection to the worker, or gives back the answer to send when it
    /// cannot take more.
    pub fn submit(
        &mut self,
        fd: fds::Registered,
        request: Request,
        passed: Option<fds::Received>,
    ) -> Result<(), Box<Response>> {
        if QUEUED.fetch_add(1, Ordering::SeqCst) >= MAX_QUEUED {
            QUEUED.fetch_sub(1, Ordering::SeqCst);
            return Err(Box::new(dispatch::error(
                ErrorCode::Busy,
                "the agent has too many reloads and rollbacks waiting; try again",
            )));
        }
        let sent = self.sender().and_then(|tx| {
            tx.send(Job::Client {
                fd,
                request,
                passed,
            })
            .map_err(|_| std::io::Error::other("the agent's worker is gone"))
        });
        sent.map_err(|e| {
            QUEUED.fetch_sub(1, Ordering::SeqCst);
            Box::new(dispatch::error(
                ErrorCode::Internal,
                format!("cannot run the request: {e}"),
            ))
        })
    }

    /// Hands the worker the end of a probation; the job queue's bound does not apply (at most
    /// one of these is ever pending per probation).
    pub fn submit_probation(&mut self, what: Probation) {
        QUEUED.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self
            .sender()
            .and_then(|tx| tx.send(Job::Probation(what)).map_err(std::io::Error::other))
        {
            QUEUED.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("cannot end the probation: the agent's worker is gone ({e})");
        }
    }

    fn sender(&mut self) -> std::io::Result<&mpsc::Sender<Job>> {
        if self.0.is_none() {
            self.0 = Some(spawn()?);
        }
        Ok(self.0.as_ref().expect("set above"))
    }
}

fn spawn() -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    thread::spawn_quiet("hotagent-work", WORKER_STACK, move || {
        for job in rx {
            match job {
                Job::Client {
                    fd,
                    request,
                    passed,
                } => {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        serve(fd.raw(), &request, passed.as_ref())
                    }));
                    fds::close(fd);
                    drop(passed);
                }
                Job::Probation(what) => {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        dispatch::end_probation(server::agent(), what)
                    }));
                }
            }
            QUEUED.fetch_sub(1, Ordering::SeqCst);
        }
    })?;
    Ok(tx)
}

/// In a forked child: the parent's queue is not ours.
pub fn forget_parent() {
    QUEUED.store(0, Ordering::SeqCst);
}

fn serve(fd: i32, request: &Request, passed: Option<&fds::Received>) {
    let ctl = request.control();
    // A request that waited in the queue past its deadline, or whose client left meanwhile, is
    // not worth even the checks.
    let unchanged = Control {
        confirm: false,
        ..ctl
    };
    if let Err(e) = dispatch::gate(fd, unchanged, 0) {
        tracing::info!(why = %e, "request abandoned");
        let resp = dispatch::error(e.code(), e.to_string());
        if fds::is_ours(fd) {
            let _ = line::send_all(fd, &encode_line(&resp), raw::monotonic_ms() + IO_TIMEOUT_MS);
        }
        return;
    }
    let gate = |fd| move || dispatch::gate(fd, ctl, IO_TIMEOUT_MS);
    let source = passed.and_then(fds::Received::fd);
    // Who asked, for the history: the listener checked the same credentials at accept.
    let uid = raw::peer_cred(fd).ok().map(|(_, uid)| uid);
    let changes = !matches!(request, Request::Reload(r) if r.dry_run);
    // A crash from here to the end of the settle time is told to the client on this connection.
    let watched = changes && fatal::arm(fd);
    let resp = match request {
        // A dry run changes nothing: no point of no return.
        Request::Reload(r) if r.dry_run => dispatch::guarded(|| {
            dispatch::run(server::agent(), request, source, uid, &mut || Ok(()))
        }),
        _ => {
            let mut g = gate(fd);
            dispatch::guarded(|| dispatch::run(server::agent(), request, source, uid, &mut g))
        }
    };
    if let Response::Error(e) = &resp {
        if e.code == ErrorCode::Abandoned {
            tracing::info!(why = e.message, "request abandoned");
        }
    }
    // Not the client's deadline: a client that never reads a long answer must not hold the
    // worker past this.
    let until = raw::monotonic_ms() + IO_TIMEOUT_MS;
    // A patch's constructor may have closed the connection and reused its number.
    if !fds::is_ours(fd) {
        fatal::disarm();
        tracing::warn!(
            "the program closed the client's connection during the request: no answer sent"
        );
        return;
    }
    let settle = match (&resp, ctl.settle_ms) {
        (Response::Reload(_) | Response::Rollback(_), Some(ms)) if watched => Some(ms),
        _ => None,
    };
    // Without a settle time the watch ends before the answer: a client that has its answer
    // finds the program's own signal actions back.
    if settle.is_none() {
        fatal::disarm();
    }
    let sent = line::send_all(fd, &encode_line(&resp), until);
    if let Some(ms) = settle {
        if sent {
            // The client watches the process for its settle time, then shuts its side down and
            // waits for our close, which comes after the watch is gone. Bounded whatever it asks.
            let until = raw::monotonic_ms() + ms.saturating_add(SETTLE_SLACK_MS).min(IO_TIMEOUT_MS);
            line::wait_closed(fd, until);
        }
        fatal::disarm();
    }
}
