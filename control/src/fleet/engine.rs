//! Running one verb over many processes: a bounded number at a time, canaries first, a
//! failure budget, and an undo for all-or-nothing.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use hotagent_protocol::{ErrorCode, ReloadRequest, StatusReport};
use indicatif::{ProgressBar, ProgressDrawTarget};

use super::output::{agent_code, Document, Outcome, Row};
use super::select::Member;
use crate::cli::{Global, Rollout, Select};
use crate::client::OnReport;
use crate::{reload as reload_verb, rollback as rollback_verb, status as status_verb};

/// How often the canaries are asked for their status while they bake.
const BAKE_POLL: Duration = Duration::from_millis(50);
/// How long past its probation a canary may take to report it passed or reverted.
const PROBATION_SLACK: Duration = Duration::from_secs(5);

/// `hotctl reload` of several processes.
pub fn reload(
    many: &[Member],
    global: &Global,
    select: &Select,
    rollout: &Rollout,
    probation: Option<Duration>,
    request: ReloadRequest,
    out: &mut dyn Write,
) -> Result<()> {
    let bar = progress(global, many.len());
    let work = |m: &Member, told: OnReport<'_>| match reload_verb::exchange_telling(
        &m.target,
        global,
        request.clone(),
        Some(told),
    ) {
        Ok(report) => {
            let outcome = match report.dry_run || report.deferred || report.unchanged {
                true => Outcome::Ok,
                false => Outcome::Switched,
            };
            Row::done(m, outcome, report.generation, &report)
        }
        Err(err) if agent_code(&err) == Some(ErrorCode::ModuleNotFound) => {
            Row::error(m, Outcome::Skipped, &err)
        }
        Err(err) => Row::error(m, Outcome::Failed, &err),
    };
    let limit = match (rollout.all_or_nothing, rollout.max_fail) {
        (true, _) => Some(0),
        (false, Some(max)) => Some(max.limit(many.len())),
        (false, None) => None,
    };
    let failed = AtomicUsize::new(0);
    let split = rollout.canary.map_or(0, |n| (n as usize).min(many.len()));
    let (canaries, rest) = many.split_at(split);

    let mut rows = run(canaries, select.parallel, limit, &failed, &bar, &work);
    for row in rows.iter_mut().flatten() {
        row.canary = true;
    }
    let mut stopped = None;
    if !canaries.is_empty() {
        let wait = rollout.bake.unwrap_or_default();
        let probation = probation.filter(|p| !p.is_zero() && !request.dry_run);
        bake(canaries, &mut rows, global, wait, probation);
        failed.store(count(&rows, Outcome::Failed), Ordering::SeqCst);
        if failed.load(Ordering::SeqCst) > 0 {
            stopped = Some("a canary failed".to_string());
        }
    }
    if stopped.is_none() {
        rows.extend(run(rest, select.parallel, limit, &failed, &bar, &work));
    } else {
        rows.extend(rest.iter().map(|_| None));
    }
    bar.finish_and_clear();
    let tried = rows.iter().filter(|r| r.is_some()).count();
    if stopped.is_none() && tried < many.len() {
        stopped = Some(format!("more than {} failed", limit.unwrap_or(0)));
    }
    let mut rows = not_attempted(many, rows);
    if rollout.all_or_nothing && rows.iter().any(|r| r.outcome == Outcome::Failed) {
        undo(many, &mut rows, global, select.parallel);
    }
    ask_generations(many, &mut rows, global);
    Document::new("reload", rows, stopped).finish(global.json, out)
}

/// `hotctl rollback` of several processes.
pub fn rollback(
    many: &[Member],
    global: &Global,
    select: &Select,
    out: &mut dyn Write,
) -> Result<()> {
    let bar = progress(global, many.len());
    let work = |m: &Member, told: OnReport<'_>| match rollback_verb::exchange_telling(
        &m.target,
        global,
        false,
        Some(told),
    ) {
        Ok(report) => Row::done(m, Outcome::RolledBack, report.generation, &report),
        Err(err) if agent_code(&err) == Some(ErrorCode::NothingToRollBack) => {
            Row::error(m, Outcome::Skipped, &err)
        }
        Err(err) => Row::error(m, Outcome::Failed, &err),
    };
    let rows = run(
        many,
        select.parallel,
        None,
        &AtomicUsize::new(0),
        &bar,
        &work,
    );
    bar.finish_and_clear();
    let mut rows = not_attempted(many, rows);
    ask_generations(many, &mut rows, global);
    Document::new("rollback", rows, None).finish(global.json, out)
}

/// `hotctl status` of several processes.
pub fn status(
    many: &[Member],
    global: &Global,
    select: &Select,
    out: &mut dyn Write,
) -> Result<()> {
    let bar = progress(global, many.len());
    let work = |m: &Member, _: OnReport<'_>| asked(m, status_verb::exchange(&m.target, global));
    let rows = run(
        many,
        select.parallel,
        None,
        &AtomicUsize::new(0),
        &bar,
        &work,
    );
    bar.finish_and_clear();
    Document::new("status", not_attempted(many, rows), None).finish(global.json, out)
}

fn asked(m: &Member, answer: Result<StatusReport>) -> Row {
    match answer {
        Ok(report) => Row {
            exe: report.exe.clone(),
            ..Row::done(m, Outcome::Ok, report.generation, &report)
        },
        Err(err) => Row::error(m, Outcome::Failed, &err),
    }
}

/// A bar on a terminal only: never in a pipe, never with --json.
fn progress(global: &Global, n: usize) -> ProgressBar {
    if global.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr())
}

fn count(rows: &[Option<Row>], outcome: Outcome) -> usize {
    rows.iter()
        .flatten()
        .filter(|r| r.outcome == outcome)
        .count()
}

fn not_attempted(many: &[Member], rows: Vec<Option<Row>>) -> Vec<Row> {
    many.iter()
        .zip(rows)
        .map(|(m, row)| row.unwrap_or_else(|| Row::new(m, Outcome::NotAttempted, m.generation)))
        .collect()
}

/// At most `parallel` requests in flight.
struct Permits {
    free: Mutex<u32>,
    freed: Condvar,
}

impl Permits {
    fn acquire(&self) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
    }

    fn release(&self) {
        *self.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.freed.notify_one();
    }
}

/// A place taken from [`Permits`], given back once: when the change is reported (the settle
/// watch that follows is a wait, not work), or when the request is over.
struct Permit<'a> {
    permits: &'a Permits,
    given_back: AtomicBool,
}

impl Permit<'_> {
    fn give_back(&self) {
        if !self.given_back.swap(true, Ordering::SeqCst) {
            self.permits.release();
        }
    }
}

/// Runs `work` on `members` in their order, at most `parallel` at a time, and starts none once
/// more than `limit` have failed (counted in `failed`). A member never started has no row.
fn run<W>(
    members: &[Member],
    parallel: u32,
    limit: Option<usize>,
    failed: &AtomicUsize,
    bar: &ProgressBar,
    work: &W,
) -> Vec<Option<Row>>
where
    W: Fn(&Member, OnReport<'_>) -> Row + Sync,
{
    let rows: Mutex<Vec<Option<Row>>> = Mutex::new(vec![None; members.len()]);
    let permits = Permits {
        free: Mutex::new(parallel.max(1)),
        freed: Condvar::new(),
    };
    thread::scope(|scope| {
        for (i, m) in members.iter().enumerate() {
            permits.acquire();
            if limit.is_some_and(|l| failed.load(Ordering::SeqCst) > l) {
                permits.release();
                break;
            }
            let (permits, rows) = (&permits, &rows);
            scope.spawn(move || {
                let permit = Permit {
                    permits,
                    given_back: AtomicBool::new(false),
                };
                let told = || permit.give_back();
                let row = work(m, OnReport(&told));
                // Counted before the place is given back, so that the next start sees it.
                if row.outcome == Outcome::Failed {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                rows.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(row);
                bar.inc(1);
                permit.give_back();
            });
        }
    });
    rows.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Lets the switched canaries run for `wait`, and through their probation if the reload has
/// one, watching them: one that dies, stops answering or is reverted by its probation fails.
fn bake(
    canaries: &[Member],
    rows: &mut [Option<Row>],
    global: &Global,
    wait: Duration,
    probation: Option<Duration>,
) {
    let start = Instant::now();
    let give_up = start + probation.unwrap_or_default() + wait + PROBATION_SLACK;
    let mut watched: Vec<usize> = (0..canaries.len())
        .filter(|&i| {
            rows[i]
                .as_ref()
                .is_some_and(|r| r.outcome == Outcome::Switched)
        })
        .collect();
    loop {
        let baked = start.elapsed() >= wait;
        watched.retain(|&i| {
            let Some(row) = rows[i].as_mut() else {
                return false;
            };
            let generation = row.generation.unwrap_or(0);
            let m = &canaries[i];
            let verdict = match status_verb::exchange(&m.target, global) {
                Err(err) => Some(format!("lost during the bake: {}", crate::one_line(&format!("{err:#}")))),
                Ok(s) => match s.reverted.iter().find(|r| r.generation == generation) {
                    Some(r) => Some(format!(
                        "generation {generation} crashed on probation ({} in {}) and was rolled back to generation {}",
                        r.signal_name,
                        r.function.as_deref().unwrap_or("its code"),
                        r.back_to
                    )),
                    None => {
                        let pending = s
                            .generations
                            .iter()
                            .any(|g| g.generation == generation && g.probation.is_some());
                        if !pending && baked {
                            return false;
                        }
                        if Instant::now() > give_up {
                            Some(format!("generation {generation} was still on probation after the bake"))
                        } else {
                            None
                        }
                    }
                },
            };
            match verdict {
                Some(why) => {
                    let canary = Row {
                        canary: true,
                        ..Row::failed(m, why, 4)
                    };
                    *row = canary;
                    false
                }
                None => true,
            }
        });
        if watched.is_empty() && baked {
            return;
        }
        thread::sleep(
            BAKE_POLL.min(
                wait.saturating_sub(start.elapsed())
                    .max(Duration::from_millis(5)),
            ),
        );
    }
}

/// --all-or-nothing after a failure: every switched process is rolled back.
fn undo(many: &[Member], rows: &mut [Row], global: &Global, parallel: u32) {
    let switched: Vec<Member> = many
        .iter()
        .zip(rows.iter())
        .filter(|(_, r)| r.outcome == Outcome::Switched)
        .map(|(m, _)| m.clone())
        .collect();
    let work = |m: &Member, told: OnReport<'_>| match rollback_verb::exchange_telling(
        &m.target,
        global,
        false,
        Some(told),
    ) {
        Ok(report) => Row::done(m, Outcome::RolledBack, report.generation, &report),
        Err(err) => Row::error(m, Outcome::Failed, &err),
    };
    let hidden = ProgressBar::hidden();
    let undone = run(
        &switched,
        parallel,
        None,
        &AtomicUsize::new(0),
        &hidden,
        &work,
    );
    for (m, undone) in switched.iter().zip(undone.into_iter().flatten()) {
        let Some(row) = rows.iter_mut().find(|r| r.pid == m.target.pid) else {
            continue;
        };
        let canary = row.canary;
        *row = match undone.outcome {
            Outcome::RolledBack => undone,
            _ => {
                let why = undone.error.map(|e| e.message).unwrap_or_default();
                Row {
                    generation: row.generation,
                    ..Row::failed(
                        m,
                        format!("switched, then the rollback failed: {why}"),
                        undone.exit,
                    )
                }
            }
        };
        row.canary = canary;
    }
}

/// Where the processes without a fresh report ended: a failure may have left a process
/// anywhere (or dead), so it is asked; the others keep what the selection saw.
fn ask_generations(many: &[Member], rows: &mut [Row], global: &Global) {
    thread::scope(|scope| {
        for (m, row) in many.iter().zip(rows.iter_mut()) {
            if row.outcome != Outcome::Failed {
                row.generation = row.generation.or(m.generation);
                if row.generation.is_some() {
                    continue;
                }
            }
            scope.spawn(move || {
                row.generation = status_verb::exchange(&m.target, global)
                    .ok()
                    .map(|s| s.generation);
            });
        }
    });
}
