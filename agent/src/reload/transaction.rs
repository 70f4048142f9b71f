//! The reload transaction, step by step: stage → check → probe → load → admit → share private
//! state → resolve → prepare → bind → switch (migrate inside it when the patch has one) →
//! committed → report. Each step is one method below, in that order.

use super::check::{check_parsed, map_staged, PatchFile};
use super::entries::{entry_warnings, pause_warnings};
use super::error::ReloadError;
use super::hook_failure::HookFailure;
use super::hooked::{find_hooks, hook_error, hook_timeout, let_conversions_go};
use super::lookup;
use super::modules;
use super::origin::{load_dependencies, origin_dependencies, unload};
use super::plan::{plan_slots, Binding};
use super::previous::Ownership;
use super::private;
use super::report::symbol_reports;
use super::select::{select, Match, Role};
use super::sharing::redirect_private;
use super::stage::{fresh_name, stage};
use super::state::{micros, timed, Agent, Generation, Keep, Layer, StagedLib};
use super::write::{self_base, settled_modules, Outcome, Parked, ParkedError};
use crate::convert::Class;
use crate::hooks::{Hooks, Phase, Session, Stopped, HOOK_NAMES, MIGRATE};
use crate::image::{exports, Image, Layout};
use crate::patch::Write;
use crate::sys::probe::ProbeHooks;
use crate::sys::sealed::Sealed;
use crate::sys::{dl, phdr};
use hotagent_protocol::{PauseReport, Phases, ReloadReport, ReloadRequest};
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
    ///
    /// The steps, each timed into the report's phases: stage, check, probe, then either the dry
    /// run's report or load → switch (`switch_to`).
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
            return Err(ReloadError::RelativePath { path: path.into() });
        }
        if !req.dry_run {
            self.refuse_on_probation()?;
        }
        let mut copy = timed(&mut phases.stage_us, || stage(path, source))?;
        // One pass over the bytes, in chunks (a mapping would put a big file in the target's
        // memory): the history records them, and a reload of the current bytes is no change.
        let facts = timed(&mut phases.stage_us, || super::facts::of(&copy));
        let sha = facts.as_ref().map(|f| f.sha256.clone());
        if !req.dry_run {
            self.staged_facts = facts;
        }
        let checked = timed(&mut phases.check_us, || self.check(req, &copy))?;
        if let Some(report) = self.unchanged(
            req,
            sha.as_deref(),
            &checked.module.path,
            phases.clone(),
            t0,
        ) {
            return Ok(report);
        }
        // The same bytes already loaded for this module: switched to, nothing new loaded.
        let reuse = self.reusable(&super::reuse::Candidate {
            req,
            sha: sha.as_deref(),
            module: &checked.module.path,
            patch: &checked.patch,
            matches: &checked.matches,
            sharing: &checked.sharing,
        });
        // No loaded module may carry the copy's name: dlopen would return that module instead.
        let loaded: std::collections::HashSet<String> =
            phdr::snapshot().into_iter().map(|m| m.name).collect();
        fresh_name(&mut copy, |name| loaded.contains(name))?;
        if !req.no_probe && reuse.is_none() {
            timed(&mut phases.probe_us, || {
                self.probe(req, &checked, &copy.path())
            })?;
        }
        if req.dry_run {
            drop(copy);
            return self.dry_run(req, checked, phases, t0);
        }
        // Its constructors are the first of the patch to run in the target.
        if let Err(e) = gate() {
            let _ = std::fs::remove_file(copy.path());
            return Err(e);
        }
        // Taken before our own dlopen, which waits for any load in progress elsewhere.
        let settled = settled_modules();
        let t = Instant::now();
        // The hook thread is the agent's, not one the library started: made before the undo
        // point counts the threads.
        if HOOK_NAMES.iter().any(|h| checked.patch.exports_function(h)) {
            crate::hooks::runner::ready().map_err(|e| HookFailure::CannotRun {
                cause: e,
                loaded: false,
            })?;
        }
        // Before our dlopen: the new copy's constructors may already touch shared state.
        let checkpoint = match req.checkpoint {
            true => Some(self.take_checkpoint(&checked.module, &checked.matches)?),
            false => None,
        };
        let undo = self.undo_point();
        let (handle, dep_handles) = match &reuse {
            Some(lib) => (lib.handle, Vec::new()),
            None => self.load(path, &copy, &checked)?,
        };
        phases.load_us = micros(t);
        let module = checked.module.path.clone();
        let loaded = Loaded {
            req,
            staged: reuse
                .as_ref()
                .map_or_else(|| copy.path(), |l| l.path.clone()),
            reused: reuse.is_some(),
            handle,
            checked,
            phases,
            settled,
            t0,
        };
        // Every error from here on goes through `discard_load`: nothing is left behind.
        match self.switch_to(loaded, &copy) {
            Ok(mut report) => {
                match &reuse {
                    // Loaded under /proc/self/fd/N: the number must stay ours while it lives.
                    None => {
                        self.remember_bytes(&copy.path(), sha.clone(), &module);
                        copy.keep();
                    }
                    // This reload's own copy was never loaded: closed here.
                    Some(_) => drop(copy),
                }
                if let Some(current) = self.generations.last_mut() {
                    current.sha256 = sha;
                }
                self.keep_checkpoint(checkpoint, &mut report);
                Ok(report)
            }
            Err(e) if reuse.is_some() => {
                // The reused copy stays loaded, as it was: only the records go back.
                self.abandon_guards();
                self.restore_records(undo);
                Err(e)
            }
            Err(e) => {
                self.abandon_guards();
                let e = self.discard_load(undo, handle, copy, path, e);
                unload(dep_handles);
                Err(e)
            }
        }
    }

    /// Everything decided from the files and the live image before anything is loaded: the
    /// module, the symbols, the private state, the dependencies. The dry run decides the same.
    fn check(&self, req: &ReloadRequest, copy: &Sealed) -> Result<Checked, ReloadError> {
        let path = req.path.as_str();
        let map = map_staged(path, copy)?;
        let (patch, parsed) = check_parsed(path, map.bytes())?;
        let want = req
            .replace
            .clone()
            .or_else(|| patch.soname.clone())
            .unwrap_or_else(|| patch.file_name.clone());
        let (module, mut matches, mut notes) = self.select_locked(&patch, &want)?;
        // Filtered before anything else looks at the matches: dry run and reload alike.
        let mut changed_roots = None;
        if req.changed_only {
            let only = self.changed_only(req, &module, parsed.bytes, matches)?;
            matches = only.matches;
            notes.push(only.line);
            changed_roots = Some(only.roots);
        }
        self.refuse_copied(&matches, path)?;
        if req.probation_ms.unwrap_or(0) > 0 && patch.exports_function(MIGRATE) {
            return Err(HookFailure::MigrateOnProbation { path: path.into() }.into());
        }
        let keeps = self.entry_aliases(&patch, &module, &matches)?;
        // The lookups `resolve` makes after the load, answered from the file: a dry run, with
        // or without the probe, refuses what the load would.
        lookup::check_lookups(&patch, &matches, path)?;
        if req.dry_run && req.no_probe {
            notes.extend(lookup::unseen_without_probe(&matches));
            let hooks: Vec<&str> = HOOK_NAMES
                .into_iter()
                .filter(|h| patch.exports_function(h))
                .collect();
            if !hooks.is_empty() {
                notes.push(format!(
                    "its hooks ({}) were not run: they run in the probe's copy or in the reload itself",
                    hooks.join(", ")
                ));
            }
        }
        let sharing = match self.private_sharing(req, &module, &parsed, changed_roots.as_deref()) {
            // A migrate hook takes over state whose layout changed: the new copy keeps its own.
            Err(why) if why.is_private_state() && patch.exports_function(MIGRATE) => {
                notes.push(format!(
                    "the new build keeps private state of its own, for hotagent_migrate to fill from hotagent_previous_symbol: {why}"
                ));
                private::Sharing::Fresh
            }
            other => other?,
        };
        notes.extend(sharing.note(&module.path));
        // Found through $ORIGIN as the patch's own folder, loaded first (probe and target).
        let deps = origin_dependencies(path, parsed.elf())?;
        Ok(Checked {
            patch,
            module,
            matches,
            keeps,
            notes,
            sharing,
            deps,
        })
    }

    /// The throwaway load in a forked copy: the load, the lookups, prepare and migrate.
    fn probe(&self, req: &ReloadRequest, c: &Checked, staged: &str) -> Result<(), ReloadError> {
        let lookups: Vec<_> = c
            .matches
            .iter()
            .map(|m| (m.new.name.clone(), m.new.version.clone()))
            .collect();
        let run = self.probe_hooks(&c.patch, &c.module, staged, &req.path);
        let hooks = ProbeHooks {
            run: &run,
            each: hook_timeout(req.hook_timeout_ms),
        };
        let with_hooks = HOOK_NAMES.iter().any(|h| c.patch.exports_function(h));
        probe(
            staged,
            &req.path,
            &lookups,
            &c.deps,
            &c.module,
            with_hooks.then_some(&hooks),
        )
        .map_err(|e| e.with_origin_hint(c.patch.origin_in_run_path))
    }

    /// The dry run's report: the plan against the live image, nothing written.
    fn dry_run(
        &mut self,
        req: &ReloadRequest,
        c: Checked,
        mut phases: Phases,
        t0: Instant,
    ) -> Result<ReloadReport, ReloadError> {
        let bindings = self.bindings_for_dry_run(&c.module, &c.matches)?;
        let plan = timed(&mut phases.plan_us, || {
            phdr::with_modules_locked(|mods| {
                let layouts = modules::layouts(&mods, &self.exe, self.page);
                let mem = modules::live_memory(mods.lock(), &layouts);
                plan_slots(&mem, &layouts, &bindings, &[self_base(&layouts)])
            })
        });
        let mut symbols = symbol_reports(&c.matches, &plan);
        let entries = timed(&mut phases.entries_us, || {
            self.dry_run_entries(&c.module, &c.matches, req.got_only, &c.keeps)
        });
        for (s, e) in symbols.iter_mut().zip(entries) {
            s.entries = e;
        }
        self.name_generations(&mut symbols);
        let mut warnings = c.notes;
        warnings.extend(entry_warnings(&symbols));
        Ok(ReloadReport {
            generation: self.generation() + 1,
            dry_run: true,
            path: req.path.clone(),
            module: c.module.path,
            slots: plan.writes.len(),
            symtab_entries: c.matches.iter().filter(|m| m.role != Role::State).count(),
            symbols,
            elapsed_us: micros(t0),
            phases,
            pause: Default::default(),
            warnings,
            probation_ms: 0,
            persisted: None,
            deferred: false,
            unchanged: false,
        })
    }

    /// Loads the staged copy (its `$ORIGIN` dependencies first) into the target.
    fn load(
        &self,
        path: &str,
        copy: &Sealed,
        c: &Checked,
    ) -> Result<(dl::Handle, Vec<dl::Handle>), ReloadError> {
        let staged = copy.path();
        if !copy.still_ours() {
            return Err(ReloadError::CopyClosed {
                path: path.into(),
                fd: staged.trim_start_matches("/proc/self/fd/").into(),
            });
        }
        let dep_handles = load_dependencies(path, &c.deps)?;
        match dl::open_now_local(&staged) {
            Ok(h) => Ok((h, dep_handles)),
            Err(e) => {
                unload(dep_handles);
                Err(ReloadError::LoaderRefused {
                    path: path.into(),
                    loader: e.to_string().replace(&staged, path),
                    origin: c.patch.origin_in_run_path,
                })
            }
        }
    }

    /// Everything a reload does once the new library is loaded: admit it, point its private
    /// data at the running copy's, resolve, prepare, switch, commit, report. Any error it returns
    /// is taken back by the caller (`discard_load` restores what this recorded and unloads the
    /// library), so a step added here needs no cleanup of its own beyond undoing its own writes
    /// to the target.
    fn switch_to(
        &mut self,
        loaded: Loaded<'_>,
        copy: &Sealed,
    ) -> Result<ReloadReport, ReloadError> {
        let Loaded {
            req,
            staged,
            reused,
            handle,
            checked: c,
            mut phases,
            mut settled,
            t0,
        } = loaded;
        let path = req.path.as_str();
        let new_base = match reused {
            // Admitted, and its private data pointed at the running copy's, when first loaded.
            true => Agent::base_of(&staged),
            false => self.admit(path, &staged, handle, &c.patch, copy)?,
        };
        settled.extend(new_base);
        let number = self.generation() + 1;
        if !reused {
            timed(&mut phases.load_us, || {
                self.share_private(path, &c, handle, new_base)
            })?;
        }

        let t = Instant::now();
        let resolved = self.resolve(&c.module, &c.matches, handle, path)?;
        self.own_moved(&c, &resolved, new_base, &settled)?;
        phases.plan_us += micros(t);
        let (mut session, classes) = match self.prepare(req, &c, handle, &staged, number)? {
            Some((s, classes)) => (Some(s), classes),
            None => (None, Vec::new()),
        };
        if let Some(s) = &session {
            phases.prepare_us = s.micros(Phase::Prepare);
        }

        let t = Instant::now();
        let (resolved, methods) = self.through_entry_thunks(&c, resolved, &classes)?;
        if !classes.is_empty() && req.probation_ms.unwrap_or(0) > 0 {
            return Err(HookFailure::ConversionOnProbation {
                path: path.into(),
                classes: classes.len(),
            }
            .into());
        }
        let marker = match req.probation_ms.unwrap_or(0) {
            0 => None,
            _ => super::probation::crash_marker(path, &c.module.path, req.persist),
        };
        let (resolved, guards) = self.guard(
            req.probation_ms,
            &c.patch.file_name,
            &c.module,
            &c.matches,
            resolved,
            new_base,
            number,
            marker,
        )?;
        let guarded = guards.as_ref().map(|g| g.code.clone());
        let (touched, bindings) = self.bind(req, &c, &resolved, guarded.as_deref(), new_base)?;
        phases.plan_us += micros(t);

        let t = Instant::now();
        let parked = !classes.is_empty()
            || session
                .as_ref()
                .is_some_and(|s| s.hooks().migrate.is_some());
        let (outcome, pause) = if parked {
            let extra = classes
                .iter()
                .flat_map(|k| k.upgrade_writes())
                .map(|w| Write::slot(w.addr, w.expected, w.value))
                .collect();
            // Conversions wait until no thread is left inside an old method (see convert::once).
            for k in &classes {
                k.hold();
            }
            let switched = self.switch_parked(
                &bindings,
                &touched,
                &settled,
                Parked {
                    session: session.as_mut(),
                    phase: Phase::Migrate,
                    extra,
                    restore: None,
                },
            );
            let old: Vec<(u64, u64)> = methods.iter().map(|m| m.old).collect();
            let_conversions_go(&classes, &old, switched.is_ok());
            let (outcome, pause) = self.parked_result(switched, &touched, session.as_ref())?;
            phases.migrate_us = session.as_ref().map_or(0, |s| s.micros(Phase::Migrate));
            phases.write_us = outcome.write_us.saturating_sub(phases.migrate_us);
            phases.entries_us = 0;
            (outcome, pause)
        } else {
            let outcome = match self.write_locked(&bindings, &touched, &settled) {
                Ok(o) => o,
                Err(e) => {
                    self.pop_layers(&touched);
                    return Err(e);
                }
            };
            phases.write_us = outcome.write_us;
            let (pause, entries_us) = self.converge_entries();
            phases.entries_us = entries_us;
            (outcome, pause)
        };
        phases.verify_us = outcome.verify_us;
        // Planning inside the lock is the rest of the locked time.
        phases.plan_us += micros(t).saturating_sub(
            outcome.write_us + outcome.verify_us + phases.entries_us + phases.migrate_us,
        );
        // Switched: from here on nothing is refused.
        if let Some(s) = session.as_mut() {
            let _ = s.run(Phase::Committed);
            phases.committed_us = s.micros(Phase::Committed);
        }
        let hooks = session.as_ref().map(|s| *s.hooks()).unwrap_or_default();
        drop(session);
        Ok(self.report(
            req,
            c,
            Made {
                staged,
                number,
                touched,
                hooks,
                classes,
                methods,
                outcome,
                pause,
                guards,
            },
            phases,
            t0,
        ))
    }

    /// Checks what the loader made of the new copy and records it; returns where it is loaded.
    fn admit(
        &mut self,
        path: &str,
        staged: &str,
        handle: dl::Handle,
        patch: &PatchFile,
        copy: &Sealed,
    ) -> Result<Option<u64>, ReloadError> {
        // Belt and braces for the name check above: never hand back an older generation.
        if !copy.still_ours() {
            return Err(ReloadError::CopyClosedWhileLoading {
                path: path.into(),
                fd: staged.trim_start_matches("/proc/self/fd/").into(),
            });
        }
        if self.staged.iter().any(|l| l.handle == handle) {
            return Err(ReloadError::EarlierModule {
                path: path.into(),
                staged: staged.into(),
            });
        }
        self.staged.push(StagedLib {
            path: staged.to_string(),
            handle,
            generation: self.generation() + 1,
            file_name: patch.file_name.clone(),
            reusable: None,
        });
        // The new library is fully loaded once dlopen returns: ours to write into.
        Ok(phdr::snapshot()
            .iter()
            .find(|m| m.name == staged)
            .map(|m| m.base))
    }

    /// Before any switch makes the new code reachable. A failure leaves the copy loaded and
    /// nothing switched: the error returns from here, like a failed dlsym below.
    fn share_private(
        &self,
        path: &str,
        c: &Checked,
        handle: dl::Handle,
        new_base: Option<u64>,
    ) -> Result<(), ReloadError> {
        if let private::Sharing::Shared(plan) = &c.sharing {
            redirect_private(plan, &c.module, handle, new_base).map_err(|cause| {
                ReloadError::PrivateUnredirectable {
                    path: path.into(),
                    module: c.module.path.clone(),
                    cause,
                }
            })?;
        }
        Ok(())
    }

    /// A variable the new build takes over (it grew) must be its own in its own code before
    /// migrate fills it: the loader bound the new copy's references to the running module's
    /// storage, first in the lookup scope. No other code reaches the new copy yet, so this
    /// needs no stop.
    fn own_moved(
        &self,
        c: &Checked,
        resolved: &[u64],
        new_base: Option<u64>,
        settled: &[u64],
    ) -> Result<(), ReloadError> {
        let Some(base) = new_base else {
            return Ok(());
        };
        let bindings: Vec<Binding> = c
            .matches
            .iter()
            .zip(resolved)
            .filter(|(m, _)| m.role == Role::Moved)
            .map(|(m, own)| Binding {
                name: m.new.name.clone(),
                known: vec![
                    dl::default_symbol(&m.new.name).unwrap_or(m.old.addr),
                    m.old.addr,
                ],
                target: *own,
                only_in: Some(base),
            })
            .collect();
        if bindings.is_empty() {
            return Ok(());
        }
        self.write_locked(&bindings, &[], settled).map(|_| ())
    }

    /// Opens the hooks' session and runs prepare, when the patch has hooks; returns it with the
    /// classes prepare registered for conversion.
    fn prepare(
        &mut self,
        req: &ReloadRequest,
        c: &Checked,
        handle: dl::Handle,
        staged: &str,
        number: u32,
    ) -> Result<Option<(Session, Vec<&'static Class>)>, ReloadError> {
        let hooks = find_hooks(&c.patch, handle);
        if !hooks.any() {
            return Ok(None);
        }
        let (ctx, registered) =
            self.hook_context(&c.module, number, self.generation(), staged, &req.path);
        let mut session =
            Session::open(ctx, hooks, hook_timeout(req.hook_timeout_ms)).map_err(|e| {
                HookFailure::CannotRun {
                    cause: e,
                    loaded: true,
                }
            })?;
        if let Err(why) = session.run(Phase::Prepare) {
            return Err(self.refused_by_hook(&session, why));
        }
        let classes = registered.lock().map(|c| c.clone()).unwrap_or_default();
        Ok(Some((session, classes)))
    }

    /// Old methods of a converted class are switched to an entry thunk that converts an old
    /// object before the new method runs: every call that reaches the old method's symbol, GOT
    /// slot or entry — a non-virtual call, a `-Bsymbolic` library's own — converts first.
    /// Returns the addresses to switch to, and where each such method's old and new code lie.
    fn through_entry_thunks(
        &self,
        c: &Checked,
        mut resolved: Vec<u64>,
        classes: &[&'static Class],
    ) -> Result<(Vec<u64>, Vec<MethodCode>), ReloadError> {
        let mut methods = Vec::new();
        for class in classes {
            for i in 0..class.methods() {
                let old = class.old_method(i);
                for (m, addr) in c.matches.iter().zip(resolved.iter_mut()) {
                    let current = self
                        .find_replaced(&c.module, m)
                        .map(|k| self.replaced[k].current());
                    if m.role != Role::Code || (m.old.addr != old && current != Some(old)) {
                        continue;
                    }
                    methods.push(MethodCode {
                        old: (m.old.addr, m.old.addr + m.old.size.max(1)),
                        new: (*addr, *addr + m.new.size.max(1)),
                    });
                    *addr = class
                        .entry_thunk(*addr)
                        .map_err(|e| HookFailure::NoEntryThunk { cause: e })?;
                }
            }
        }
        Ok((resolved, methods))
    }

    /// A hook's refusal; a hook that hangs keeps its library mapped (its thread is inside).
    fn refused_by_hook(&mut self, session: &Session, why: Stopped) -> ReloadError {
        if Session::abandoned(why) {
            self.keep_loaded = Some(format!(
                "its {} still runs on an abandoned thread",
                match why {
                    Stopped::TimedOut { phase, .. } => phase.hook_name(),
                    _ => "hook",
                }
            ));
        }
        hook_error(session, why, "nothing was switched")
    }

    /// What a parked switch's failure means: the layers recorded for it taken off, the error.
    fn parked_result(
        &mut self,
        switched: Result<(Outcome, PauseReport), ParkedError>,
        touched: &[usize],
        session: Option<&Session>,
    ) -> Result<(Outcome, PauseReport), ReloadError> {
        let e = match switched {
            Ok(done) => return Ok(done),
            Err(ParkedError::Write(e)) => e,
            Err(ParkedError::NoStop(cause)) => ReloadError::NotParked { cause },
            Err(ParkedError::Hook(why)) => match session {
                Some(s) => self.refused_by_hook(s, why),
                None => ReloadError::HookWithoutSession,
            },
        };
        self.pop_layers(touched);
        Err(e)
    }

    fn pop_layers(&mut self, touched: &[usize]) {
        for &i in touched {
            self.replaced[i].stack.pop();
        }
    }

    /// Records the new generation's layer of every switched symbol; returns them (indices into
    /// `replaced`) and the bindings to write: theirs first, then the state variables'.
    fn bind(
        &mut self,
        req: &ReloadRequest,
        c: &Checked,
        resolved: &[u64],
        guarded: Option<&[Option<u64>]>,
        new_base: Option<u64>,
    ) -> Result<(Vec<usize>, Vec<Binding>), ReloadError> {
        let gen0s = c
            .matches
            .iter()
            .map(|m| {
                if m.role == Role::State {
                    Ok(0)
                } else {
                    self.gen0_of(&c.module, m)
                }
            })
            .collect::<Result<Vec<u64>, ReloadError>>()?;
        let mut touched = Vec::new();
        let mut state_bindings = Vec::new();
        for (k, (((m, new_addr), gen0), keep)) in c
            .matches
            .iter()
            .zip(resolved)
            .zip(gen0s)
            .zip(c.keeps.iter().cloned())
            .enumerate()
        {
            match m.role {
                Role::State => state_bindings.push((m, *new_addr)),
                _ => touched.push(self.record(
                    &c.module,
                    m,
                    Layer {
                        addr: *new_addr,
                        got_only: req.got_only,
                        keep,
                        probation: guarded.and_then(|g| g[k]),
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
        Ok((touched, bindings))
    }

    /// The new generation, recorded, and its report.
    fn report(
        &mut self,
        req: &ReloadRequest,
        c: Checked,
        made: Made,
        phases: Phases,
        t0: Instant,
    ) -> ReloadReport {
        let Made {
            staged,
            number,
            touched,
            hooks,
            classes,
            methods,
            outcome,
            pause,
            guards,
        } = made;
        let path = req.path.as_str();
        let mut warnings = c.notes;
        for k in &classes {
            warnings.push(format!(
                "objects of {} become {} on their first call ({} virtual methods; converted lazily, each once)",
                k.old().name,
                k.new_vtable().name,
                k.methods()
            ));
        }
        warnings.extend(outcome.warnings());
        // `touched` follows `matches` minus the state variables, as do the plan's tallies.
        let ordered: Vec<Match> = c
            .matches
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
        let owns = match (&c.sharing, ordered.iter().any(|m| m.role == Role::Moved)) {
            (private::Sharing::Fresh, _) => Ownership::All,
            (_, true) => Ownership::Names(
                ordered
                    .iter()
                    .filter(|m| m.role == Role::Moved)
                    .map(|m| m.new.name.clone())
                    .collect(),
            ),
            _ => Ownership::Nothing,
        };
        self.generations.push(Generation {
            number,
            path: path.to_string(),
            staged,
            module: c.module.path.clone(),
            symbols: touched,
            slots,
            elapsed_us,
            layout: c.module.clone(),
            owns,
            hooks,
            classes,
            methods,
            checkpoint: None,
            probation: Agent::start_probation(guards),
            sha256: None,
        });
        tracing::info!(
            generation = number,
            path,
            module = c.module.path,
            slots,
            elapsed_us,
            "reloaded"
        );
        ReloadReport {
            generation: number,
            dry_run: false,
            path: path.to_string(),
            module: c.module.path,
            slots,
            symtab_entries: outcome.symtab,
            symbols,
            elapsed_us,
            phases,
            pause,
            warnings,
            probation_ms: self
                .generations
                .last()
                .and_then(|g| g.probation.as_ref())
                .map_or(0, |p| p.duration_ms()),
            persisted: None,
            deferred: false,
            unchanged: false,
        }
    }

    /// A variable whose size changed cannot move if the executable holds a copy of it: the
    /// program was linked against its old size and reads it there.
    fn refuse_copied(&self, matches: &[Match], path: &str) -> Result<(), ReloadError> {
        let exe = self.exe_range();
        for m in matches.iter().filter(|m| m.role == Role::Moved) {
            let copied = dl::default_symbol(&m.new.name)
                .zip(exe)
                .is_some_and(|(at, (lo, hi))| at >= lo && at < hi);
            if copied {
                return Err(ReloadError::CopyRelocated {
                    symbol: m.new.name.clone(),
                    path: path.into(),
                    old: m.old.size,
                    new: m.new.size,
                });
            }
        }
        Ok(())
    }

    /// Finds the module to replace and pairs its exports with the patch's, under the list lock.
    fn select_locked(
        &self,
        patch: &PatchFile,
        want: &str,
    ) -> Result<(Layout, Vec<Match>, Vec<String>), ReloadError> {
        phdr::with_modules_locked(|mods| {
            let layouts = modules::layouts(&mods, &self.exe, self.page);
            let mem = modules::live_memory(mods.lock(), &layouts);
            let excluded: Vec<String> = self
                .staged
                .iter()
                .map(|l| l.path.clone())
                .chain(self.refused.iter().map(|r| r.staged.clone()))
                .collect();
            let module = modules::find(&layouts, &mem, &mut self.names(), want, &excluded)?;
            let image = Image::new(&mem, module).map_err(|e| {
                ReloadError::ModuleNotFound(format!("cannot read {}: {e}", module.path))
            })?;
            let names: std::collections::HashSet<&[u8]> =
                patch.symbols.iter().map(|s| s.name.as_bytes()).collect();
            let exports = exports(&image, |n| names.contains(n));
            let (matches, warnings) =
                select(patch, module.file_name(), &exports, self.before_main)?;
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

/// What the checks decided, before anything is loaded.
struct Checked {
    patch: PatchFile,
    module: Layout,
    matches: Vec<Match>,
    keeps: Vec<Vec<Keep>>,
    notes: Vec<String>,
    sharing: private::Sharing,
    deps: Vec<String>,
}

/// Where a converted class's method lies, `[start, end)`, in the old and in the new build:
/// no thread may be mid-way in the one being left when objects start to convert.
#[derive(Debug, Clone, Copy)]
pub(super) struct MethodCode {
    pub(super) old: (u64, u64),
    pub(super) new: (u64, u64),
}

/// What the switch made: the generation's parts the report records.
struct Made {
    staged: String,
    number: u32,
    touched: Vec<usize>,
    hooks: Hooks,
    classes: Vec<&'static Class>,
    methods: Vec<MethodCode>,
    outcome: Outcome,
    pause: PauseReport,
    guards: Option<super::probation::Guards>,
}

/// What the reload has in hand once the new library is loaded.
struct Loaded<'a> {
    req: &'a ReloadRequest,
    staged: String,
    /// `staged` is a loaded generation's copy, reused (see `reuse.rs`).
    reused: bool,
    handle: dl::Handle,
    checked: Checked,
    phases: Phases,
    settled: Vec<u64>,
    t0: Instant,
}

/// Loads the staged copy in a throwaway child first: a refusal there is the error the real load
/// would give, and a crash there is a crash the target was spared.
fn probe(
    staged: &str,
    path: &str,
    lookups: &[(String, Option<String>)],
    deps: &[String],
    module: &Layout,
    hooks: Option<&ProbeHooks<'_>>,
) -> Result<(), ReloadError> {
    use crate::sys::probe::{probe_load, Probe};
    let each = hooks.map_or(0, |h| h.each.as_millis());
    let asked = |i: usize| {
        lookups
            .get(i)
            .map_or(("?", None), |(n, v)| (n.as_str(), v.as_deref()))
    };
    match probe_load(
        staged,
        lookups,
        &|a| module.contains(a),
        deps,
        PROBE_TIMEOUT,
        hooks,
    ) {
        Ok(Probe::Loaded) => Ok(()),
        Ok(Probe::NotFound(i)) => Err(lookup::not_found(path, asked(i).0, asked(i).1)),
        Ok(Probe::ResolvesBack(i)) => Err(lookup::resolves_back(path, asked(i).0, &module.path)),
        Ok(Probe::Refused(e)) => Err(ReloadError::LoaderRefused {
            path: path.into(),
            loader: e.replace(staged, path),
            origin: false,
        }),
        Ok(Probe::Crashed(how)) => Err(ReloadError::ProbeCrashed {
            path: path.into(),
            how,
        }),
        Ok(Probe::TimedOut) => Err(ReloadError::ProbeTimedOut {
            path: path.into(),
            secs: PROBE_TIMEOUT.as_secs(),
        }),
        Ok(Probe::LoaderBusy) => Err(ReloadError::LoaderBusy {
            path: path.into(),
            secs: PROBE_TIMEOUT.as_secs(),
        }),
        Ok(Probe::HookRefused(reason)) => Err(HookFailure::ProbeRefused { reason }.into()),
        Ok(Probe::HookCrashed(hook, how)) => Err(HookFailure::ProbeCrashed {
            path: path.into(),
            hook,
            how,
        }
        .into()),
        Ok(Probe::HookHung(hook)) => Err(HookFailure::ProbeHung {
            path: path.into(),
            hook,
            ms: each,
        }
        .into()),
        Err(e) => Err(ReloadError::ProbeUnstartable {
            path: path.into(),
            cause: super::error::IoErrno::of(&e),
        }),
    }
}
