//! The entry-jump step of reload and rollback: what every replaced function's entries should
//! hold now, getting them there (`crate::entry`), and what the reports say about them.
//!
//! The rule is one line: every entry a symbol has had jumps straight to its current code, except
//! the current code's own entry, and except while the current generation was loaded `got_only`
//! (then every entry keeps its bytes). So after a reload older entries jump forward, after a
//! rollback the entries of the generation left jump back, and at generation 0 every original
//! entry holds its own bytes again. Never a chain of jumps. One more exception: an old entry the
//! current generation's code calls under another name (`alias.rs`) keeps its bytes.

use super::alias::keep_note;
use super::modules;
use super::select::{Match, Role};
use super::state::{micros, Agent, CodeAt, Keep};
use crate::entry::{Entries, Want};
use crate::image::Layout;
use crate::sys::phdr;
use hotagent_protocol::{EntryReport, EntryState, PauseReport};
use std::time::Instant;

const SHARED: &str =
    "this entry belongs to several symbols that now run different code; it keeps its bytes";
const GOT_ONLY: &str = "reloaded with --got-only";
const PROBATION: &str =
    "the current generation is on probation: entries lead to the previous code until it passes";

/// What one site should hold, and why it holds its own bytes when it is not current.
pub(super) struct SiteWant {
    pub(super) addr: u64,
    /// The (first) replaced symbol it is an entry of.
    pub(super) symbol: usize,
    pub(super) want: Want,
    note: Option<String>,
}

impl Agent {
    /// Learns every replaced function's entries and brings each to what the current generations
    /// want. Never fails: an entry that cannot be written keeps its bytes, and the reports say why.
    pub(super) fn converge_entries(&mut self) -> (PauseReport, u64) {
        let t = Instant::now();
        let pause = phdr::with_modules_locked(|mods| {
            let layouts = modules::layouts(&mods, &self.exe, self.page);
            let mem = modules::live_memory(mods.lock(), &layouts);
            self.converge_entries_in(&mem, &layouts, None)
        });
        (pause, micros(t))
    }

    /// [`Agent::converge_entries`] under the list lock the caller holds, with `inside` run first
    /// while the other threads are parked (see `Entries::converge_with`).
    pub(super) fn converge_entries_in<M: crate::image::Memory>(
        &mut self,
        mem: &M,
        layouts: &[Layout],
        inside: Option<&mut dyn FnMut() -> bool>,
    ) -> PauseReport {
        let wants: Vec<(u64, Want)> = self
            .site_wants()
            .into_iter()
            .map(|w| (w.addr, w.want))
            .collect();
        self.register_sites(mem, layouts);
        // An entry whose module is gone is not ours to write any more.
        let live: Vec<(u64, Want)> = wants
            .iter()
            .copied()
            .filter(|(a, _)| layouts.iter().any(|l| l.contains(*a)))
            .collect();
        let (_, pause) = self.entries.converge_with(mem, &live, inside);
        if pause.held_at_entry > 0 {
            tracing::info!(
                rounds = pause.rounds,
                at_entry = pause.held_at_entry,
                "stops given up before the switch: a thread was inside an entry to rewrite"
            );
        }
        PauseReport {
            rounds: pause.rounds,
            longest_us: pause.longest.as_micros().min(u128::from(u64::MAX)) as u64,
            threads: pause.threads,
            entries: pause.written,
            asleep: pause.asleep,
            woke: pause.woke,
            per_thread: pause.per_thread,
            held_us: duration_us(if pause.per_thread {
                pause.held_cpu
            } else {
                pause.longest
            }),
            trap_us: duration_us(pause.trap_cpu),
        }
    }

    fn register_sites<M: crate::image::Memory>(&mut self, mem: &M, layouts: &[Layout]) {
        let code: Vec<CodeAt> = self
            .replaced
            .iter()
            .flat_map(|r| r.code.iter().copied())
            .collect();
        for c in code {
            if self.entries.get(c.addr).is_some() {
                continue;
            }
            let Some(layout) = layouts.iter().find(|l| l.contains(c.addr)) else {
                continue;
            };
            let label = self.module_label(layout.file_name());
            self.entries.register(mem, layouts, c.addr, c.size, label);
        }
    }

    /// `libfoo.so#2` for a generation's library, else the module's file name.
    pub(super) fn module_label(&self, file: &str) -> String {
        if let Some(r) = self
            .refused
            .iter()
            .find(|r| crate::image::file_name(&r.staged) == file)
        {
            return format!("{} (a refused load, still mapped)", r.file_name);
        }
        self.staged
            .iter()
            .find(|l| crate::image::file_name(&l.path) == file)
            .map_or_else(
                || file.to_string(),
                |l| format!("{}#{}", l.file_name, l.generation),
            )
    }

    /// The rule above, site by site; a site shared by symbols that disagree keeps its bytes.
    pub(super) fn site_wants(&self) -> Vec<SiteWant> {
        let mut out: Vec<SiteWant> = Vec::new();
        let mut at: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
        for (symbol, r) in self.replaced.iter().enumerate() {
            if r.role != Role::Code {
                continue;
            }
            let current = r.entries_target();
            let guarded = r.on_probation();
            for c in &r.code {
                let (want, note) = if c.addr == current || Some(c.addr) == guarded {
                    (Want::Original, None)
                } else if r.got_only() {
                    (Want::Original, Some(GOT_ONLY.to_string()))
                } else if let Some(k) = r.kept(c.addr) {
                    (Want::Original, Some(keep_note(&r.name, &k.alias)))
                } else {
                    (
                        Want::Jump {
                            symbol,
                            target: current,
                            // Generation 0's entries, which most old pointers hold, jump straight
                            // to the current code; later generations' go through the stub.
                            direct: c.addr == r.gen0,
                        },
                        None,
                    )
                };
                match at.get(&c.addr).map(|&i| &mut out[i]) {
                    None => {
                        at.insert(c.addr, out.len());
                        out.push(SiteWant {
                            addr: c.addr,
                            symbol,
                            want,
                            note,
                        })
                    }
                    Some(w) if !same_code(w.want, want) => {
                        w.want = Want::Original;
                        w.note = Some(SHARED.to_string());
                    }
                    Some(_) => {}
                }
            }
        }
        out
    }

    /// What the entries of each of `symbols` (indices into `replaced`) hold now.
    pub(super) fn entry_reports(&self, symbols: &[usize]) -> Vec<Vec<EntryReport>> {
        // Why a site keeps its bytes on purpose, worked out once for every symbol.
        let notes: std::collections::HashMap<u64, String> = self
            .site_wants()
            .into_iter()
            .filter_map(|w| Some((w.addr, w.note?)))
            .collect();
        symbols
            .iter()
            .map(|&i| self.entries_of(i, &notes))
            .collect()
    }

    /// What each entry really holds: a jump shows as a jump even where it should not be one
    /// (an entry a failed write left jumping elsewhere), with where it leads and why.
    fn entries_of(
        &self,
        i: usize,
        notes: &std::collections::HashMap<u64, String>,
    ) -> Vec<EntryReport> {
        let r = &self.replaced[i];
        let current = r.entries_target();
        let guarded = r.on_probation();
        let waiting = || guarded.map(|_| PROBATION.to_string());
        r.code
            .iter()
            .map(|c| {
                let site = self.entries.get(c.addr);
                let module = site.map_or_else(|| "?".to_string(), |s| s.label.clone());
                let why_not = || site.and_then(|s| s.last_error.as_ref());
                let (state, reason) = match self.entries.lands_at(c.addr) {
                    Some(to) if to == current => (EntryState::Jump, waiting()),
                    Some(to) => (
                        EntryState::Jump,
                        Some(format!(
                            "it still jumps to {}, not to the current code{}",
                            self.code_label(to),
                            why_not().map(|e| format!(": {e}")).unwrap_or_default()
                        )),
                    ),
                    None if Some(c.addr) == guarded => (
                        EntryState::Current,
                        Some("on probation: calls reach it through a guard".to_string()),
                    ),
                    None if c.addr == current && guarded.is_some() => {
                        (EntryState::Original, waiting())
                    }
                    None if c.addr == current => (EntryState::Current, None),
                    None => {
                        let note = notes.get(&c.addr).cloned();
                        let reason = note.or_else(|| match site {
                            None => Some("its module is no longer loaded".to_string()),
                            Some(s) => s
                                .last_error
                                .as_ref()
                                .or(s.refusal.as_ref())
                                .map(|e| e.to_string()),
                        });
                        (
                            EntryState::Original,
                            Some(reason.unwrap_or_else(|| "not written".to_string())),
                        )
                    }
                };
                EntryReport {
                    module,
                    addr: c.addr,
                    state,
                    reason,
                }
            })
            .collect()
    }

    /// `libfoo.so#1's code` for the entry of a generation's code, else the address.
    pub(super) fn code_label(&self, addr: u64) -> String {
        match self.entries.get(addr) {
            Some(s) => format!("{}'s code", s.label),
            None => format!("the code at {addr:#x}"),
        }
    }

    /// Entries that hold a jump the current generations do not want: the ones a switch must
    /// move, and (after it) the ones it could not.
    pub(super) fn stray_jumps(&self) -> Vec<SiteWant> {
        self.site_wants()
            .into_iter()
            .filter(|w| {
                let Some(to) = self.entries.lands_at(w.addr) else {
                    return false;
                };
                match w.want {
                    Want::Original => true,
                    Want::Jump { target, .. } => to != target,
                }
            })
            .collect()
    }

    /// For a dry run: what each matched function's entries would hold after the reload.
    /// `keeps` follows `matches`: the entries an alias keeps (see `entry_aliases`).
    pub(super) fn dry_run_entries(
        &mut self,
        module: &Layout,
        matches: &[Match],
        got_only: bool,
        keeps: &[Vec<Keep>],
    ) -> Vec<Vec<EntryReport>> {
        let mut kept: Vec<&[Keep]> = Vec::new();
        let code: Vec<Vec<CodeAt>> = matches
            .iter()
            .zip(
                keeps
                    .iter()
                    .map(Vec::as_slice)
                    .chain(std::iter::repeat(&[][..])),
            )
            .filter(|(m, _)| m.role != Role::State)
            .map(|(m, keep)| {
                kept.push(keep);
                match self.find_replaced(module, m) {
                    Some(i) => self.replaced[i].code.clone(),
                    None if m.role == Role::Code => {
                        let gen0 = self.gen0_of(module, m).unwrap_or(m.old.addr);
                        vec![CodeAt::of(gen0, m.old.kind, m.old.size)]
                    }
                    None => Vec::new(),
                }
            })
            .collect();
        let names: Vec<&str> = matches
            .iter()
            .filter(|m| m.role != Role::State)
            .map(|m| m.old.name.as_str())
            .collect();
        phdr::with_modules_locked(|mods| {
            let layouts = modules::layouts(&mods, &self.exe, self.page);
            let mem = modules::live_memory(mods.lock(), &layouts);
            for c in code.iter().flatten() {
                if let Some(l) = layouts.iter().find(|l| l.contains(c.addr)) {
                    let label = self.module_label(l.file_name());
                    self.entries.register(&mem, &layouts, c.addr, c.size, label);
                }
            }
        });
        let stoppable = if got_only {
            Ok(())
        } else {
            Entries::stoppable()
        };
        let feasibility = self.entries.feasibility();
        code.iter()
            .zip(kept)
            .zip(names)
            .map(|((sites, keep), name)| {
                sites
                    .iter()
                    .map(|c| {
                        let site = self.entries.get(c.addr);
                        let verdict = if got_only {
                            Err(GOT_ONLY.to_string())
                        } else if let Some(k) = keep.iter().find(|k| k.site == c.addr) {
                            Err(keep_note(name, &k.alias))
                        } else {
                            feasibility
                                .feasible(c.addr)
                                .and_then(|()| stoppable.clone())
                                .map_err(|e| e.to_string())
                        };
                        let (state, reason) = match verdict {
                            Ok(()) => (EntryState::Jump, None),
                            Err(e) => (EntryState::Original, Some(e)),
                        };
                        EntryReport {
                            module: site.map_or_else(|| "?".to_string(), |s| s.label.clone()),
                            addr: c.addr,
                            state,
                            reason,
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

/// Whether two symbols sharing an entry want the same thing of it.
fn same_code(a: Want, b: Want) -> bool {
    match (a, b) {
        (Want::Original, Want::Original) => true,
        (Want::Jump { target: x, .. }, Want::Jump { target: y, .. }) => x == y,
        _ => false,
    }
}

/// One warning per reason some old entries keep their bytes (a `--got-only` generation asked
/// for that, so it is not warned about): calls that do not go through the GOT still reach them.
/// And one per reason an entry still jumps to code that is not current.
pub(super) fn entry_warnings(symbols: &[hotagent_protocol::SymbolReport]) -> Vec<String> {
    let mut by_reason: Vec<(EntryState, &str, Vec<&str>)> = Vec::new();
    for s in symbols {
        for e in &s.entries {
            let Some(why) = e.reason.as_deref() else {
                continue;
            };
            if e.state == EntryState::Current || why == GOT_ONLY {
                continue;
            }
            match by_reason
                .iter_mut()
                .find(|(st, r, _)| *st == e.state && *r == why)
            {
                Some((_, _, names)) if names.contains(&s.name.as_str()) => {}
                Some((_, _, names)) => names.push(&s.name),
                None => by_reason.push((e.state, why, vec![&s.name])),
            }
        }
    }
    by_reason
        .into_iter()
        .map(|(state, why, names)| {
            let shown = names.iter().take(3).copied().collect::<Vec<_>>().join(", ");
            let more = match names.len() {
                n if n > 3 => format!(" and {} more", n - 3),
                _ => String::new(),
            };
            match state {
                EntryState::Jump => format!(
                    "{shown}{more}: an entry leads to code that is not current (calls that do not \
                     go through the GOT run that code): {why}"
                ),
                _ => format!(
                    "{shown}{more}: old code kept without a jump at its entry (calls that do not \
                     go through the GOT still run it): {why}"
                ),
            }
        })
        .collect()
}

/// What the report must say about the pause itself: a thread that blocks every signal, located
/// asleep, that left its system call while entries were written.
pub(super) fn pause_warnings(pause: &PauseReport) -> Vec<String> {
    pause
        .woke
        .map(|tid| {
            format!(
                "thread {tid} blocks the stop signal and left its system call while function \
                 entries were written: it was not inside them when the writes began, and would \
                 have had to reach one in the microseconds they took (the writes were kept)"
            )
        })
        .into_iter()
        .collect()
}

fn duration_us(d: std::time::Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}
