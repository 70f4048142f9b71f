//! Shared pieces of the output: JSON documents, aligned columns, counts and durations.

use hotagent_protocol::{EntryState, PauseReport, SymbolReport};
use std::io::{self, Write};

/// Writes `value` as one JSON document on one line.
pub fn json(out: &mut dyn Write, value: &serde_json::Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

/// An agent's report: the one JSON document `--json` promises, or `human`'s text. Built whole,
/// then written at once: stdout flushes every line (or every KiB of JSON) otherwise, a write per
/// line of the report, and a reader could see half of one.
pub fn report<T: serde::Serialize>(
    out: &mut dyn Write,
    json: bool,
    report: &T,
    human: impl Fn(&mut dyn Write, &T) -> io::Result<()>,
) -> anyhow::Result<()> {
    let mut whole = Vec::with_capacity(4096);
    if json {
        self::json(&mut whole, &serde_json::to_value(report)?)?;
    } else {
        human(&mut whole, report)?;
    }
    out.write_all(&whole)?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Writes `rows` in aligned columns separated by two spaces, each line starting with `indent`.
/// Lines carry no trailing blanks, so the last column may be as long as it likes.
pub fn table(
    out: &mut dyn Write,
    indent: &str,
    align: &[Align],
    rows: &[Vec<String>],
) -> io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            let cells = rows.iter().filter_map(|row| row.get(c));
            cells.map(|cell| cell.chars().count()).max().unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::from(indent);
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let width = widths[c];
            match align.get(c).copied().unwrap_or(Align::Left) {
                Align::Left => line.push_str(&format!("{cell:<width$}")),
                Align::Right => line.push_str(&format!("{cell:>width$}")),
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// "1 slot", "7 slots", "2 entries".
pub fn count(n: usize, noun: &str) -> String {
    match (n, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        _ => format!("{n} {noun}s"),
    }
}

/// A duration measured by the agent, in a unit that keeps it short.
pub fn micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

/// A span in milliseconds, as a person reads it: `850 ms`, `12.5 s`, `3 min 20 s`.
pub fn millis(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1e3),
        _ => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1_000),
    }
}

/// Writes each warning on its own line.
pub fn warnings(out: &mut dyn Write, warnings: &[String]) -> io::Result<()> {
    for warning in warnings {
        writeln!(out, "warning: {warning}")?;
    }
    Ok(())
}

/// One line per symbol: name, kind, slots, their modules, notes, and what its old entries hold.
pub fn symbols(out: &mut dyn Write, symbols: &[SymbolReport]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = symbols
        .iter()
        .map(|symbol| {
            let name = match &symbol.version {
                Some(version) => format!("{}@{version}", symbol.name),
                None => symbol.name.clone(),
            };
            let modules = if symbol.modules.is_empty() {
                String::new()
            } else {
                format!("in {}", symbol.modules.join(", "))
            };
            let mut notes = Vec::new();
            if symbol.lazy > 0 {
                notes.push(format!("{} lazy", symbol.lazy));
            }
            if symbol.other > 0 {
                notes.push(format!("{} bound elsewhere", symbol.other));
            }
            let entries = entries(symbol);
            if !entries.is_empty() {
                notes.push(entries);
            }
            vec![
                name,
                symbol.kind.clone(),
                count(symbol.slots, "slot"),
                modules,
                notes.join(", "),
            ]
        })
        .collect();
    let align = [
        Align::Left,
        Align::Left,
        Align::Right,
        Align::Left,
        Align::Left,
    ];
    table(out, "  ", &align, &rows)
}

/// What a function's old entries hold, in a few words: "entry jumps", "2 entries jump",
/// "entry kept: <why>", "1 of 2 entries jump, kept: <why>". Empty when it has no old entry.
pub fn entries(symbol: &SymbolReport) -> String {
    let old: Vec<_> = symbol
        .entries
        .iter()
        .filter(|e| e.state != EntryState::Current)
        .collect();
    let jumps = old.iter().filter(|e| e.state == EntryState::Jump).count();
    let why = old
        .iter()
        .find_map(|e| e.reason.as_deref())
        .unwrap_or("no reason given");
    // After a rollback to generation 0 the original code runs (its entry is labelled without
    // `#N`) and the rolled-back builds' entries merely lead back to it: no patch is in force.
    let original = symbol
        .entries
        .iter()
        .any(|e| e.state == EntryState::Current && !e.module.contains('#'));
    let (one, many) = match original {
        true => ("original runs, entry leads back to it", "lead back to it"),
        false => ("entry jumps", "jump"),
    };
    match (old.len(), jumps) {
        (0, _) => String::new(),
        (1, 1) => one.to_string(),
        (n, j) if n == j && original => format!("original runs, {n} entries {many}"),
        (n, j) if n == j => format!("{n} entries {many}"),
        (1, 0) => format!("entry kept: {why}"),
        (n, 0) => format!("{n} entries kept: {why}"),
        (n, j) => format!("{j} of {n} entries {many}, kept: {why}"),
    }
}

/// The pause entry writes cost, when there was one.
pub fn pause(out: &mut dyn Write, pause: &PauseReport) -> io::Result<()> {
    if pause.rounds == 0 {
        return Ok(());
    }
    write!(
        out,
        "  {} written with {} held {} ({})",
        count(pause.entries, "entry"),
        count(pause.threads, "thread"),
        micros(pause.longest_us),
        count(pause.rounds as usize, "stop")
    )?;
    if pause.asleep > 0 {
        // Threads that block every signal cannot be held: they were checked where they slept.
        write!(
            out,
            "; {} blocking signals checked asleep",
            count(pause.asleep, "thread")
        )?;
    }
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(align: &[Align], rows: &[Vec<String>]) -> String {
        let mut out = Vec::new();
        table(&mut out, "> ", align, rows).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn columns_align() {
        let rows = [
            row(&["PID", "GEN", "EXE"]),
            row(&["7", "12", "/bin/a"]),
            row(&["12345", "0", "/b"]),
        ];
        let text = render(&[Align::Right, Align::Right, Align::Left], &rows);
        assert_eq!(
            text,
            ">   PID  GEN  EXE\n>     7   12  /bin/a\n> 12345    0  /b\n"
        );
    }

    #[test]
    fn no_trailing_blanks() {
        let rows = [row(&["a", "long-cell"]), row(&["bbbbbb", ""])];
        let text = render(&[], &rows);
        assert_eq!(text, "> a       long-cell\n> bbbbbb\n");
    }

    #[test]
    fn counts_and_durations() {
        assert_eq!(count(1, "slot"), "1 slot");
        assert_eq!(count(0, "slot"), "0 slots");
        assert_eq!(count(7, "symbol"), "7 symbols");
        assert_eq!(count(2, "entry"), "2 entries");
        assert_eq!(count(1, "entry"), "1 entry");
        assert_eq!(micros(412), "412 µs");
        assert_eq!(micros(999), "999 µs");
        assert_eq!(micros(12_345), "12.3 ms");
        assert_eq!(micros(2_500_000), "2.50 s");
    }
}

#[cfg(test)]
mod entry_tests {
    use super::*;
    use crate::testing::{entry, symbol};
    use hotagent_protocol::EntryState::{Current, Jump, Original};

    fn summary(entries: &[(EntryState, Option<&str>)]) -> String {
        let mut s = symbol("foo", 1, 0, 0);
        s.entries = entries
            .iter()
            .map(|&(state, why)| match state {
                Current => entry("libfoo.so#1", state, why),
                _ => entry("libfoo.so", state, why),
            })
            .collect();
        super::entries(&s)
    }

    #[test]
    fn entry_summaries() {
        assert_eq!(summary(&[]), "");
        assert_eq!(summary(&[(Current, None)]), "");
        assert_eq!(summary(&[(Jump, None), (Current, None)]), "entry jumps");
        assert_eq!(summary(&[(Jump, None), (Jump, None)]), "2 entries jump");
        assert_eq!(
            summary(&[(Original, Some("too short")), (Current, None)]),
            "entry kept: too short"
        );
        assert_eq!(
            summary(&[(Original, Some("x")), (Original, Some("y"))]),
            "2 entries kept: x"
        );
        assert_eq!(
            summary(&[(Jump, None), (Original, Some("blocked")), (Current, None)]),
            "1 of 2 entries jump, kept: blocked"
        );
    }

    #[test]
    fn at_generation_zero_the_original_runs() {
        let mut s = symbol("foo", 1, 0, 0);
        s.entries = vec![
            entry("libfoo.so", Current, None),
            entry("libfoo.so#1", Jump, None),
        ];
        assert_eq!(super::entries(&s), "original runs, entry leads back to it");
        s.entries.push(entry("libfoo.so#2", Jump, None));
        assert_eq!(
            super::entries(&s),
            "original runs, 2 entries lead back to it"
        );
    }
}
