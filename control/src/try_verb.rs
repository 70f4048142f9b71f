//! `hotctl try CANDIDATE... -- CHECK`: each candidate in turn is reloaded, judged by CHECK, and
//! rolled back (or, with `--keep`, the first that passes stays).

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use hotagent_protocol::{Request, Response};
use serde::Serialize;

use crate::check::{self, Outcome};
use crate::cli::{Global, ReloadArgs, TryArgs};
use crate::client::{self, AgentError, Target, QUICK_TIMEOUT};
use crate::{discover, reload, render, rollback};

/// What became of one candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The absolute path sent to the agent.
    pub path: String,
    pub passed: bool,
    /// Why it failed; None when it passed.
    pub reason: Option<String>,
    /// The check's exit status, when it ran and exited by itself.
    pub check_exit: Option<i32>,
    /// How long the check ran; None when the reload was refused.
    pub check_ms: Option<u64>,
    /// The generation the candidate was checked at; None when the reload was refused.
    pub generation: Option<u32>,
}

/// The `--json` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TryReport {
    pub candidates: Vec<Verdict>,
    /// The candidate left in place (`--keep`).
    pub kept: Option<String>,
    /// The target's generation when hotctl was done.
    pub generation: u32,
}

/// Why `try` ends with exit status 1 (anything else keeps the exit status of the verb it came
/// from: a connection problem is 2, a target that died is 4).
#[derive(Debug, thiserror::Error)]
pub enum TryError {
    #[error("{0}")]
    Verdict(String),
    #[error("rolling back {path} failed, so no further candidate was tried; the target is at generation {generation}: {message}")]
    RollbackFailed {
        path: String,
        generation: u32,
        message: String,
    },
}

pub fn run(dir: &Path, global: &Global, args: &TryArgs, out: &mut dyn Write) -> Result<()> {
    let target = discover::find(dir, global.pid)?;
    let start = generation(&target, global)?;
    let mut report = TryReport {
        candidates: Vec::new(),
        kept: None,
        generation: start,
    };
    let stopped = try_each(&target, global, args, &mut report, out);
    if !global.json {
        writeln!(out, "{}", summary(&report, args, start))?;
    } else {
        render::json(out, &serde_json::to_value(&report)?)?;
    }
    out.flush()?;
    stopped?;
    let ok = if args.keep {
        report.kept.is_some()
    } else {
        report.candidates.iter().all(|v| v.passed)
    };
    if !ok {
        let why = if args.keep {
            "no candidate passed its check"
        } else {
            "not every candidate passed its check"
        };
        return Err(TryError::Verdict(why.into()).into());
    }
    Ok(())
}

/// Tries the candidates in order, printing each verdict as it comes (without `--json`); an error
/// is a reason to stop trying at all: the target can no longer be trusted to be where we think.
fn try_each(
    target: &Target,
    global: &Global,
    args: &TryArgs,
    report: &mut TryReport,
    out: &mut dyn Write,
) -> Result<()> {
    for candidate in &args.candidates {
        let mut request = reload::request(&ReloadArgs {
            path: candidate.clone(),
            replace: None,
            dry_run: false,
            no_probe: false,
            got_only: false,
            fresh_state: false,
            changed_only: false,
            probation: None,
            persist: false,
            on_next_start: false,
            // Each candidate is tried as a generation of its own, even one identical to the
            // current: its probe must run against that generation, and a rollback undoes it.
            force: true,
            select: Default::default(),
            rollout: Default::default(),
        })?;
        request.checkpoint = args.reset;
        let path = request.path.clone();
        let reloaded = match reload::exchange(target, global, request) {
            Ok(reloaded) => reloaded,
            Err(err) if err.downcast_ref::<AgentError>().is_some() => {
                let reason = format!("refused: {}", crate::one_line(&format!("{err:#}")));
                record(report, out, global.json, refused(path, reason))?;
                continue;
            }
            Err(err) => return Err(err.context(format!("reloading {path}"))),
        };
        let env = [
            ("HOTAGENT_PID", target.pid.to_string()),
            ("HOTAGENT_GENERATION", reloaded.generation.to_string()),
            ("HOTAGENT_CANDIDATE", path.clone()),
        ];
        let (outcome, took) = check::run(&args.check, &env, args.check_timeout);
        let verdict = checked(path.clone(), reloaded.generation, &outcome, took, args);
        let passed = verdict.passed;
        record(report, out, global.json, verdict)?;
        if passed && args.keep {
            report.kept = Some(path);
            report.generation = reloaded.generation;
            return Ok(());
        }
        match rollback::exchange(target, global, args.reset) {
            Ok(back) => report.generation = back.generation,
            Err(err) => {
                // Whatever the failure, the agent knows best where the target is now.
                report.generation = generation(target, global).unwrap_or(reloaded.generation);
                return Err(TryError::RollbackFailed {
                    path,
                    generation: report.generation,
                    message: crate::one_line(&format!("{err:#}")),
                }
                .into());
            }
        }
    }
    Ok(())
}

/// The target's current generation, as its agent reports it.
fn generation(target: &Target, global: &Global) -> Result<u32> {
    match target.exchange(&Request::status(), global.timeout_or(QUICK_TIMEOUT))? {
        Response::Status(status) => Ok(status.generation),
        other => Err(client::unexpected(other, "status")),
    }
}

fn refused(path: String, reason: String) -> Verdict {
    Verdict {
        path,
        passed: false,
        reason: Some(reason),
        check_exit: None,
        check_ms: None,
        generation: None,
    }
}

fn checked(
    path: String,
    generation: u32,
    outcome: &Outcome,
    took: std::time::Duration,
    args: &TryArgs,
) -> Verdict {
    Verdict {
        path,
        passed: outcome.passed(),
        reason: outcome.reason(args.check_timeout),
        check_exit: outcome.exit(),
        check_ms: Some(took.as_millis() as u64),
        generation: Some(generation),
    }
}

fn record(report: &mut TryReport, out: &mut dyn Write, json: bool, v: Verdict) -> Result<()> {
    if !json {
        writeln!(out, "{}", line(&v))?;
        out.flush()?;
    }
    report.candidates.push(v);
    Ok(())
}

/// `passed  PATH  (generation 1, check 12 ms)` or `failed  PATH  WHY (...)`.
fn line(v: &Verdict) -> String {
    let word = if v.passed { "passed" } else { "failed" };
    let mut text = format!("{word}  {}", v.path);
    if let Some(reason) = &v.reason {
        text.push_str("  ");
        text.push_str(reason);
    }
    if let (Some(generation), Some(ms)) = (v.generation, v.check_ms) {
        text.push_str(&format!(" (generation {generation}, check {ms} ms)"));
    }
    text
}

fn summary(report: &TryReport, args: &TryArgs, start: u32) -> String {
    let tried = report.candidates.len();
    let passed = report.candidates.iter().filter(|v| v.passed).count();
    let mut text = format!("{passed} of {} passed", render::count(tried, "candidate"));
    let untried = args.candidates.len() - tried;
    if untried > 0 {
        text.push_str(&format!(
            ", {} not tried",
            render::count(untried, "candidate")
        ));
    }
    match &report.kept {
        Some(kept) => text.push_str(&format!(
            "; kept {kept} at generation {}",
            report.generation
        )),
        None if report.generation == start => {
            text.push_str(&format!("; the target is back at generation {start}"))
        }
        None => text.push_str(&format!(
            "; the target is at generation {}, not {start} where it started",
            report.generation
        )),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fake_agent, reload_report, status_report};
    use hotagent_protocol::RollbackReport;
    use std::time::Duration;

    /// `--reset` is the agent's job; hotctl's is to ask for it on every reload and rollback.
    #[test]
    fn reset_asks_for_a_checkpoint_on_each_reload_and_a_reset_on_each_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let agent = fake_agent(dir.path(), move |request| {
            let answer = match &request {
                Request::Status(_) => Response::Status(status_report(1, "/bin/x")),
                Request::Reload(_) => Response::Reload(reload_report(false)),
                Request::Rollback(_) => Response::Rollback(RollbackReport {
                    generation: 0,
                    from: 1,
                    slots: 1,
                    symtab_entries: 0,
                    symbols: Vec::new(),
                    elapsed_us: 1,
                    pause: Default::default(),
                    warnings: Vec::new(),
                    unmigrate_us: 0,
                }),
                Request::Commit(_) | Request::History(_) | Request::Purge(_) => return None,
            };
            tx.send(request).unwrap();
            Some(answer)
        });
        let global = Global {
            pid: Some(agent.pid),
            json: true,
            timeout: None,
            settle: Some(Duration::ZERO),
            hook_timeout: None,
            quiet: false,
            verbose: false,
        };
        for reset in [true, false] {
            let args = TryArgs {
                candidates: vec!["/a/libfoo.so".into(), "/b/libfoo.so".into()],
                keep: false,
                reset,
                check_timeout: Duration::from_secs(10),
                check: vec!["true".into()],
            };
            let mut out = Vec::new();
            run(dir.path(), &global, &args, &mut out).unwrap();
            let sent: Vec<Request> = rx.try_iter().collect();
            let (mut reloads, mut rollbacks) = (0, 0);
            for request in &sent {
                match request {
                    Request::Reload(r) => {
                        assert_eq!(r.checkpoint, reset, "{r:?}");
                        reloads += 1;
                    }
                    Request::Rollback(r) => {
                        assert_eq!(r.reset, reset, "{r:?}");
                        rollbacks += 1;
                    }
                    _ => {}
                }
            }
            assert_eq!((reloads, rollbacks), (2, 2), "{sent:?}");
            let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(doc["candidates"].as_array().unwrap().len(), 2);
        }
    }
}
