//! `hotctl status`: the target, its current generation and the generations stacked so far.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use hotagent_protocol::{Request, Response, StatusReport, PROTOCOL_VERSION};

use crate::cli::{Global, Select};
use crate::client::{self, Target, QUICK_TIMEOUT};
use crate::fleet::{self, Selection};
use crate::render::{self, Align};

pub fn run(
    dir: &Path,
    global: &Global,
    pids: &[u32],
    select: &Select,
    out: &mut dyn Write,
) -> Result<()> {
    let target = match fleet::select(dir, global.pid, pids, select)? {
        Selection::One(target) => target,
        Selection::Many(many) => return fleet::status(&many, global, select, out),
    };
    let report = exchange(&target, global)?;
    render::report(out, global.json, &report, |out, r| {
        human(out, r, global.verbose)
    })
}

/// One status request to `target`.
pub fn exchange(target: &Target, global: &Global) -> Result<StatusReport> {
    match target.exchange(&Request::status(), global.timeout_or(QUICK_TIMEOUT))? {
        Response::Status(report) => Ok(report),
        other => Err(client::unexpected(other, "status")),
    }
}

/// The status in words: the generations, then coverage as a summary or (`verbose`) one line
/// per symbol.
fn human(out: &mut dyn Write, report: &StatusReport, verbose: bool) -> std::io::Result<()> {
    writeln!(out, "pid {}: {}", report.pid, report.exe)?;
    writeln!(
        out,
        "generation {} (agent {}, protocol {}, {} loaded)",
        report.generation,
        report.agent_version,
        report.protocol,
        render::count(report.modules, "module")
    )?;
    if report.protocol != PROTOCOL_VERSION {
        writeln!(
            out,
            "warning: the agent speaks protocol {}, this hotctl {PROTOCOL_VERSION}",
            report.protocol
        )?;
    }
    // Not generations: libraries of refused reloads the loader would not unload.
    for r in &report.refused_loads {
        writeln!(
            out,
            "refused load still mapped (not a generation): {} as {}: {}",
            r.path, r.staged, r.reason
        )?;
    }
    for r in &report.reverted {
        writeln!(
            out,
            "generation {} ({}) crashed on probation: {} in {} at {:#x}; rolled back to generation {}{}",
            r.generation,
            r.path,
            r.signal_name,
            r.function.as_deref().unwrap_or("its code"),
            r.address,
            r.back_to,
            if r.rerun {
                ", the crashed call was run again there"
            } else {
                ""
            }
        )?;
    }
    for g in &report.generations {
        if let Some(p) = &g.probation {
            writeln!(
                out,
                "generation {} is on probation: {} of {} left",
                g.generation,
                render::millis(p.remaining_ms),
                render::millis(p.duration_ms)
            )?;
        }
        if g.applied_at_startup {
            writeln!(out, "generation {} was applied at start-up", g.generation)?;
        }
    }
    if report.generations.is_empty() && report.symbols.is_empty() {
        return writeln!(out, "no reloads yet");
    }
    if report.generations.is_empty() {
        // Everything was rolled back: a table would be a header alone.
        writeln!(out, "no generation in force: every reload was rolled back")?;
        return coverage(out, report, verbose);
    }
    let header = ["GEN", "MODULE", "SYMBOLS", "SLOTS", "PATH"]
        .map(String::from)
        .to_vec();
    let rows = report.generations.iter().map(|g| {
        vec![
            g.generation.to_string(),
            g.module.clone(),
            g.symbols.len().to_string(),
            g.slots.to_string(),
            match g.applied_at_startup {
                true => format!("{} (applied at start-up)", g.path),
                false => g.path.clone(),
            },
        ]
    });
    let rows: Vec<Vec<String>> = std::iter::once(header).chain(rows).collect();
    let align = [
        Align::Right,
        Align::Left,
        Align::Right,
        Align::Right,
        Align::Left,
    ];
    render::table(out, "", &align, &rows)?;
    coverage(out, report, verbose)
}

fn coverage(out: &mut dyn Write, report: &StatusReport, verbose: bool) -> std::io::Result<()> {
    if report.symbols.is_empty() {
        return Ok(());
    }
    writeln!(out, "coverage now:")?;
    match verbose {
        true => render::symbols(out, &report.symbols),
        false => crate::summary::write(out, "  ", &report.symbols),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{generation, status_report};

    fn human_text(report: &StatusReport) -> String {
        let mut out = Vec::new();
        human(&mut out, report, false).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn refused_loads_are_no_generation() {
        let mut report = status_report(7, "/bin/x");
        report.refused_loads = vec![hotagent_protocol::RefusedLoad {
            path: "/p/libz.so.1".into(),
            staged: "/proc/self/fd/9".into(),
            reason: "it pins itself".into(),
        }];
        let text = human_text(&report);
        assert!(
            text.contains("refused load still mapped (not a generation): /p/libz.so.1"),
            "{text}"
        );
        assert!(text.ends_with("no reloads yet\n"), "{text}");
    }

    #[test]
    fn fresh_target() {
        assert_eq!(
            human_text(&status_report(4242, "/usr/bin/app")),
            "pid 4242: /usr/bin/app\ngeneration 0 (agent 0.1.0, protocol 1, 5 modules loaded)\nno reloads \
             yet\n"
        );
    }

    #[test]
    fn generations_table() {
        let mut report = status_report(4242, "/usr/bin/app");
        report.generation = 2;
        report.generations = vec![
            generation(1, "/abs/libfoo_v2.so"),
            generation(2, "/abs/libfoo_v3.so"),
        ];
        let text = human_text(&report);
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            lines,
            [
                "GEN  MODULE     SYMBOLS  SLOTS  PATH",
                "  1  libfoo.so        2      7  /abs/libfoo_v2.so",
                "  2  libfoo.so        2      7  /abs/libfoo_v3.so",
            ]
        );
    }

    #[test]
    fn after_a_rollback_to_zero_no_empty_table() {
        let mut report = status_report(4242, "/usr/bin/app");
        let mut foo = crate::testing::symbol("foo", 1, 0, 0);
        foo.entries = vec![
            crate::testing::entry("libfoo.so", hotagent_protocol::EntryState::Current, None),
            crate::testing::entry("libfoo.so#1", hotagent_protocol::EntryState::Jump, None),
        ];
        report.symbols = vec![foo];
        let text = human_text(&report);
        assert!(!text.contains("GEN"), "{text}");
        assert!(text.contains("every reload was rolled back"), "{text}");
        assert!(
            text.contains("runs now: 1 function in the original libfoo.so"),
            "{text}"
        );
    }

    #[test]
    fn protocol_mismatch_is_flagged() {
        let mut report = status_report(4242, "/usr/bin/app");
        report.protocol = PROTOCOL_VERSION + 1;
        assert!(human_text(&report).contains("warning: the agent speaks protocol 2, this hotctl 1"));
    }
}
