//! A reload's or a status's symbols in a few lines: what was switched, what runs now, and which
//! old entries kept their own bytes and why, grouped with counts. A reload of zlib touches 88
//! symbols, of SQLite 328: one line each (`--verbose`) is for reading one symbol, not the whole.

use std::collections::BTreeMap;
use std::io::{self, Write};

use hotagent_protocol::{EntryState, SymbolReport};

use crate::render::count;

/// What a set of symbols adds up to.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    functions: usize,
    data: usize,
    slots: usize,
    modules: Vec<String>,
    lazy: usize,
    elsewhere: usize,
    /// The module whose code runs now → how many functions run it.
    running: BTreeMap<String, usize>,
    jumps: usize,
    /// Why an old entry kept its own bytes → how many did.
    kept: BTreeMap<String, usize>,
}

fn tally(symbols: &[SymbolReport]) -> Tally {
    let mut t = Tally::default();
    for s in symbols {
        match s.kind.as_str() {
            "function" => t.functions += 1,
            _ => t.data += 1,
        }
        t.slots += s.slots;
        t.lazy += s.lazy;
        t.elsewhere += s.other;
        for m in &s.modules {
            if !t.modules.contains(m) {
                t.modules.push(m.clone());
            }
        }
        for e in &s.entries {
            match e.state {
                EntryState::Current => *t.running.entry(e.module.clone()).or_default() += 1,
                EntryState::Jump => t.jumps += 1,
                EntryState::Original => {
                    let why = e.reason.as_deref().unwrap_or("no reason given");
                    *t.kept.entry(why.to_string()).or_default() += 1;
                }
            }
        }
    }
    t
}

/// Modules past this many are counted, not named.
const NAMED_MODULES: usize = 4;

fn modules(names: &[String]) -> String {
    match names.len() {
        0..=NAMED_MODULES => names.join(", "),
        n => format!(
            "{} and {} more",
            names[..NAMED_MODULES - 1].join(", "),
            n - (NAMED_MODULES - 1)
        ),
    }
}

/// The code a function runs, named so that generation 0 reads as what it is: the program's own
/// module (entries are labelled `libfoo.so#2` for generation 2's library, bare for the original).
fn code(module: &str) -> String {
    match module.contains('#') {
        true => module.to_string(),
        false => format!("the original {module}"),
    }
}

/// Writes the summary lines of `symbols`, each starting with `indent`.
pub fn write(out: &mut dyn Write, indent: &str, symbols: &[SymbolReport]) -> io::Result<()> {
    let t = tally(symbols);
    let mut first = format!(
        "{indent}{}, {}: {}",
        count(t.functions, "function"),
        count(t.data, "data object"),
        count(t.slots, "slot")
    );
    if !t.modules.is_empty() {
        first.push_str(&format!(" in {}", modules(&t.modules)));
    }
    if t.lazy > 0 {
        first.push_str(&format!(
            "; {} lazy (bound on first call)",
            count(t.lazy, "slot")
        ));
    }
    if t.elsewhere > 0 {
        first.push_str(&format!(
            "; {} bound elsewhere, left as they are",
            count(t.elsewhere, "slot")
        ));
    }
    writeln!(out, "{first}")?;
    if !t.running.is_empty() {
        let running: Vec<String> = t
            .running
            .iter()
            .map(|(module, n)| format!("{} in {}", count(*n, "function"), code(module)))
            .collect();
        writeln!(out, "{indent}runs now: {}", running.join(", "))?;
    }
    let old = t.jumps + t.kept.values().sum::<usize>();
    if old > 0 {
        writeln!(out, "{}", entries_line(indent, old, t.jumps, &t.kept))?;
    }
    Ok(())
}

/// "12 other entries: 11 jump to the code that runs now, 1 kept its own bytes (1 too short)".
fn entries_line(indent: &str, old: usize, jumps: usize, kept: &BTreeMap<String, usize>) -> String {
    let mut line = format!(
        "{indent}{}: {jumps} jump to the code that runs now",
        count(old, "other entry")
    );
    if !kept.is_empty() {
        let mut reasons: Vec<(&String, &usize)> = kept.iter().collect();
        // The commonest reason first: it is the one worth acting on.
        reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let reasons: Vec<String> = reasons
            .iter()
            .map(|(why, n)| format!("{n} {why}"))
            .collect();
        let n: usize = kept.values().sum();
        let verb = if n == 1 {
            "kept its own bytes"
        } else {
            "kept their own bytes"
        };
        line.push_str(&format!(", {n} {verb} ({})", reasons.join("; ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{entry, symbol};
    use hotagent_protocol::EntryState::{Current, Jump, Original};

    fn text(symbols: &[SymbolReport]) -> String {
        let mut out = Vec::new();
        write(&mut out, "  ", symbols).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn many_symbols_make_a_few_lines() {
        let mut symbols: Vec<SymbolReport> = (0..40)
            .map(|i| {
                let mut s = symbol(&format!("f{i}"), 2, 0, 0);
                s.entries = vec![
                    entry(
                        "libz.so.1",
                        if i < 37 { Jump } else { Original },
                        (i >= 37).then_some(if i == 39 {
                            "too short"
                        } else {
                            "a thread is inside it"
                        }),
                    ),
                    entry("libz.so.1#1", Current, None),
                ];
                s
            })
            .collect();
        symbols[0].lazy = 3;
        let mut data = symbol("table", 1, 0, 0);
        data.kind = "rodata".into();
        symbols.push(data);
        assert_eq!(
            text(&symbols),
            "  40 functions, 1 data object: 81 slots in app, libbar.so; 3 slots lazy (bound on first call)\n\
             \x20 runs now: 40 functions in libz.so.1#1\n\
             \x20 40 other entries: 37 jump to the code that runs now, 3 kept their own bytes (2 a thread is inside it; 1 too short)\n"
        );
    }

    #[test]
    fn generation_zero_says_the_original_runs() {
        let mut s = symbol("f", 0, 0, 0);
        s.entries = vec![
            entry("libz.so.1", Current, None),
            entry("libz.so.1#1", Jump, None),
        ];
        let text = text(&[s]);
        assert!(
            text.contains("runs now: 1 function in the original libz.so.1"),
            "{text}"
        );
        assert!(!text.contains("entry jumps"), "{text}");
    }
}
