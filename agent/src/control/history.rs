//! What `hotctl history` shows: every reload, rollback, probation revert and start-up
//! application this agent saw, with its outcome. Kept in memory, the newest [`CAPACITY`]
//! events: a long-running process reloaded in a loop must not grow without bound.
//!
//! Recorded by the worker (with the agent's lock held) once a job has its answer; the size and
//! SHA-256 come from the sealed copy the reload staged, so nothing is read twice.

use crate::reload::{Agent, ReloadError, StagedFacts};
use crate::sys::raw;
use hotagent_protocol::{
    HistoryEvent, HistoryReport, Outcome, ReloadReport, Request, Response, StatusReport,
};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::mem::ManuallyDrop;
use std::sync::{Mutex, MutexGuard};

/// Events kept; older ones are dropped (and counted).
pub const CAPACITY: usize = 1000;

pub struct History {
    events: VecDeque<HistoryEvent>,
    next_seq: u64,
    dropped: u64,
}

static HISTORY: Mutex<History> = Mutex::new(History {
    events: VecDeque::new(),
    next_seq: 1,
    dropped: 0,
});

fn lock() -> MutexGuard<'static, History> {
    HISTORY.lock().unwrap_or_else(|p| p.into_inner())
}

thread_local! {
    /// The lock held across a fork (see `fork.rs`), so a child never inherits it locked.
    /// `ManuallyDrop` for the same reason as fork.rs's: no thread-local destructor.
    static HELD: RefCell<Option<ManuallyDrop<MutexGuard<'static, History>>>> =
        const { RefCell::new(None) };
}

/// Takes the lock before a fork; it is only ever held for a copy or a push.
pub fn hold_for_fork() {
    HELD.with(|h| *h.borrow_mut() = Some(ManuallyDrop::new(lock())));
}

/// Gives back what [`hold_for_fork`] took, in the parent and in the child.
pub fn release_after_fork() {
    HELD.with(|h| drop(h.borrow_mut().take().map(ManuallyDrop::into_inner)));
}

/// A fresh event: the fields that do not apply stay empty.
fn event(outcome: Outcome, current: u32) -> HistoryEvent {
    HistoryEvent {
        seq: 0,
        unix_ms: raw::realtime_ms(),
        outcome,
        generation: None,
        current,
        path: None,
        module: None,
        size: None,
        sha256: None,
        build_id: None,
        uid: None,
        reason: None,
        code: None,
    }
}

fn with_facts(mut e: HistoryEvent, facts: Option<StagedFacts>) -> HistoryEvent {
    if let Some(f) = facts {
        e.size = Some(f.size);
        e.sha256 = Some(f.sha256);
        e.build_id = f.build_id;
    }
    e
}

fn push(mut e: HistoryEvent) {
    let mut h = lock();
    e.seq = h.next_seq;
    h.next_seq += 1;
    if h.events.len() == CAPACITY {
        h.events.pop_front();
        h.dropped += 1;
    }
    h.events.push_back(e);
}

/// The file facts of the generation `number` as it was made (for a rollback or revert of it).
fn made(number: u32) -> Option<HistoryEvent> {
    lock()
        .events
        .iter()
        .rev()
        .find(|e| {
            matches!(e.outcome, Outcome::Switched | Outcome::AppliedAtStartup)
                && e.generation == Some(number)
        })
        .cloned()
}

/// Copies the file of the event that made the generation into `e`.
fn about(mut e: HistoryEvent, number: u32) -> HistoryEvent {
    e.generation = Some(number);
    if let Some(m) = made(number) {
        e.path = m.path;
        e.module = m.module;
        e.size = m.size;
        e.sha256 = m.sha256;
        e.build_id = m.build_id;
    }
    e
}

/// Records a client's reload or rollback (dry runs change nothing and are left out).
pub fn job(agent: &mut Agent, req: &Request, resp: &Response, uid: Option<u32>) {
    let facts = agent.take_staged_facts();
    let current = agent.generation();
    let mut e = match (req, resp) {
        (Request::Reload(r), _) if r.dry_run => return,
        (Request::Reload(_), Response::Reload(rep)) => {
            let mut e = reloaded(rep, Outcome::Switched, current);
            if rep.deferred {
                e.outcome = Outcome::DeferredToNextStart;
                e.generation = None;
                e.reason = Some(format!(
                    "not applied live, recorded for the next start: {}",
                    rep.warnings.join("; ")
                ));
            }
            with_facts(e, facts)
        }
        (Request::Rollback(_), Response::Rollback(rep)) => {
            about(event(Outcome::RolledBack, rep.generation), rep.from)
        }
        (Request::Purge(_), Response::Purge(rep)) => {
            let mut e = about(event(Outcome::Purged, current), rep.generation);
            e.reason = Some(format!("unloaded {}", rep.unloaded.join(", ")));
            e
        }
        (Request::Reload(_) | Request::Rollback(_) | Request::Purge(_), Response::Error(err)) => {
            let mut e = with_facts(event(Outcome::Refused, current), facts);
            if let Request::Reload(r) = req {
                e.path = Some(r.path.clone());
                e.module = r.replace.clone();
            }
            e.reason = Some(err.message.clone());
            e.code = Some(err.code);
            e
        }
        _ => return,
    };
    e.uid = uid;
    push(e);
}

fn reloaded(rep: &ReloadReport, outcome: Outcome, current: u32) -> HistoryEvent {
    let mut e = event(outcome, current);
    e.generation = Some(rep.generation);
    e.path = Some(rep.path.clone());
    e.module = Some(rep.module.clone());
    e
}

/// Records a journal patch applied (or refused) before the program's main.
pub fn startup(agent: &mut Agent, path: &str, result: &Result<ReloadReport, ReloadError>) {
    let facts = agent.take_staged_facts();
    let current = agent.generation();
    let e = match result {
        Ok(rep) => reloaded(rep, Outcome::AppliedAtStartup, current),
        Err(err) => {
            let mut e = event(Outcome::Refused, current);
            e.path = Some(path.to_string());
            e.reason = Some(format!("at start-up: {err}"));
            e.code = Some(err.code());
            e
        }
    };
    push(with_facts(e, facts));
}

/// Records the revert of a generation that crashed on probation (the newest in `status`).
pub fn reverted(status: &StatusReport) {
    let Some(r) = status.reverted.last() else {
        return;
    };
    let mut e = about(event(Outcome::Reverted, r.back_to), r.generation);
    e.reason = Some(format!(
        "{} in {} at {:#x} on probation{}",
        r.signal_name,
        r.function.as_deref().unwrap_or("its code"),
        r.address,
        if r.rerun {
            "; the crashed call was run again on the previous generation"
        } else {
            ""
        }
    ));
    push(e);
}

/// Records a probation that ended without a crash (`generation` is the current one).
pub fn passed(generation: u32, note: String) {
    let mut e = about(event(Outcome::PassedProbation, generation), generation);
    e.reason = Some(note);
    push(e);
}

/// Fills in when each generation became current, as far as the history remembers.
pub fn stamp(status: &mut StatusReport) {
    for g in &mut status.generations {
        g.since_unix_ms = made(g.generation).map(|e| e.unix_ms);
    }
}

pub fn report() -> HistoryReport {
    let h = lock();
    HistoryReport {
        pid: crate::sys::process::pid(),
        capacity: CAPACITY,
        dropped: h.dropped,
        events: h.events.iter().cloned().collect(),
    }
}
