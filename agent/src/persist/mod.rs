//! Persistence (issue 11 part 3): a reload with `persist` is recorded in the journal
//! (`hotagent_protocol::journal`), and later starts of the same executable apply it before `main`
//! (`startup.rs`). With `on_next_start`, a patch refused live for a reason only a fresh start
//! lifts is recorded alone.

mod startup;

pub use startup::apply_at_startup;

use crate::reload::{Agent, Gate, ReloadError};
use crate::sys::raw;
use hotagent_protocol::journal::{self, Entry, EntryState, Journal, JournalError};
use hotagent_protocol::{Phases, ReloadReport, ReloadRequest};
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The state folder, resolved once at the agent's start: the program may change its
/// environment later, and every write must go where the start-up read looked.
static STATE_DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

fn state_dir() -> Option<&'static PathBuf> {
    STATE_DIR
        .get_or_init(|| journal::state_dir_from_env(raw::geteuid()))
        .as_ref()
}

pub(crate) fn journal() -> Option<Journal> {
    state_dir().map(|d| Journal::new(d.clone()))
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("no state folder: set HOTAGENT_STATE_DIR (or HOME)")]
    NoStateDir,
    #[error("cannot identify the replaced module: {0}")]
    Module(#[from] ReloadError),
    #[error("cannot hash {0}: {1}")]
    Hash(String, std::io::Error),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The executable's build-id, read once (it cannot change).
fn exe_build_id(agent: &Agent) -> Option<String> {
    static ID: OnceLock<Option<String>> = OnceLock::new();
    ID.get_or_init(|| agent.exe_build_id()).clone()
}

/// The journal entry a reload of `patch` replacing `module` (a path or name) makes.
fn entry_for(
    agent: &Agent,
    patch: &str,
    module: &str,
    req: &ReloadRequest,
    deferred: bool,
) -> Result<Entry, PersistError> {
    let m = agent.identify(module)?;
    let sha256 = journal::file_sha256(std::path::Path::new(patch))
        .map_err(|e| PersistError::Hash(patch.to_string(), e))?;
    Ok(Entry {
        exe: agent.exe().to_string(),
        exe_build_id: exe_build_id(agent),
        module: m.name,
        module_build_id: m.build_id,
        patch: patch.to_string(),
        sha256,
        recorded_at: journal::now_secs(),
        probation_ms: req.probation_ms,
        deferred,
        state: EntryState::Active,
    })
}

fn record(
    agent: &Agent,
    req: &ReloadRequest,
    module: &str,
    deferred: bool,
) -> Result<PathBuf, PersistError> {
    let j = journal().ok_or(PersistError::NoStateDir)?;
    let entry = entry_for(agent, &req.path, module, req, deferred)?;
    Ok(j.record(&entry)?)
}

/// A reload as the dispatcher runs it: `Agent::reload`, then, with `persist`, the journal.
pub fn reload(
    agent: &mut Agent,
    req: &ReloadRequest,
    source: Option<i32>,
    gate: Gate<'_>,
) -> Result<ReloadReport, ReloadError> {
    let result = agent.reload(req, source, gate);
    if !req.persist || req.dry_run {
        return result;
    }
    match result {
        Ok(mut report) => {
            match record(agent, req, &report.module, false) {
                Ok(path) => report.persisted = Some(path.display().to_string()),
                Err(e) => {
                    tracing::warn!("hotagent: {} applied but not persisted: {e}", req.path);
                    report
                        .warnings
                        .push(format!("applied, but not recorded in the journal: {e}"));
                }
            }
            Ok(report)
        }
        Err(e) if req.on_next_start && deferrable(&e) => defer(agent, req, source, e),
        Err(e) => Err(e),
    }
}

/// The refusals a fresh start may lift: a mutable variable that changed size without a migrate
/// hook, private state laid out differently. Whether it does is then tried (`defer`).
fn deferrable(e: &ReloadError) -> bool {
    e.code() == hotagent_protocol::ErrorCode::IncompatibleSymbol
}

/// Records a patch refused live for the next start, when a dry run under the start-up rules
/// (the new build owns its data, a resized variable moves) passes; otherwise the refusal stands.
fn defer(
    agent: &mut Agent,
    req: &ReloadRequest,
    source: Option<i32>,
    refusal: ReloadError,
) -> Result<ReloadReport, ReloadError> {
    let t0 = std::time::Instant::now();
    let mut trial = req.clone();
    trial.dry_run = true;
    trial.no_probe = true;
    trial.fresh_state = true;
    agent.set_before_main(true);
    let tried = agent.reload(&trial, source, &mut || Ok(()));
    agent.set_before_main(false);
    let plan = match tried {
        Ok(plan) => plan,
        Err(e) => {
            tracing::debug!("not deferrable either: {e}");
            return Err(refusal);
        }
    };
    let path = record(agent, req, &plan.module, true).map_err(|e| ReloadError::NotRecorded {
        refusal: Box::new(refusal.clone()),
        failure: e.to_string(),
    })?;
    Ok(ReloadReport {
        generation: agent.generation(),
        dry_run: false,
        path: req.path.clone(),
        module: plan.module,
        slots: 0,
        symtab_entries: 0,
        symbols: Vec::new(),
        elapsed_us: t0.elapsed().as_micros().min(u128::from(u64::MAX)) as u64,
        phases: Phases::default(),
        pause: Default::default(),
        warnings: vec![format!(
            "not applied live: {refusal}; recorded for the next start, where the new build keeps its own data"
        )],
        probation_ms: 0,
        persisted: Some(path.display().to_string()),
        deferred: true,
        unchanged: false,
    })
}

/// The crash marker of the generation being loaded from `patch_path` to replace `module_path`,
/// when the journal holds an entry for this executable, module and patch, or will (`persist`:
/// the reload records it once it succeeds): the path the probation handler creates with one raw
/// `open(O_CREAT)`, its folder made now. Computed beforehand, never in a handler; call it
/// outside the loader's lock.
pub fn crash_marker(patch_path: &str, module_path: &str, persist: bool) -> Option<CString> {
    let j = journal()?;
    let agent = Agent::new();
    let m = agent.identify(module_path).ok()?;
    let id = journal::entry_id(
        agent.exe(),
        exe_build_id(&agent).as_deref(),
        &m.name,
        m.build_id.as_deref(),
        patch_path,
    );
    if !persist && !j.entry_path(&id).exists() {
        return None;
    }
    j.create_dirs().ok()?;
    CString::new(j.crash_marker(&id).into_os_string().into_encoded_bytes()).ok()
}
