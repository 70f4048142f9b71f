//! `hotctl history`: every reload, rollback, revert and start-up application the target's agent
//! remembers, oldest first, with the file, its hash, who asked and what came of it.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use hotagent_protocol::{HistoryEvent, HistoryReport, Outcome, Request, Response};

use crate::cli::Global;
use crate::client::{self, QUICK_TIMEOUT};
use crate::{clock, discover, render};

pub fn run(dir: &Path, global: &Global, out: &mut dyn Write) -> Result<()> {
    let target = discover::find(dir, global.pid)?;
    let report = match target.exchange(&Request::history(), global.timeout_or(QUICK_TIMEOUT))? {
        Response::History(report) => report,
        other => return Err(client::unexpected(other, "history")),
    };
    render::report(out, global.json, &report, human)
}

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Switched => "switched",
        Outcome::RolledBack => "rolled back",
        Outcome::Refused => "refused",
        Outcome::Reverted => "reverted by probation",
        Outcome::AppliedAtStartup => "applied at start-up",
        Outcome::PassedProbation => "passed probation",
        Outcome::DeferredToNextStart => "deferred to the next start",
        Outcome::Purged => "purged",
    }
}

fn human(out: &mut dyn Write, report: &HistoryReport) -> std::io::Result<()> {
    let dropped = match report.dropped {
        0 => String::new(),
        n => format!(", {n} older dropped"),
    };
    writeln!(
        out,
        "pid {}: {} (the agent keeps the last {}{dropped})",
        report.pid,
        render::count(report.events.len(), "event"),
        report.capacity
    )?;
    for e in &report.events {
        event(out, e)?;
    }
    Ok(())
}

fn event(out: &mut dyn Write, e: &HistoryEvent) -> std::io::Result<()> {
    let about = e
        .generation
        .map(|g| format!(" generation {g}"))
        .unwrap_or_default();
    let by = e
        .uid
        .map_or_else(|| "by the agent".to_string(), |u| format!("by uid {u}"));
    writeln!(
        out,
        "#{} {}  {}{about}, now at {}, {by}",
        e.seq,
        clock::utc(e.unix_ms),
        outcome(e.outcome),
        e.current
    )?;
    if let Some(path) = &e.path {
        let module = e
            .module
            .as_deref()
            .map(|m| format!(" -> {m}"))
            .unwrap_or_default();
        let size = e.size.map(|s| format!(", {s} bytes")).unwrap_or_default();
        writeln!(out, "    {path}{module}{size}")?;
    }
    if let Some(sha) = &e.sha256 {
        let id = e
            .build_id
            .as_deref()
            .map(|b| format!("  build-id {b}"))
            .unwrap_or_default();
        writeln!(out, "    sha256 {sha}{id}")?;
    }
    if let Some(why) = &e.reason {
        writeln!(out, "    why: {why}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_each_event_with_its_file_and_reason() {
        let mut switched = HistoryEvent {
            seq: 1,
            unix_ms: 1_796_564_401_000,
            outcome: Outcome::Switched,
            generation: Some(1),
            current: 1,
            path: Some("/p/libfoo_v2.so".into()),
            module: Some("libfoo.so".into()),
            size: Some(15_960),
            sha256: Some("ab".repeat(32)),
            build_id: Some("77".into()),
            uid: Some(1000),
            reason: None,
            code: None,
        };
        let refused = HistoryEvent {
            seq: 2,
            outcome: Outcome::Refused,
            generation: None,
            uid: None,
            reason: Some("not ELF".into()),
            sha256: None,
            ..switched.clone()
        };
        switched.build_id = None;
        let report = HistoryReport {
            pid: 42,
            capacity: 1000,
            dropped: 3,
            events: vec![switched, refused],
        };
        let mut out = Vec::new();
        human(&mut out, &report).unwrap();
        let text = String::from_utf8(out).unwrap();
        let sha = "ab".repeat(32);
        let want = format!(
            "pid 42: 2 events (the agent keeps the last 1000, 3 older dropped)
#1 2026-12-06 13:40:01 UTC  switched generation 1, now at 1, by uid 1000
    /p/libfoo_v2.so -> libfoo.so, 15960 bytes
    sha256 {sha}
#2 2026-12-06 13:40:01 UTC  refused, now at 1, by the agent
    /p/libfoo_v2.so -> libfoo.so, 15960 bytes
    why: not ELF
"
        );
        assert_eq!(text, want);
    }
}
