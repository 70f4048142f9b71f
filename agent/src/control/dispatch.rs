//! What each request becomes: an answer the I/O thread gives at once, or a job for the worker.
//! Panics stop here: the target never sees them.

use super::{history, line};
use crate::reload::{Abandonment, Agent, Gate, ReloadError};
use crate::sys::raw;
use hotagent_protocol::{
    decode_request, encode_line, Control, ErrorCode, ErrorReply, Request, Response, StatusReport,
};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, TryLockError};

/// The status as the last reload or rollback left it: what `status` answers while the next one
/// runs.
static SNAPSHOT: Mutex<Option<StatusReport>> = Mutex::new(None);

pub enum Route {
    Answer(Response),
    /// A reload or rollback: the worker runs it.
    Job(Request),
}

pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(ErrorReply {
        code,
        message: message.into(),
    })
}

/// Decodes a request line and answers it, unless it is work for the worker.
pub fn route(agent: &Mutex<Agent>, line: &[u8]) -> Route {
    let req = match decode_request(line) {
        Ok(r) => r,
        Err(e) => return Route::Answer(error(ErrorCode::BadRequest, e.to_string())),
    };
    match req {
        Request::Status(_) => Route::Answer(guarded(|| Response::Status(status(agent)))),
        Request::History(_) => Route::Answer(guarded(|| Response::History(history::report()))),
        Request::Commit(_) => Route::Answer(error(
            ErrorCode::BadRequest,
            "commit is only the answer to a ready reply of a confirmed reload or rollback",
        )),
        // Dry runs too: the probe in them may take seconds.
        Request::Reload(_) | Request::Rollback(_) | Request::Purge(_) => Route::Job(req),
    }
}

/// The live status when no reload runs; otherwise the last snapshot, marked busy. Never waits.
fn status(agent: &Mutex<Agent>) -> StatusReport {
    let live = match agent.try_lock() {
        Ok(a) => Some(a.status()),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner().status()),
        Err(TryLockError::WouldBlock) => None,
    };
    let mut s = match live {
        Some(s) => s,
        None => {
            let snap = SNAPSHOT.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut s = snap.unwrap_or_else(Agent::idle_status);
            s.busy = true;
            s
        }
    };
    history::stamp(&mut s);
    s
}

/// Set while the worker runs a reload, dry run or rollback: the agent's lock is then held for
/// long, unlike the moment a status takes it.
static WORKING: AtomicBool = AtomicBool::new(false);

/// Is a reload, dry run or rollback under way?
pub fn working() -> bool {
    WORKING.load(Ordering::SeqCst)
}

/// Runs a reload, dry run or rollback with the agent's lock held, then leaves a snapshot for
/// `status` to answer from during the next one.
/// `source` is the patch file the client passed with a reload, if it did; `uid` the client's,
/// for the history.
pub fn run(
    agent: &Mutex<Agent>,
    req: &Request,
    source: Option<i32>,
    uid: Option<u32>,
    gate: Gate<'_>,
) -> Response {
    WORKING.store(true, Ordering::SeqCst);
    let resp = run_locked(agent, req, source, uid, gate);
    WORKING.store(false, Ordering::SeqCst);
    resp
}

fn run_locked(
    agent: &Mutex<Agent>,
    req: &Request,
    source: Option<i32>,
    uid: Option<u32>,
    gate: Gate<'_>,
) -> Response {
    // A panic in an earlier request poisoned the lock; the state itself stays consistent
    // (every step that changes it finishes or is undone), so carry on with it.
    let mut agent = agent.lock().unwrap_or_else(|p| p.into_inner());
    // Whatever an earlier request staged is not this one's.
    drop(agent.take_staged_facts());
    let resp = match req {
        Request::Reload(r) => crate::persist::reload(&mut agent, r, source, gate)
            .map(Response::Reload)
            .unwrap_or_else(from_reload),
        Request::Rollback(r) => agent
            .rollback(
                crate::reload::hook_timeout(r.hook_timeout_ms),
                r.reset,
                gate,
            )
            .map(Response::Rollback)
            .unwrap_or_else(from_reload),
        Request::Purge(r) => agent
            .purge(r.generation)
            .map(Response::Purge)
            .unwrap_or_else(|e| error(e.code(), e.to_string())),
        Request::Status(_) | Request::Commit(_) | Request::History(_) => {
            error(ErrorCode::BadRequest, "not a job")
        }
    };
    history::job(&mut agent, req, &resp, uid);
    let snap = agent.status();
    *SNAPSHOT.lock().unwrap_or_else(|p| p.into_inner()) = Some(snap);
    resp
}

/// Ends a probation on the worker, as a job of the agent's own: the generation passed, or a crash
/// reverted it and the rollback is finished here. Leaves a snapshot like any job.
pub fn end_probation(agent: &Mutex<Agent>, what: super::worker::Probation) {
    WORKING.store(true, Ordering::SeqCst);
    let mut a = agent.lock().unwrap_or_else(|p| p.into_inner());
    match what {
        super::worker::Probation::Passed => {
            if let Some(note) = a.end_probation() {
                tracing::info!("{note}");
                history::passed(a.generation(), note);
            }
        }
        super::worker::Probation::Reverted(set) => {
            let done = a.revert_crashed(set);
            match &done {
                Some(Ok(note)) => tracing::info!("{note}"),
                Some(Err(failed)) => tracing::warn!("{failed}"),
                None => {}
            }
            if done.is_some() {
                history::reverted(&a.status());
            }
        }
    }
    let snap = a.status();
    *SNAPSHOT.lock().unwrap_or_else(|p| p.into_inner()) = Some(snap);
    drop(a);
    WORKING.store(false, Ordering::SeqCst);
}

/// Holds the snapshot's lock across a fork (it is only ever held for a copy), so a forked child
/// never inherits it locked.
pub fn snapshot_lock() -> std::sync::MutexGuard<'static, Option<StatusReport>> {
    SNAPSHOT.lock().unwrap_or_else(|p| p.into_inner())
}

fn from_reload(e: ReloadError) -> Response {
    error(e.code(), e.to_string())
}

/// Runs `f`, turning a panic into an error answer.
pub fn guarded(f: impl FnOnce() -> Response) -> Response {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            tracing::error!(what, "request abandoned after an internal fault");
            error(
                ErrorCode::Internal,
                format!("internal fault in the agent, request abandoned: {what}"),
            )
        }
    }
}

/// The point of no return for a request on connection `fd`: refuses when its deadline passed or
/// its client left; with `confirm`, answers `ready` and waits for the client's commit until the
/// deadline, `wait_ms` at most.
pub fn gate(fd: i32, ctl: Control, wait_ms: u64) -> Result<(), ReloadError> {
    let now = raw::monotonic_ms();
    if let Some(d) = ctl.deadline_ms {
        if now >= d {
            return Err(Abandonment::DeadlinePassed { late_ms: now - d }.into());
        }
    }
    if !super::fds::is_ours(fd) {
        return Err(Abandonment::ConnectionClosed.into());
    }
    if line::hung_up(fd) {
        return Err(Abandonment::ClientLeft.into());
    }
    if !ctl.confirm {
        return Ok(());
    }
    // A client chooses its deadline, but not how long the agent is held: the worker (and the
    // lock every reload and rollback needs) waits for a commit at most `wait_ms`.
    let until = ctl
        .deadline_ms
        .map_or(now + wait_ms, |d| d.min(now + wait_ms));
    if !line::send_all(fd, &encode_line(&Response::Ready), until) {
        return Err(Abandonment::ReadyNotTaken.into());
    }
    match line::read_line(fd, until).map(|l| decode_request(&l)) {
        // A commit sent in time but read late (the target was stopped or starved meanwhile)
        // must not start a change past the deadline.
        Some(Ok(Request::Commit(_))) => match ctl.deadline_ms.map(|d| (d, raw::monotonic_ms())) {
            Some((d, now)) if now >= d => Err(Abandonment::CommitLate { late_ms: now - d }.into()),
            _ => Ok(()),
        },
        Some(_) => Err(Abandonment::NotCommit.into()),
        None => Err(Abandonment::NoCommit {
            wait_s: wait_ms / 1000,
        }
        .into()),
    }
}
