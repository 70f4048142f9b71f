//! The reload transaction, step by step: stage → check → probe → load → plan/write/verify.

use super::check::{check_staged, PatchFile};
use super::entries::{entry_warnings, pause_warnings};
use super::error::ReloadError;
use super::lookup;
use super::modules;
use super::origin::{load_dependencies, origin_dependencies, unload};
use super::plan::{plan_slots, Binding};
use super::private;
use super::report::symbol_reports;
use super::select::{select, Match, Role};
use super::sharing::redirect_private;
use super::stage::{fresh_name, stage};
use super::state::{micros, Agent, Generation, Keep, Layer, StagedLib};
use super::write::{self_base, settled_modules};
use crate::image::{exports, Image, Layout};
use crate::sys::sealed::Sealed;
use crate::sys::{dl, phdr};
use hotagent_protocol::{Phases, ReloadReport, ReloadRequest};
use std::time::Instant;

/// How long the throwaway probe load may take.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The point of no return, asked right before a reload or rollback changes the target: it fails
/// (with [`ReloadError::Abandoned`]) when the request's deadline passed or its client left or did
/// not confirm, and nothing has changed then.
pub type Gate<'a> = &'a mut dyn FnMut() -> Result<(), ReloadError>;

impl Agent {
    /// Reloads as `req` says; `gate` is asked once everything is checked, before the new library
    /// is loaded into the target (a dry run never asks it). `source` is the patch file the client
    /// opened and passed (read instead of opening `req.path`, which names it).
    pub fn reload(
        &mut self,
        req: &ReloadRequest,
        source: Option<i32>,
        gate: Gate<'_>,
    ) -> Result<ReloadReport, ReloadError> {
        let t0 = Instant::now();
        let mut phases = Phases::default();
        let path = req.path.as_str();
        if !path.starts_with('/') {
            return Err(ReloadError::FileUnreadable(format!(
                "{path}: the path must be absolute (hotctl resolves it)"
            )));
        }
        let t = Instant::now();
        let mut copy = stage(path, source)?;
        phases.stage_us = micros(t);
        let t = Instant::now();
        let patch = check_staged(path, &copy)?;
        let want = req
            .replace
            .clone()
            .or_else(|| patch.soname.clone())
            .unwrap_or_else(|| patch.file_name.clone());
        let (module, mut matches, mut notes) = self.select_locked(&patch, &want)?;
        // Filtered before anything else looks at the matches: dry run and reload alike.
        let mut changed_roots = None;
        if req.changed_only {
            let only = self.changed_only(req, &module, &copy, matches)?;
            matches = only.matches;
            notes.push(only.line);
            changed_roots = Some(only.roots);
        }
        let keeps = self.entry_aliases(&patch, &module, &matches)?;
        // The lookups `resolve` makes after the load, answered from the file: a dry run, with
        // or without the probe, refuses what the load would.
        lookup::check_lookups(&patch, &matches, path)?;
        if req.dry_run && req.no_probe {
            notes.extend(lookup::unseen_without_probe(&matches));
        }
        let sharing = self.private_sharing(req, &module, &copy, changed_roots.as_deref())?;
        notes.extend(sharing.note(&module.path));
        // Found through $ORIGIN as the patch's own folder, loaded first (probe and target).
        let deps = origin_dependencies(path, &copy)?;
        phases.check_us = micros(t);

        // No loaded module may carry the copy's name: dlopen would return that module instead.
        let loaded: std::collections::HashSet<String> =
            phdr::snapshot().into_iter().map(|m| m.name).collect();
        fresh_name(&mut copy, |name| loaded.contains(name))?;
        let staged = copy.path();

        if !req.no_probe {
            let t = Instant::now();
            let lookups: Vec<_> = matches
                .iter()
                .map(|m| (m.new.name.clone(), m.new.version.clone()))
                .collect();
            let verdict = probe(&staged, path, &lookups, &deps, &module);
            phases.probe_us = micros(t);
            verdict.map_err(|e| with_origin_hint(e, &patch))?;
        }
        if req.dry_run {
            drop(copy);
            let t = Instant::now();
            let bindings = self.bindings_for_dry_run(&module, &matches)?;
            let plan = phdr::with_modules_locked(|mods| {
                let layouts = modules::layouts(&mods, &self.exe, self.page);
                let mem = modules::live_memory(&layouts);
                plan_slots(&mem, &layouts, &bindings, &[self_base(&layouts)])
            });
            phases.plan_us = micros(t);
            let mut symbols = symbol_reports(&matches, &plan);
            let t = Instant::now();
            let entries = self.dry_run_entries(&module, &matches, req.got_only, &keeps);
            for (s, e) in symbols.iter_mut().zip(entries) {
                s.entries = e;
            }
            phases.entries_us = micros(t);
            self.name_generations(&mut symbols);
            let mut warnings = notes;
            warnings.extend(entry_warnings(&symbols));
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
                pause: Default::default(),
                warnings,
            });
        }

        // Its constructors are the first of the patch to run in the target.
        if let Err(e) = gate() {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
        // Taken before our own dlopen, which waits for any load in progress elsewhere.
        let settled = settled_modules();
        let t = Instant::now();
        if !copy.still_ours() {
            return Err(ReloadError::Internal(format!(
                "the program closed the agent's private copy of {path} (descriptor {}); nothing was loaded",
                staged.trim_start_matches("/proc/self/fd/")
            )));
        }
        let undo = self.undo_point();
        let dep_handles = load_dependencies(path, &deps)?;
        let handle = dl::open_now_local(&staged).map_err(|e| {
            with_origin_hint(
                ReloadError::LoadFailed(format!(
                    "cannot load {path}: {}",
                    e.replace(&staged, path)
                )),
                &patch,
            )
        });
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                unload(dep_handles);
                return Err(e);
            }
        };
        let loaded = Loaded {
            req,
            path,
            patch: &patch,
            staged,
            handle,
            module,
            matches,
            keeps,
            notes,
            phases,
            settled,
            sharing,
            t0,
            t,
        };
        // Every error from here on goes through `discard_load`: nothing is left behind.
        match self.switch_to(loaded, &copy) {
            Ok(report) => {
                // Loaded under /proc/self/fd/N: the number must stay ours while the module lives.
                copy.keep();
                Ok(report)
            }
            Err(e) => {
                let e = self.discard_load(undo, handle, copy, path, e);
                unload(dep_handles);
                Err(e)
            }
        }
    }

    /// Everything a reload does once the new library is loaded: checks what the loader made of
    /// it, then switches. Any error it returns is taken back by the caller (`discard_load`
    /// restores what this recorded and unloads the library), so a step added here needs no
    /// cleanup of its own beyond undoing its own writes to the target.
    fn switch_to(
        &mut self,
        loaded: Loaded<'_>,
        copy: &Sealed,
    ) -> Result<ReloadReport, ReloadError> {
        let Loaded {
            req,
            path,
            patch,
            staged,
            handle,
            module,
            matches,
            keeps,
            notes,
            mut phases,
            mut settled,
            sharing,
            t0,
            t,
        } = loaded;
        // Belt and braces for the name check above: never hand back an older generation.
        if !copy.still_ours() {
            return Err(ReloadError::LoadFailed(format!(
                "{path} closed the agent's private copy of it while it loaded (descriptor {}, a constructor that closes descriptors it did not open?): its code is loaded but nothing was switched",
                staged.trim_start_matches("/proc/self/fd/")
            )));
        }
        if self.staged.iter().any(|l| l.handle == handle) {
            return Err(ReloadError::LoadFailed(format!(
                "cannot load {path}: the loader returned an earlier generation's module for {staged}; nothing was switched"
            )));
        }
        self.staged.push(StagedLib {
            path: staged.clone(),
            handle,
            generation: self.generation() + 1,
            file_name: patch.file_name.clone(),
        });
        // The new library is fully loaded once dlopen returns: ours to write into.
        let new_base = phdr::snapshot()
            .iter()
            .find(|m| m.name == staged)
            .map(|m| m.base);
        settled.extend(new_base);
        // Before any switch makes the new code reachable. A failure leaves the copy loaded and
        // nothing switched: the error returns from here, like a failed dlsym below.
        if let private::Sharing::Shared(plan) = &sharing {
            redirect_private(plan, &module, handle, new_base).map_err(|e| {
                ReloadError::LoadFailed(format!(
                    "{path} was loaded but its private data could not be pointed at {}'s: {e}; nothing was switched",
                    module.path
                ))
            })?;
        }
        phases.load_us = micros(t);

        let t = Instant::now();
        let number = self.generation() + 1;
        let resolved = self.resolve(&module, &matches, handle, path)?;
        let gen0s = matches
            .iter()
            .map(|m| {
                if m.role == Role::State {
                    Ok(0)
                } else {
                    self.gen0_of(&module, m)
                }
            })
            .collect::<Result<Vec<u64>, ReloadError>>()?;
        let mut touched = Vec::new();
        let mut state_bindings = Vec::new();
        for (((m, new_addr), gen0), keep) in matches.iter().zip(&resolved).zip(gen0s).zip(keeps) {
            match m.role {
                Role::State => state_bindings.push((m, *new_addr)),
                _ => touched.push(self.record(
                    &module,
                    m,
                    Layer {
                        addr: *new_addr,
                        got_only: req.got_only,
                        keep,
                    },
                    gen0,
                )),
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
                only_in: Some(new_base.unwrap_or(u64::MAX)),
            });
        }
        phases.plan_us = micros(t);

        let t = Instant::now();
        let outcome = self.write_locked(&bindings, &touched, &settled);
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
        let (pause, entries_us) = self.converge_entries();
        phases.entries_us = entries_us;
        let mut warnings = notes;
        warnings.extend(outcome.warnings());
        // `touched` follows `matches` minus the state variables, as do the plan's tallies.
        let ordered: Vec<Match> = matches
            .iter()
            .filter(|m| m.role != Role::State)
            .cloned()
            .collect();
        let mut symbols = symbol_reports(&ordered, &outcome.plan);
        for (s, e) in symbols.iter_mut().zip(self.entry_reports(&touched)) {
            s.entries = e;
        }
        warnings.extend(entry_warnings(&symbols));
        warnings.extend(pause_warnings(&pause));
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
            pause,
            warnings,
        })
    }

    /// Finds the module to replace and pairs its exports with the patch's, under the list lock.
    fn select_locked(
        &self,
        patch: &PatchFile,
        want: &str,
    ) -> Result<(Layout, Vec<Match>, Vec<String>), ReloadError> {
        phdr::with_modules_locked(|mods| {
            let layouts = modules::layouts(&mods, &self.exe, self.page);
            let mem = modules::live_memory(&layouts);
            let excluded: Vec<String> = self
                .staged
                .iter()
                .map(|l| l.path.clone())
                .chain(self.refused.iter().map(|r| r.staged.clone()))
                .collect();
            let module = modules::find(&layouts, &mem, want, &excluded)?;
            let image = Image::new(&mem, module).map_err(|e| {
                ReloadError::ModuleNotFound(format!("cannot read {}: {e}", module.path))
            })?;
            let names: std::collections::HashSet<&[u8]> =
                patch.symbols.iter().map(|s| s.name.as_bytes()).collect();
            let exports = exports(&image, |n| names.contains(n));
            let (matches, warnings) = select(patch, module.file_name(), &exports)?;
            Ok((module.clone(), matches, warnings))
        })
    }

    /// What a dry run plans with: each symbol bound to an address no slot can hold, so every
    /// slot bound to the symbol counts as one the reload would write.
    fn bindings_for_dry_run(
        &self,
        module: &Layout,
        matches: &[Match],
    ) -> Result<Vec<Binding>, ReloadError> {
        matches
            .iter()
            .filter(|m| m.role != Role::State)
            .map(|m| {
                let known = match self.find_replaced(module, m) {
                    Some(i) => self.replaced[i].known.clone(),
                    None => vec![self.gen0_of(module, m)?],
                };
                Ok(Binding {
                    name: m.old.name.clone(),
                    known,
                    target: u64::MAX,
                    only_in: None,
                })
            })
            .collect()
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
            let addr = dl::symbol(handle, &m.new.name, m.new.version.as_deref())
                .ok_or_else(|| lookup::not_found(path, &m.new.name, m.new.version.as_deref()))?;
            if module.contains(addr) {
                return Err(lookup::resolves_back(path, &m.new.name, &module.path));
            }
            out.push(addr);
        }
        Ok(out)
    }
}

/// What the reload has in hand once the new library is loaded.
struct Loaded<'a> {
    req: &'a ReloadRequest,
    path: &'a str,
    patch: &'a PatchFile,
    staged: String,
    handle: dl::Handle,
    module: Layout,
    matches: Vec<Match>,
    keeps: Vec<Vec<Keep>>,
    notes: Vec<String>,
    phases: Phases,
    settled: Vec<u64>,
    sharing: private::Sharing,
    t0: Instant,
    t: Instant,
}

/// A load that failed for want of a dependency may be `$ORIGIN`'s doing: say so.
fn with_origin_hint(e: ReloadError, patch: &PatchFile) -> ReloadError {
    match e {
        ReloadError::LoadFailed(msg) if patch.origin_in_run_path => ReloadError::LoadFailed(
            format!("{msg} ($ORIGIN in its run path was taken as the patch file's folder)"),
        ),
        e => e,
    }
}

/// Loads the staged copy in a throwaway child first: a refusal there is the error the real load
/// would give, and a crash there is a crash the target was spared.
fn probe(
    staged: &str,
    path: &str,
    lookups: &[(String, Option<String>)],
    deps: &[String],
    module: &Layout,
) -> Result<(), ReloadError> {
    use crate::sys::probe::{probe_load, Probe};
    let asked = |i: usize| {
        lookups
            .get(i)
            .map_or(("?", None), |(n, v)| (n.as_str(), v.as_deref()))
    };
    match probe_load(staged, lookups, &|a| module.contains(a), deps, PROBE_TIMEOUT) {
        Ok(Probe::Loaded) => Ok(()),
        Ok(Probe::NotFound(i)) => Err(lookup::not_found(path, asked(i).0, asked(i).1)),
        Ok(Probe::ResolvesBack(i)) => Err(lookup::resolves_back(path, asked(i).0, &module.path)),
        Ok(Probe::Refused(e)) => Err(ReloadError::LoadFailed(format!("cannot load {path}: {}", e.replace(staged, path)))),
        Ok(Probe::Crashed(how)) => Err(ReloadError::BadElf(format!(
            "{path}: loading it crashed a throwaway copy of this process ({how}); the file is corrupt or its constructors fault, nothing was loaded here"
        ))),
        Ok(Probe::TimedOut) => Err(ReloadError::LoadFailed(format!(
            "{path}: the probe load did not finish within {} s (a constructor that blocks?); nothing was loaded; --no-probe skips the probe",
            PROBE_TIMEOUT.as_secs()
        ))),
        Ok(Probe::LoaderBusy) => Err(ReloadError::LoadFailed(format!(
            "{path}: for {} s, every throwaway copy of this process was born with the loader locked by another thread (a dlopen, dlclose or dl_iterate_phdr in progress at each fork); nothing was loaded; try again, or --no-probe skips the probe",
            PROBE_TIMEOUT.as_secs()
        ))),
        Err(e) => Err(ReloadError::Internal(format!("cannot start the probe load of {path}: {e}; --no-probe skips it"))),
    }
}
