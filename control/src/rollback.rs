//! `hotctl rollback`: return to the previous generation.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use hotagent_protocol::{Request, Response, RollbackReport, RollbackRequest};

use crate::cli::{Global, Select};
use crate::client::{self, Extras, OnReport, Target, DEFAULT_SETTLE, ROLLBACK_TIMEOUT};
use crate::fleet::{self, Selection};
use crate::render;

pub fn run(
    dir: &Path,
    global: &Global,
    pids: &[u32],
    select: &Select,
    out: &mut dyn Write,
) -> Result<()> {
    let target = match fleet::select(dir, global.pid, pids, select)? {
        Selection::One(target) => target,
        Selection::Many(many) => return fleet::rollback(&many, global, select, out),
    };
    let report = exchange(&target, global, false)?;
    render::report(out, global.json, &report, human)
}

/// Sends the rollback `hotctl rollback` sends (with `reset` as `hotctl try --reset` asks) and
/// returns the agent's report.
pub fn exchange(target: &Target, global: &Global, reset: bool) -> Result<RollbackReport> {
    exchange_telling(target, global, reset, None)
}

/// [`exchange`], telling `on_report` when the change is reported (see [`Extras::on_report`]).
pub fn exchange_telling(
    target: &Target,
    global: &Global,
    reset: bool,
    on_report: Option<OnReport<'_>>,
) -> Result<RollbackReport> {
    let timeout = global.timeout_or(ROLLBACK_TIMEOUT);
    let settle = global.settle.unwrap_or(DEFAULT_SETTLE);
    let request = Request::Rollback(RollbackRequest {
        reset,
        ..RollbackRequest::default()
    });
    let request = client::with_settle(client::with_deadline(request, timeout), settle);
    let request = client::with_hook_timeout(request, global.hook_timeout);
    let extras = Extras {
        fd: None,
        settle,
        on_report,
    };
    match target.exchange_with(&request, timeout, &extras)? {
        Response::Rollback(report) => Ok(report),
        other => Err(client::unexpected(other, "rollback")),
    }
}

fn human(out: &mut dyn Write, report: &RollbackReport) -> std::io::Result<()> {
    writeln!(
        out,
        "generation {} → {}: {} restored, {}",
        report.from,
        report.generation,
        render::count(report.slots, "slot"),
        render::micros(report.elapsed_us)
    )?;
    render::symbols(out, &report.symbols)?;
    render::pause(out, &report.pause)?;
    render::warnings(out, &report.warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::AgentError;
    use crate::testing::fake_agent;
    use hotagent_protocol::{ErrorCode, ErrorReply};

    fn report() -> RollbackReport {
        RollbackReport {
            generation: 0,
            from: 1,
            slots: 7,
            symtab_entries: 2,
            symbols: Vec::new(),
            elapsed_us: 120,
            pause: Default::default(),
            warnings: vec!["something odd".into()],
            unmigrate_us: 0,
        }
    }

    #[test]
    fn human_report() {
        let mut out = Vec::new();
        human(&mut out, &report()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "generation 1 → 0: 7 slots restored, 120 µs\nwarning: something odd\n"
        );
    }

    #[test]
    fn agent_refusal_is_an_agent_error_and_prints_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let agent = fake_agent(dir.path(), |_| {
            let message = "nothing to roll back: generation 0 is current".into();
            Some(Response::Error(ErrorReply {
                code: ErrorCode::NothingToRollBack,
                message,
            }))
        });
        let mut out = Vec::new();
        let err = run(
            dir.path(),
            &Global {
                pid: Some(agent.pid),
                json: true,
                timeout: None,
                settle: None,
                hook_timeout: None,
                quiet: false,
                verbose: false,
            },
            &[],
            &Select::default(),
            &mut out,
        )
        .unwrap_err();
        assert!(err.downcast_ref::<AgentError>().is_some());
        assert_eq!(
            format!("{err:#}"),
            "nothing to roll back: generation 0 is current"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn json_is_the_bare_report() {
        let dir = tempfile::tempdir().unwrap();
        let agent = fake_agent(dir.path(), |_| Some(Response::Rollback(report())));
        let mut out = Vec::new();
        run(
            dir.path(),
            &Global {
                pid: Some(agent.pid),
                json: true,
                timeout: None,
                settle: None,
                hook_timeout: None,
                quiet: false,
                verbose: false,
            },
            &[],
            &Select::default(),
            &mut out,
        )
        .unwrap();
        let printed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(printed, serde_json::to_value(report()).unwrap());
        assert!(printed.get("kind").is_none());
    }
}
