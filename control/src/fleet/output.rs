//! What a rollout over several processes reports: one row per process, a summary, and the
//! exit status they make.

use std::io::{self, Write};

use hotagent_protocol::ErrorCode;
use serde::Serialize;

use super::select::Member;
use crate::client::AgentError;

/// Where a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A reload switched it.
    Switched,
    /// A rollback took it back, or --all-or-nothing undid its switch.
    RolledBack,
    /// Asked and answered without a change (status, a dry run, a deferred patch).
    Ok,
    /// It does not load the module (reload), or has nothing to roll back (rollback).
    Skipped,
    Failed,
    /// The rollout stopped before it.
    NotAttempted,
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::Switched,
        Outcome::RolledBack,
        Outcome::Ok,
        Outcome::Skipped,
        Outcome::Failed,
        Outcome::NotAttempted,
    ];

    fn words(self) -> &'static str {
        match self {
            Outcome::Switched => "switched",
            Outcome::RolledBack => "rolled back",
            Outcome::Ok => "ok",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::NotAttempted => "not attempted",
        }
    }
}

/// Why a process failed or was skipped.
#[derive(Debug, Clone, Serialize)]
pub struct RowError {
    /// The agent's error code, or hotctl's word for a failure without one (`no_answer`,
    /// `unknown_outcome`, `died`).
    pub code: serde_json::Value,
    pub message: String,
}

/// One process's result.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub pid: u32,
    pub exe: String,
    pub outcome: Outcome,
    /// The generation it ended at, when known (a dead process has none).
    pub generation: Option<u32>,
    /// Switched in the canary phase.
    pub canary: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RowError>,
    /// The agent's own report (reload, rollback or status), as `--json` of one process prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
    /// The exit status this process alone would have given.
    #[serde(skip)]
    pub exit: u8,
}

impl Row {
    pub fn new(m: &Member, outcome: Outcome, generation: Option<u32>) -> Row {
        Row {
            pid: m.target.pid,
            exe: m.exe.clone(),
            outcome,
            generation,
            canary: false,
            error: None,
            report: None,
            exit: 0,
        }
    }

    pub fn done(m: &Member, outcome: Outcome, generation: u32, report: impl Serialize) -> Row {
        Row {
            report: serde_json::to_value(report).ok(),
            ..Row::new(m, outcome, Some(generation))
        }
    }

    /// A failure (or, with `outcome` Skipped, a refusal that does not count as one).
    pub fn error(m: &Member, outcome: Outcome, err: &anyhow::Error) -> Row {
        let exit = crate::exit_code(err);
        let code = match err.downcast_ref::<AgentError>() {
            Some(AgentError(reply)) => serde_json::to_value(reply.code).unwrap_or_default(),
            None => match exit {
                3 => "unknown_outcome".into(),
                4 => "died".into(),
                _ => "no_answer".into(),
            },
        };
        Row {
            error: Some(RowError {
                code,
                message: crate::one_line(&format!("{err:#}")),
            }),
            exit: if outcome == Outcome::Failed { exit } else { 0 },
            ..Row::new(m, outcome, None)
        }
    }

    pub fn failed(m: &Member, message: String, exit: u8) -> Row {
        Row {
            error: Some(RowError {
                code: "died".into(),
                message,
            }),
            exit,
            ..Row::new(m, Outcome::Failed, None)
        }
    }
}

/// The agent's code of a refusal, if the agent refused.
pub fn agent_code(err: &anyhow::Error) -> Option<ErrorCode> {
    err.downcast_ref::<AgentError>().map(|e| e.0.code)
}

/// The whole answer of a rollout.
#[derive(Debug, Serialize)]
pub struct Document {
    pub verb: &'static str,
    pub results: Vec<Row>,
    /// Processes per outcome (every outcome is named, zeros too).
    pub summary: serde_json::Map<String, serde_json::Value>,
    /// Why the rollout stopped before every process was tried, if it did.
    pub stopped: Option<String>,
}

impl Document {
    pub fn new(verb: &'static str, results: Vec<Row>, stopped: Option<String>) -> Document {
        let summary = Outcome::ALL
            .iter()
            .map(|o| {
                let n = results.iter().filter(|r| r.outcome == *o).count();
                let key = serde_json::to_value(o).unwrap_or_default();
                (key.as_str().unwrap_or_default().to_string(), n.into())
            })
            .collect();
        Document {
            verb,
            results,
            summary,
            stopped,
        }
    }

    fn count(&self, o: Outcome) -> usize {
        self.results.iter().filter(|r| r.outcome == o).count()
    }

    /// Prints the document, then turns failures into the error `main` reports.
    pub fn finish(self, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
        if json {
            crate::render::json(out, &serde_json::to_value(&self)?)?;
        } else {
            self.human(out)?;
        }
        let failed: Vec<&Row> = self
            .results
            .iter()
            .filter(|r| r.outcome == Outcome::Failed)
            .collect();
        match failed.iter().map(|r| r.exit).max() {
            None => Ok(()),
            Some(exit) => Err(FleetFailed {
                failed: failed.len(),
                of: self.results.len(),
                exit: exit.max(1),
            }
            .into()),
        }
    }

    fn human(&self, out: &mut dyn Write) -> io::Result<()> {
        let width = self
            .results
            .iter()
            .map(|r| r.outcome.words().len())
            .max()
            .unwrap_or(0);
        for r in &self.results {
            let generation = r
                .generation
                .map_or_else(|| "generation ?".into(), |g| format!("generation {g}"));
            let canary = if r.canary { " (canary)" } else { "" };
            write!(
                out,
                "pid {:<7} {:<width$}  {generation}  {}{canary}",
                r.pid,
                r.outcome.words(),
                r.exe
            )?;
            match &r.error {
                Some(e) => writeln!(out, ": {}", e.message)?,
                None => writeln!(out)?,
            }
        }
        let mut parts: Vec<String> = Vec::new();
        for o in Outcome::ALL {
            let n = self.count(o);
            // The counts the brief summary always has, and any other that happened.
            let always = match self.verb {
                "reload" => matches!(o, Outcome::Switched | Outcome::Skipped | Outcome::Failed),
                "rollback" => matches!(o, Outcome::RolledBack | Outcome::Skipped | Outcome::Failed),
                _ => matches!(o, Outcome::Ok | Outcome::Failed),
            };
            if always || n > 0 {
                parts.push(format!("{n} {}", o.words()));
            }
        }
        let stopped = match &self.stopped {
            Some(why) => format!(" (stopped: {why})"),
            None => String::new(),
        };
        writeln!(out, "{}{stopped}", parts.join(", "))
    }
}

/// Some of the selected processes failed; each one's line says why.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {of} processes failed")]
pub struct FleetFailed {
    pub failed: usize,
    pub of: usize,
    /// The highest exit status among the failed processes'.
    pub exit: u8,
}
