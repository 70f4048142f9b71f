//! The agent's memory of what it did: generations, and every replaced symbol's history.

use super::discard::RefusedLoad;
use super::error::ReloadError;
use super::plan::Binding;
use super::previous::Ownership;
use super::select::{Match, Role};
use crate::entry::Entries;
use crate::hooks::Hooks;
use crate::image::{as_plain_function, Layout, SymKind};
use crate::patch::{Width, Write};
use crate::sys::{dl, page, phdr, process};
use hotagent_protocol::{GenerationInfo, StatusReport, SymbolReport};
use std::time::Instant;

/// One symbol of an original module that some generation replaced.
#[derive(Debug, Clone)]
pub(super) struct Replaced {
    pub(super) module_path: String,
    pub(super) module_base: u64,
    pub(super) name: String,
    pub(super) version: Option<String>,
    pub(super) role: Role,
    pub(super) kind: SymKind,
    /// Address of the symbol-table entry, and what it held at generation 0.
    pub(super) entry: u64,
    pub(super) orig_value: u64,
    pub(super) orig_info: u8,
    /// The address slots held at generation 0 (the chosen implementation, for an IFUNC).
    pub(super) gen0: u64,
    /// Each generation that replaced it, oldest first.
    pub(super) stack: Vec<Layer>,
    /// Every address this symbol has had: a slot holding one of these is bound to it.
    pub(super) known: Vec<u64>,
    /// The function entries among them (none for data), with their sizes.
    pub(super) code: Vec<CodeAt>,
}

/// One generation's definition of a replaced symbol.
#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub(super) addr: u64,
    /// Reloaded with `got_only`: while this layer is on top, old entries keep their bytes.
    pub(super) got_only: bool,
    /// Old entries that keep their bytes while this layer is on top, because the new code calls
    /// them under another name (see `alias.rs`).
    pub(super) keep: Vec<Keep>,
    /// On probation: `addr` is the symbol's guard stub, and this is the new code it guards.
    pub(super) probation: Option<u64>,
}

/// An old entry the new code reaches through an alias: a jump there would send that call back
/// into the new code, forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Keep {
    pub(super) site: u64,
    /// The name the new code calls it by.
    pub(super) alias: String,
}

/// A function entry and its size, or why its size is unknown.
#[derive(Debug, Clone, Copy)]
pub(super) struct CodeAt {
    pub(super) addr: u64,
    pub(super) size: Result<u64, &'static str>,
}

impl CodeAt {
    pub(super) fn of(addr: u64, kind: SymKind, size: u64) -> CodeAt {
        let size = match (kind, size) {
            (SymKind::Ifunc, _) => {
                Err("an IFUNC's chosen implementation has no size in the dynamic symbol table")
            }
            (_, 0) => Err("its symbol gives no size"),
            (_, n) => Ok(n),
        };
        CodeAt { addr, size }
    }
}

impl Replaced {
    pub(super) fn current(&self) -> u64 {
        self.stack.last().map_or(self.gen0, |l| l.addr)
    }
    pub(super) fn below_top(&self) -> u64 {
        match self.stack.len() {
            0 | 1 => self.gen0,
            n => self.stack[n - 2].addr,
        }
    }
    /// The layer function entries follow: the top one, unless it is on probation — then entries
    /// stay as the generation below left them (its code is what a reverted guard runs, so its own
    /// entry must keep its bytes), until the probation passes.
    fn entries_layer(&self) -> Option<&Layer> {
        match self.stack.last() {
            Some(l) if l.probation.is_some() => self.stack.iter().rev().nth(1),
            top => top,
        }
    }
    /// The code function entries lead to now (see `entries_layer`).
    pub(super) fn entries_target(&self) -> u64 {
        self.entries_layer().map_or(self.gen0, |l| l.addr)
    }
    /// The new code of a generation on probation, whose entry keeps its bytes meanwhile.
    pub(super) fn on_probation(&self) -> Option<u64> {
        self.stack.last()?.probation
    }
    pub(super) fn got_only(&self) -> bool {
        self.entries_layer().is_some_and(|l| l.got_only)
    }
    /// Why the entry at `site` keeps its bytes under the current generation, if an alias is why.
    pub(super) fn kept(&self, site: u64) -> Option<&Keep> {
        self.entries_layer()?.keep.iter().find(|k| k.site == site)
    }
    /// The symbol-table writes that make lookups find `target`.
    pub(super) fn symtab_writes(&self, target: u64, now_value: u64, now_info: u8) -> Vec<Write> {
        let (value, info) = if target == self.gen0 {
            (self.orig_value, self.orig_info)
        } else {
            let info = if self.kind == SymKind::Ifunc {
                as_plain_function(self.orig_info)
            } else {
                self.orig_info
            };
            (target.wrapping_sub(self.module_base), info)
        };
        let mut w = Vec::new();
        // Value first: a lookup racing with us then sees the new address with the old type only
        // for an IFUNC, and only for the instant between the two stores.
        if now_value != value {
            w.push(Write::slot(self.entry + 8, now_value, value));
        }
        if now_info != info {
            w.push(Write {
                addr: self.entry + 4,
                width: Width::U8,
                expected: u64::from(now_info),
                value: u64::from(info),
            });
        }
        w
    }
}

/// A library a reload loaded.
#[derive(Debug, Clone)]
pub(super) struct StagedLib {
    /// `/proc/self/fd/N`: the sealed copy it was loaded from, kept open.
    pub(super) path: String,
    pub(super) handle: dl::Handle,
    pub(super) generation: u32,
    pub(super) file_name: String,
    /// The sha256 of its bytes and the module it replaced, once a reload switched to it: a
    /// later reload of the same bytes for the same module reuses it (see `reuse.rs`).
    pub(super) reusable: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub(super) struct Generation {
    pub(super) number: u32,
    pub(super) path: String,
    pub(super) staged: String,
    pub(super) module: String,
    /// Indices into `Agent::replaced`.
    pub(super) symbols: Vec<usize>,
    pub(super) slots: usize,
    pub(super) elapsed_us: u64,
    /// The replaced module as it was when this generation was made.
    pub(super) layout: Layout,
    /// What of the writable data it keeps of its own (see `previous.rs`).
    pub(super) owns: Ownership,
    /// Its library's hooks: unmigrate runs when it is rolled back.
    pub(super) hooks: Hooks,
    /// The classes whose objects it converts (their rollback converts them back).
    pub(super) classes: Vec<&'static crate::convert::Class>,
    /// Where those classes' methods lie, old and new.
    pub(super) methods: Vec<super::transaction::MethodCode>,
    /// The replaced module's private writable data at the reload (`checkpoint`), for a rollback
    /// with `reset`.
    pub(super) checkpoint: Option<std::sync::Arc<super::private::Snapshot>>,
    /// While on probation: its guards and how long it lasts.
    pub(super) probation: Option<super::probation::OnProbation>,
    /// The sha256 of its library's bytes: a reload of the same bytes is no new generation.
    /// Lower-case hex, as `facts.rs` computes it.
    pub(super) sha256: Option<String>,
}

/// The agent's state: owned by one lock, changed only by reload and rollback.
#[derive(Debug)]
pub struct Agent {
    pub(super) generations: Vec<Generation>,
    pub(super) replaced: Vec<Replaced>,
    /// Every library loaded by a reload (they stay loaded), oldest first.
    pub(super) staged: Vec<StagedLib>,
    pub(super) exe: String,
    pub(super) page: u64,
    /// Every function entry a reload may write, and what it holds.
    pub(super) entries: Entries,
    /// Loads that were refused but could not be unloaded (see `discard.rs`).
    pub(super) refused: Vec<RefusedLoad>,
    /// Set when a refused load must stay mapped whatever else holds (a hook of it hangs on an
    /// abandoned thread): why. `discard_load` takes it.
    pub(super) keep_loaded: Option<String>,
    /// Applying a deferred patch before `main`: a variable that changed size may move to the
    /// new build without a migrate hook, since the program has not used it yet.
    pub(super) before_main: bool,
    /// Generations applied from the journal before `main`.
    pub(super) at_startup: Vec<u32>,
    /// Generations probation rolled back after a crash in their code, oldest first.
    pub(super) reverted: Vec<hotagent_protocol::RevertedInfo>,
    /// What the last reload staged (size, hash, build-id), for the history: taken from the
    /// sealed copy once, never re-read from the path.
    pub(super) staged_facts: Option<super::StagedFacts>,
    /// Every settled module's switchable slots, read once per module (see `index.rs`).
    pub(super) slot_index: std::sync::Mutex<super::index::SlotIndex>,
    /// Every module's soname and real path, read once per module (see `names.rs`).
    pub(super) module_names: std::sync::Mutex<super::names::ModuleNames>,
}

impl Agent {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Agent {
        Agent {
            generations: Vec::new(),
            replaced: Vec::new(),
            staged: Vec::new(),
            exe: process::exe(),
            page: page::page_size(),
            entries: Entries::default(),
            refused: Vec::new(),
            keep_loaded: None,
            before_main: false,
            at_startup: Vec::new(),
            reverted: Vec::new(),
            staged_facts: None,
            slot_index: Default::default(),
            module_names: Default::default(),
        }
    }

    /// What the last reload staged, if it got that far; cleared by the call.
    pub fn take_staged_facts(&mut self) -> Option<super::StagedFacts> {
        self.staged_facts.take()
    }

    /// While set, reloads follow the start-up rules for deferred patches (see `before_main`).
    pub fn set_before_main(&mut self, on: bool) {
        self.before_main = on;
    }

    /// Marks `generation` as applied from the journal before `main`, for `status`.
    pub fn mark_applied_at_startup(&mut self, generation: u32) {
        self.at_startup.push(generation);
    }

    pub fn generation(&self) -> u32 {
        self.generations.last().map_or(0, |g| g.number)
    }

    /// The status of an agent that has changed nothing yet, without its lock: what `status`
    /// answers while the first reload runs.
    pub fn idle_status() -> StatusReport {
        StatusReport {
            protocol: hotagent_protocol::PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            pid: process::pid(),
            exe: process::exe(),
            generation: 0,
            generations: Vec::new(),
            modules: phdr::snapshot().len(),
            busy: false,
            symbols: Vec::new(),
            refused_loads: Vec::new(),
            reverted: Vec::new(),
        }
    }

    pub fn status(&self) -> StatusReport {
        StatusReport {
            protocol: hotagent_protocol::PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            pid: process::pid(),
            exe: self.exe.clone(),
            generation: self.generation(),
            generations: self
                .generations
                .iter()
                .map(|g| GenerationInfo {
                    generation: g.number,
                    path: g.path.clone(),
                    staged: g.staged.clone(),
                    module: g.module.clone(),
                    symbols: g
                        .symbols
                        .iter()
                        .map(|&i| self.replaced[i].name.clone())
                        .collect(),
                    slots: g.slots,
                    elapsed_us: g.elapsed_us,
                    probation: g.probation.as_ref().and_then(|p| p.info()),
                    applied_at_startup: self.at_startup.contains(&g.number),
                    // Stamped by the control side, which keeps the history.
                    since_unix_ms: None,
                })
                .collect(),
            modules: phdr::snapshot().len(),
            busy: false,
            symbols: self.coverage(),
            refused_loads: self
                .refused
                .iter()
                .map(|r| hotagent_protocol::RefusedLoad {
                    path: r.path.clone(),
                    staged: r.staged.clone(),
                    reason: r.reason.clone(),
                })
                .collect(),
            reverted: self.reverted.clone(),
        }
    }

    pub(super) fn find_replaced(&self, module: &Layout, m: &Match) -> Option<usize> {
        self.replaced.iter().position(|r| {
            r.module_base == module.base && r.name == m.old.name && r.version == m.old.version
        })
    }

    /// Pushes generation `number`'s address onto the symbol's history, creating it if needed.
    /// The address `m`'s slots held at generation 0: remembered if a reload already replaced it,
    /// else its definition (for an IFUNC, the implementation the loader chose).
    pub(super) fn gen0_of(&self, module: &Layout, m: &Match) -> Result<u64, ReloadError> {
        match self.find_replaced(module, m) {
            Some(i) => Ok(self.replaced[i].gen0),
            None if m.old.kind == SymKind::Ifunc => ifunc_choice(module, m),
            None => Ok(m.old.addr),
        }
    }

    /// Pushes generation `number`'s address onto the symbol's history, creating it if needed.
    /// Cannot fail: everything fallible (`gen0_of`) was done before.
    pub(super) fn record(&mut self, module: &Layout, m: &Match, layer: Layer, gen0: u64) -> usize {
        let i = match self.find_replaced(module, m) {
            Some(i) => i,
            None => {
                self.replaced.push(Replaced {
                    module_path: module.path.clone(),
                    module_base: module.base,
                    name: m.old.name.clone(),
                    version: m.old.version.clone(),
                    role: m.role,
                    kind: m.old.kind,
                    entry: m.old.entry,
                    orig_value: m.old.addr.wrapping_sub(module.base),
                    orig_info: m.old.info,
                    gen0,
                    stack: Vec::new(),
                    known: vec![gen0],
                    code: match m.role {
                        Role::Code => vec![CodeAt::of(gen0, m.old.kind, m.old.size)],
                        _ => Vec::new(),
                    },
                });
                self.replaced.len() - 1
            }
        };
        let r = &mut self.replaced[i];
        // A guard stub is an address slots may hold, but not code with entries of its own.
        let (addr, stub) = match layer.probation {
            Some(code) => (code, Some(layer.addr)),
            None => (layer.addr, None),
        };
        r.stack.push(layer);
        if let Some(stub) = stub.filter(|s| !r.known.contains(s)) {
            r.known.push(stub);
        }
        if !r.known.contains(&addr) {
            r.known.push(addr);
            if m.role == Role::Code {
                r.code.push(CodeAt::of(addr, m.new.kind, m.new.size));
            }
        }
        i
    }

    pub(super) fn binding(&self, i: usize, target: u64) -> Binding {
        let r = &self.replaced[i];
        Binding {
            name: r.name.clone(),
            known: r.known.clone(),
            target,
            only_in: None,
        }
    }

    /// Reports name a generation's library `libfoo.so#3`, not by its staged file name.
    pub(super) fn name_generations(&self, symbols: &mut [SymbolReport]) {
        for s in symbols {
            let mut named: Vec<String> = Vec::with_capacity(s.modules.len());
            for m in &s.modules {
                let label = self.module_label(m);
                if !named.contains(&label) {
                    named.push(label);
                }
            }
            s.modules = named;
        }
    }
}

/// The implementation an IFUNC resolved to at generation 0: what `dlsym` returns through a handle
/// of the module (its own scope, its own definition first).
fn ifunc_choice(module: &Layout, m: &Match) -> Result<u64, ReloadError> {
    let h = dl::open_loaded(&module.path).ok_or_else(|| {
        ReloadError::ModuleNotFound(format!("cannot open a handle to {}", module.path))
    })?;
    let addr = dl::symbol(h, &m.old.name, m.old.version.as_deref());
    dl::release(h);
    addr.ok_or_else(|| ReloadError::Unresolvable {
        symbol: m.old.name.clone(),
        module: module.path.clone(),
    })
}

/// Runs `f`, adding its time in microseconds to `slot`: one line per timed step.
pub(super) fn timed<T>(slot: &mut u64, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    *slot += micros(t);
    r
}

pub(super) fn micros(t: Instant) -> u64 {
    t.elapsed().as_micros().min(u128::from(u64::MAX)) as u64
}
