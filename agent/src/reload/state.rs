//! The agent's memory of what it did: generations, and every replaced symbol's history.

use super::check::{check_file, PatchFile};
use super::error::ReloadError;
use super::modules;
use super::plan::{plan_slots, Binding, Plan};
use super::select::{select, Match, Role};
use super::stage::stage;
use crate::image::{as_plain_function, exports, Image, Layout, Memory, SymKind};
use crate::patch::{self, Width, Write};
use crate::sys::{dl, mem, phdr, process, prot};
use hotagent_protocol::{
    GenerationInfo, Phases, ReloadReport, ReloadRequest, RollbackReport, StatusReport, SymbolReport,
};
use std::path::PathBuf;
use std::time::Instant;

/// How many times the verify step re-plans to catch a slot the lazy resolver bound to an older
/// generation while we were writing.
const VERIFY_ROUNDS: usize = 3;
/// How long the throwaway probe load may take.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One symbol of an original module that some generation replaced.
#[derive(Debug, Clone)]
struct Replaced {
    module_path: String,
    module_base: u64,
    name: String,
    version: Option<String>,
    role: Role,
    kind: SymKind,
    /// Address of the symbol-table entry, and what it held at generation 0.
    entry: u64,
    orig_value: u64,
    orig_info: u8,
    /// The address slots held at generation 0 (the chosen implementation, for an IFUNC).
    gen0: u64,
    /// (generation, address) for each generation that replaced it, oldest first.
    stack: Vec<(u32, u64)>,
    /// Every address this symbol has had: a slot holding one of these is bound to it.
    known: Vec<u64>,
}

impl Replaced {
    fn current(&self) -> u64 {
        self.stack.last().map_or(self.gen0, |&(_, a)| a)
    }
    fn below_top(&self) -> u64 {
        match self.stack.len() {
            0 | 1 => self.gen0,
            n => self.stack[n - 2].1,
        }
    }
    /// The symbol-table writes that make lookups find `target`.
    fn symtab_writes(&self, target: u64, now_value: u64, now_info: u8) -> Vec<Write> {
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
struct StagedLib {
    path: String,
    generation: u32,
    file_name: String,
}

#[derive(Debug, Clone)]
struct Generation {
    number: u32,
    path: String,
    staged: String,
    module: String,
    /// Indices into `Agent::replaced`.
    symbols: Vec<usize>,
    slots: usize,
    elapsed_us: u64,
}

/// The agent's state: owned by one lock, changed only by reload and rollback.
#[derive(Debug)]
pub struct Agent {
    generations: Vec<Generation>,
    replaced: Vec<Replaced>,
    /// Every library loaded by a reload (they stay loaded), oldest first.
    staged: Vec<StagedLib>,
    seq: u64,
    stage_dir: PathBuf,
    exe: String,
    page: u64,
}

/// What a locked write pass did.
struct Outcome {
    plan: Plan,
    write_us: u64,
    verify_us: u64,
    symtab: usize,
    verify_fixes: usize,
}

fn micros(t: Instant) -> u64 {
    t.elapsed().as_micros().min(u128::from(u64::MAX)) as u64
}

impl Agent {
    /// `stage_dir` receives staged copies when the patch's own folder is not writable.
    pub fn new(stage_dir: PathBuf) -> Agent {
        Agent {
            generations: Vec::new(),
            replaced: Vec::new(),
            staged: Vec::new(),
            seq: 0,
            stage_dir,
            exe: process::exe(),
            page: prot::page_size(),
        }
    }

    pub fn generation(&self) -> u32 {
        self.generations.last().map_or(0, |g| g.number)
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
                })
                .collect(),
            modules: phdr::snapshot().len(),
        }
    }

    pub fn reload(&mut self, req: &ReloadRequest) -> Result<ReloadReport, ReloadError> {
        let t0 = Instant::now();
        let mut phases = Phases::default();
        let path = req.path.as_str();
        if !path.starts_with('/') {
            return Err(ReloadError::FileUnreadable(format!(
                "{path}: the path must be absolute (hotctl resolves it)"
            )));
        }
        let (patch, bytes) = check_file(path)?;
        let want = req
            .replace
            .clone()
            .or_else(|| patch.soname.clone())
            .unwrap_or_else(|| patch.file_name.clone());
        let (module, matches) = self.select_locked(&patch, &want)?;
        phases.check_us = micros(t0);

        let settled = settled_modules();
        let t = Instant::now();
        self.seq += 1;
        let staged =
            stage(path, &bytes, &self.stage_dir, process::pid(), self.seq).map_err(|e| {
                ReloadError::FileUnreadable(format!("cannot stage a private copy of {path}: {e}"))
            })?;
        let staged = staged.to_string_lossy().into_owned();
        phases.stage_us = micros(t);

        if !req.no_probe {
            let t = Instant::now();
            let verdict = probe(&staged, path);
            phases.probe_us = micros(t);
            if let Err(e) = verdict {
                let _ = std::fs::remove_file(&staged);
                return Err(e);
            }
        }
        if req.dry_run {
            let _ = std::fs::remove_file(&staged);
            let t = Instant::now();
            let (bindings, _) = self.bindings_for_dry_run(&module, &matches);
            let plan = phdr::with_modules_locked(|mods| {
                let layouts = modules::layouts(&mods, &self.exe, self.page);
                let mem = modules::live_memory(&layouts);
                plan_slots(&mem, &layouts, &bindings, &[self_base(&layouts)])
            });
            phases.plan_us = micros(t);
            let symbols = symbol_reports(&matches, &plan);
            return Ok(ReloadReport {
                generation: self.generation() + 1,
                dry_run: true,
                path: path.to_string(),
                module: module.path,
                slots: plan.writes.len(),
                symtab_entries: matches.iter().filter(|m| m.role != Role::State).count(),
                symbols,
                elapsed_us: micros(t0),
                phases,
                warnings: Vec::new(),
            });
        }

        let t = Instant::now();
        let loaded = dl::open_now_local(&staged);
        let _ = std::fs::remove_file(&staged);
        let handle = loaded.map_err(|e| {
            ReloadError::LoadFailed(format!("cannot load {path}: {}", e.replace(&staged, path)))
        })?;
        let file_name = path.rsplit('/').next().unwrap_or(path).to_string();
        self.staged.push(StagedLib {
            path: staged.clone(),
            generation: self.generation() + 1,
            file_name,
        });
        phases.load_us = micros(t);

        let t = Instant::now();
        let number = self.generation() + 1;
        let resolved = self.resolve(&module, &matches, handle, path)?;
        let mut touched = Vec::new();
        let mut state_bindings = Vec::new();
        for (m, new_addr) in matches.iter().zip(&resolved) {
            match m.role {
                Role::State => state_bindings.push((m, *new_addr)),
                _ => touched.push(self.record(&module, m, number, *new_addr)?),
            }
        }
        let mut bindings: Vec<Binding> = touched
            .iter()
            .map(|&i| self.binding(i, self.replaced[i].current()))
            .collect();
        for (m, own) in &state_bindings {
            let storage = dl::default_symbol(&m.new.name).unwrap_or(m.old.addr);
            bindings.push(Binding {
                name: m.new.name.clone(),
                known: vec![*own],
                target: storage,
                only_in: Some(0),
            });
        }
        phases.plan_us = micros(t);

        let t = Instant::now();
        let outcome = self.write_locked(&mut bindings, &touched, &settled, Some(&staged));
        let locked_us = micros(t);
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                for &i in &touched {
                    self.replaced[i].stack.pop();
                }
                return Err(e);
            }
        };
        phases.write_us = outcome.write_us;
        phases.verify_us = outcome.verify_us;
        // Planning inside the lock is the rest of the locked time.
        phases.plan_us += locked_us.saturating_sub(outcome.write_us + outcome.verify_us);
        let mut warnings = Vec::new();
        if outcome.verify_fixes > 0 {
            warnings.push(format!(
                "{} slot(s) bound lazily during the switch were rebound by the verify pass",
                outcome.verify_fixes
            ));
        }
        // `touched` follows `matches` minus the state variables, as do the plan's tallies.
        let ordered: Vec<Match> = matches
            .iter()
            .filter(|m| m.role != Role::State)
            .cloned()
            .collect();
        let mut symbols = symbol_reports(&ordered, &outcome.plan);
        self.name_generations(&mut symbols);
        let slots = outcome.plan.writes.len();
        let elapsed_us = micros(t0);
        self.generations.push(Generation {
            number,
            path: path.to_string(),
            staged,
            module: module.path.clone(),
            symbols: touched,
            slots,
            elapsed_us,
        });
        tracing::info!(
            generation = number,
            path,
            module = module.path,
            slots,
            elapsed_us,
            "reloaded"
        );
        Ok(ReloadReport {
            generation: number,
            dry_run: false,
            path: path.to_string(),
            module: module.path,
            slots,
            symtab_entries: outcome.symtab,
            symbols,
            elapsed_us,
            phases,
            warnings,
        })
    }

    pub fn rollback(&mut self) -> Result<RollbackReport, ReloadError> {
        let t0 = Instant::now();
        let Some(gen) = self.generations.last().cloned() else {
            return Err(ReloadError::NothingToRollBack);
        };
        let mut bindings: Vec<Binding> = gen
            .symbols
            .iter()
            .map(|&i| self.binding(i, self.replaced[i].below_top()))
            .collect();
        let settled = settled_modules();
        dl::barrier();
        let outcome = self.write_locked(&mut bindings, &gen.symbols, &settled, None)?;
        for &i in &gen.symbols {
            self.replaced[i].stack.pop();
        }
        self.generations.pop();
        let symbols: Vec<SymbolReport> = gen
            .symbols
            .iter()
            .zip(&outcome.plan.tallies)
            .map(|(&i, t)| {
                let r = &self.replaced[i];
                report(&r.name, r.version.clone(), r.role, t)
            })
            .collect();
        let mut symbols = symbols;
        self.name_generations(&mut symbols);
        let elapsed_us = micros(t0);
        tracing::info!(
            from = gen.number,
            to = self.generation(),
            elapsed_us,
            "rolled back"
        );
        Ok(RollbackReport {
            generation: self.generation(),
            from: gen.number,
            slots: outcome.plan.writes.len(),
            symtab_entries: outcome.symtab,
            symbols,
            elapsed_us,
            warnings: Vec::new(),
        })
    }

    /// Reports name a generation's library `libfoo.so#3`, not by its staged file name.
    fn name_generations(&self, symbols: &mut [SymbolReport]) {
        for s in symbols {
            for m in &mut s.modules {
                if let Some(lib) = self
                    .staged
                    .iter()
                    .find(|l| l.path.rsplit('/').next() == Some(m.as_str()))
                {
                    *m = format!("{}#{}", lib.file_name, lib.generation);
                }
            }
        }
    }

    /// Finds the module to replace and pairs its exports with the patch's, under the list lock.
    fn select_locked(
        &self,
        patch: &PatchFile,
        want: &str,
    ) -> Result<(Layout, Vec<Match>), ReloadError> {
        phdr::with_modules_locked(|mods| {
            let layouts = modules::layouts(&mods, &self.exe, self.page);
            let mem = modules::live_memory(&layouts);
            let excluded: Vec<String> = self.staged.iter().map(|l| l.path.clone()).collect();
            let module = modules::find(&layouts, &mem, want, &excluded)?;
            let image = Image::new(&mem, module).map_err(|e| {
                ReloadError::ModuleNotFound(format!("cannot read {}: {e}", module.path))
            })?;
            let names: std::collections::HashSet<&[u8]> =
                patch.symbols.iter().map(|s| s.name.as_bytes()).collect();
            let exports = exports(&image, |n| names.contains(n));
            let matches = select(patch, module.file_name(), &exports)?;
            Ok((module.clone(), matches))
        })
    }

    fn bindings_for_dry_run(&self, module: &Layout, matches: &[Match]) -> (Vec<Binding>, ()) {
        let bindings = matches
            .iter()
            .filter(|m| m.role != Role::State)
            .map(|m| {
                let known = self
                    .find_replaced(module, m)
                    .map(|i| self.replaced[i].known.clone())
                    .unwrap_or_else(|| vec![m.old.addr]);
                // No real address can equal this, so every bound slot counts as "would write".
                Binding {
                    name: m.old.name.clone(),
                    known,
                    target: u64::MAX,
                    only_in: None,
                }
            })
            .collect();
        (bindings, ())
    }

    /// The new library's address for each match, checked to lie inside it; for a symbol seen
    /// for the first time, its generation-0 address too (recorded by `record`).
    fn resolve(
        &self,
        module: &Layout,
        matches: &[Match],
        handle: dl::Handle,
        path: &str,
    ) -> Result<Vec<u64>, ReloadError> {
        let mut out = Vec::with_capacity(matches.len());
        for m in matches {
            let addr =
                dl::symbol(handle, &m.new.name, m.new.version.as_deref()).ok_or_else(|| {
                    ReloadError::LoadFailed(format!(
                        "{path} was loaded but dlsym cannot find its {}",
                        m.new.name
                    ))
                })?;
            if module.contains(addr) {
                return Err(ReloadError::LoadFailed(format!(
                    "{path}: {} resolves back into {}",
                    m.new.name, module.path
                )));
            }
            out.push(addr);
        }
        Ok(out)
    }

    fn find_replaced(&self, module: &Layout, m: &Match) -> Option<usize> {
        self.replaced.iter().position(|r| {
            r.module_base == module.base && r.name == m.old.name && r.version == m.old.version
        })
    }

    /// Pushes generation `number`'s address onto the symbol's history, creating it if needed.
    fn record(
        &mut self,
        module: &Layout,
        m: &Match,
        number: u32,
        new_addr: u64,
    ) -> Result<usize, ReloadError> {
        let i = match self.find_replaced(module, m) {
            Some(i) => i,
            None => {
                let gen0 = if m.old.kind == SymKind::Ifunc {
                    ifunc_choice(module, m)?
                } else {
                    m.old.addr
                };
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
                });
                self.replaced.len() - 1
            }
        };
        let r = &mut self.replaced[i];
        r.stack.push((number, new_addr));
        if !r.known.contains(&new_addr) {
            r.known.push(new_addr);
        }
        Ok(i)
    }

    fn binding(&self, i: usize, target: u64) -> Binding {
        let r = &self.replaced[i];
        Binding {
            name: r.name.clone(),
            known: r.known.clone(),
            target,
            only_in: None,
        }
    }

    /// Plans and writes under the list lock: slots, then the symbol-table entries of `touched`
    /// (each bound to its binding's target), then verify rounds. `new_module` is the path of the
    /// library just loaded: bindings with `only_in: Some(0)` apply to it alone.
    fn write_locked(
        &self,
        bindings: &mut [Binding],
        touched: &[usize],
        settled: &[u64],
        new_module: Option<&str>,
    ) -> Result<Outcome, ReloadError> {
        let targets: Vec<u64> = touched
            .iter()
            .zip(bindings.iter())
            .map(|(_, b)| b.target)
            .collect();
        phdr::with_modules_locked(|mods| {
            let all = modules::layouts(&mods, &self.exe, self.page);
            // A module that appeared after `settled` was taken may still be mid-relocation (its
            // RELRO not yet read-only): leave it to the loader, which binds it through the
            // symbol table we redirect.
            let layouts: Vec<Layout> = all
                .into_iter()
                .filter(|l| settled.contains(&l.base) || Some(l.path.as_str()) == new_module)
                .collect();
            if let Some(p) = new_module {
                let base = layouts.iter().find(|l| l.path == p).map(|l| l.base);
                for b in bindings.iter_mut().filter(|b| b.only_in == Some(0)) {
                    b.only_in = Some(base.unwrap_or(u64::MAX));
                }
            }
            let mem = modules::live_memory(&layouts);
            let skip = [self_base(&layouts)];
            let plan = plan_slots(&mem, &layouts, bindings, &skip);
            let mut writes = plan.writes.clone();
            let mut symtab = 0;
            for (&i, &target) in touched.iter().zip(&targets) {
                let r = &self.replaced[i];
                if !layouts
                    .iter()
                    .any(|l| l.base == r.module_base && l.path == r.module_path)
                {
                    return Err(ReloadError::WriteFailed(format!(
                        "{} was unloaded; nothing was changed",
                        r.module_path
                    )));
                }
                let now_value = mem.u64(r.entry + 8).unwrap_or(r.orig_value);
                let now_info = mem.u8(r.entry + 4).unwrap_or(r.orig_info);
                let w = r.symtab_writes(target, now_value, now_info);
                symtab += usize::from(!w.is_empty());
                writes.extend(w);
            }
            let t = Instant::now();
            patch::apply(&writes, &layouts).map_err(|e| {
                ReloadError::WriteFailed(format!("{e}; every slot written was put back"))
            })?;
            let write_us = micros(t);
            let t = Instant::now();
            let mut verify_fixes = 0;
            for _ in 0..VERIFY_ROUNDS {
                let again = plan_slots(&mem, &layouts, bindings, &skip);
                if again.writes.is_empty() {
                    break;
                }
                verify_fixes += again.writes.len();
                // A slot that moved again between plan and write is left to the next round.
                for w in again.writes {
                    let _ = patch::apply(&[w], &layouts);
                }
            }
            Ok(Outcome {
                plan,
                write_us,
                verify_us: micros(t),
                symtab,
                verify_fixes,
            })
        })
    }
}

/// Loads the staged copy in a throwaway child first: a refusal there is the error the real load
/// would give, and a crash there is a crash the target was spared.
fn probe(staged: &str, path: &str) -> Result<(), ReloadError> {
    use crate::sys::probe::{probe_load, Probe};
    match probe_load(staged, PROBE_TIMEOUT) {
        Ok(Probe::Loaded) => Ok(()),
        Ok(Probe::Refused(e)) => Err(ReloadError::LoadFailed(format!("cannot load {path}: {}", e.replace(staged, path)))),
        Ok(Probe::Crashed(how)) => Err(ReloadError::BadElf(format!(
            "{path}: loading it crashed a throwaway copy of this process ({how}); the file is corrupt or its constructors fault, nothing was loaded here"
        ))),
        Ok(Probe::TimedOut) => Err(ReloadError::LoadFailed(format!(
            "{path}: the probe load did not finish within {} s (a constructor that blocks?); nothing was loaded; --no-probe skips the probe",
            PROBE_TIMEOUT.as_secs()
        ))),
        Err(e) => Err(ReloadError::Internal(format!("cannot start the probe load of {path}: {e}; --no-probe skips it"))),
    }
}

/// The modules loaded now. Taken before a barrier (our own `dlopen`, or `dl::barrier`), every one
/// of them has finished loading by the time the writes start.
fn settled_modules() -> Vec<u64> {
    phdr::snapshot().iter().map(|m| m.base).collect()
}

/// The implementation an IFUNC resolved to at generation 0: what `dlsym` returns through a handle
/// of the module (its own scope, its own definition first).
fn ifunc_choice(module: &Layout, m: &Match) -> Result<u64, ReloadError> {
    let h = dl::open_loaded(&module.path).ok_or_else(|| {
        ReloadError::ModuleNotFound(format!("cannot open a handle to {}", module.path))
    })?;
    let addr = dl::symbol(h, &m.old.name, m.old.version.as_deref());
    dl::release(h);
    addr.ok_or_else(|| {
        ReloadError::LoadFailed(format!(
            "dlsym cannot resolve {} in {}",
            m.old.name, module.path
        ))
    })
}

/// The agent's own module: its slots are never switched, so a broken patch cannot break the
/// agent that has to roll it back.
fn self_base(layouts: &[Layout]) -> u64 {
    let me = mem::own_address();
    layouts
        .iter()
        .find(|l| l.contains(me))
        .map_or(u64::MAX, |l| l.base)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Code => "function",
        Role::Rodata => "rodata",
        Role::State => "state",
    }
}

fn report(name: &str, version: Option<String>, role: Role, t: &super::plan::Tally) -> SymbolReport {
    SymbolReport {
        name: name.to_string(),
        version,
        kind: role_name(role).to_string(),
        slots: t.slots,
        modules: t.modules.clone(),
        lazy: t.lazy,
        other: t.other,
    }
}

fn symbol_reports(matches: &[Match], plan: &Plan) -> Vec<SymbolReport> {
    matches
        .iter()
        .filter(|m| m.role != Role::State)
        .zip(&plan.tallies)
        .map(|(m, t)| report(&m.old.name, m.old.version.clone(), m.role, t))
        .collect()
}
