//! Start-up application: before `main`, the journal's active entries for this executable are
//! applied, each as a normal reload (no probe: no fork in a constructor). Each skipped entry
//! costs the target one warning line on stderr, never more; without a journal the whole cost is
//! one failed `opendir`.
//!
//! Crash-loop rules: an entry marked crashed (probation rolled it back) or failed is never
//! applied again; an attempt marker (pid and start time) is left while an entry is applied, so
//! one left by a process that is gone means applying it killed that process: it is then marked
//! failed.

use super::journal;
use crate::reload::{Agent, ReloadError};
use crate::sys::{process, raw};
use hotagent_protocol::journal::{
    check_trusted, file_sha256, process_start, Entry, EntryState, JournalError,
};
use hotagent_protocol::ReloadRequest;
use std::path::Path;
use std::sync::Mutex;

/// Probation for a start-up application whose entry names none.
const STARTUP_PROBATION_MS: u64 = 30_000;

/// Applies the journal's entries for this executable. Never fails: every problem is a warning.
pub fn apply_at_startup(agent: &Mutex<Agent>) {
    let Some(j) = journal() else { return };
    let listed = match j.list() {
        Ok(l) => l,
        // No journal: the usual case, and the whole cost is the one failed open (no second
        // look with `exists`: this runs in every process of a host using /etc/ld.so.preload).
        Err(hotagent_protocol::journal::JournalError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return
        }
        Err(e) => {
            tracing::warn!("hotagent: persisted patches not applied: {e}");
            return;
        }
    };
    let mut agent = agent.lock().unwrap_or_else(|p| p.into_inner());
    let exe = agent.exe().to_string();
    let mine: Vec<(String, Result<Entry, _>)> = listed
        .into_iter()
        .filter(|(_, e)| e.as_ref().map_or(true, |e| e.exe == exe))
        .collect();
    if mine.is_empty() {
        return;
    }
    let euid = raw::geteuid();
    let journal_dir = j.dir.clone();
    for dir in [&journal_dir, &j.entries_dir()] {
        if let Err(e) = check_trusted(dir, euid) {
            tracing::warn!(
                "hotagent: ignoring the persisted patches in {}: {e}",
                journal_dir.display()
            );
            return;
        }
    }
    let exe_build_id = super::exe_build_id(&agent);
    for (id, entry) in mine {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("hotagent: persisted patch skipped: {e}");
                continue;
            }
        };
        if entry.exe_build_id != exe_build_id {
            // Recorded for another build of this executable: not ours to apply.
            tracing::debug!(id, "persisted patch for another build of {exe}");
            continue;
        }
        if let Err(why) = apply_one(&mut agent, &id, &entry) {
            tracing::warn!(
                "hotagent: persisted patch {} for {} skipped: {why}",
                entry.patch,
                entry.module
            );
        }
    }
}

/// Why a persisted patch was not applied at start-up (the one warning line it gets).
#[derive(Debug, thiserror::Error)]
pub enum SkipReason {
    #[error("no state folder")]
    NoStateFolder,
    /// The entry or the patch file is not trusted, or the journal could not record the attempt.
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("it crashed on probation and was rolled back; it is never applied again (hotctl forget removes it)")]
    Crashed,
    #[error("its start-up application failed earlier ({0}); it is never applied again")]
    FailedEarlier(String),
    #[error("applying it at start-up killed process {0}; marked failed, never applied again")]
    KilledAnEarlierStart(u32),
    #[error("{path} is another build now (build-id {now}, recorded {recorded})")]
    OtherModuleBuild {
        path: String,
        now: String,
        recorded: String,
    },
    #[error("the patch file changed since it was recorded")]
    PatchChanged,
    #[error("cannot read the patch file: {0}")]
    PatchUnreadable(#[source] std::io::Error),
    #[error("the reload was refused: {0}; marked failed, never applied again")]
    Refused(#[source] ReloadError),
}

/// Applies one entry, or says why not (the caller's one warning line).
fn apply_one(agent: &mut Agent, id: &str, entry: &Entry) -> Result<(), SkipReason> {
    let j = journal().ok_or(SkipReason::NoStateFolder)?;
    let euid = raw::geteuid();
    check_trusted(&j.entry_path(id), euid)?;
    match &entry.state {
        EntryState::Active => {}
        EntryState::Crashed => return Err(SkipReason::Crashed),
        EntryState::Failed { reason } => return Err(SkipReason::FailedEarlier(reason.clone())),
    }
    if let Some((pid, start)) = j.attempt(id) {
        let alive = pid != process::pid() && process_start(pid) == Some(start);
        if !alive {
            let why = format!("applying it at start-up killed process {pid}");
            let _ = j.mark_failed(id, &why);
            j.end_attempt(id);
            return Err(SkipReason::KilledAnEarlierStart(pid));
        }
    }
    let module = match agent.identify(&entry.module) {
        Ok(m) => m,
        Err(e) => {
            // A library loaded later (dlopen) is not there yet: nothing to do at start-up.
            tracing::debug!(
                module = entry.module,
                "persisted patch's module not loaded: {e}"
            );
            return Ok(());
        }
    };
    if module.build_id != entry.module_build_id {
        return Err(SkipReason::OtherModuleBuild {
            path: module.path,
            now: module.build_id.unwrap_or_else(|| "none".into()),
            recorded: entry.module_build_id.as_deref().unwrap_or("none").into(),
        });
    }
    let patch = Path::new(&entry.patch);
    check_trusted(patch, euid)?;
    match file_sha256(patch) {
        Ok(h) if h == entry.sha256 => {}
        Ok(_) => return Err(SkipReason::PatchChanged),
        Err(e) => return Err(SkipReason::PatchUnreadable(e)),
    }
    let me = process::pid();
    let start = process_start(me).unwrap_or(0);
    j.begin_attempt(id, me, start)?;
    let req = request(entry);
    agent.set_before_main(entry.deferred);
    let result = agent.reload(&req, None, &mut || Ok(()));
    agent.set_before_main(false);
    crate::control::history::startup(agent, &entry.patch, &result);
    j.end_attempt(id);
    match result {
        Ok(report) => {
            agent.mark_applied_at_startup(report.generation);
            tracing::info!(
                generation = report.generation,
                patch = entry.patch,
                "persisted patch applied at start-up"
            );
            Ok(())
        }
        Err(e) => {
            let _ = j.mark_failed(id, &format!("the reload was refused: {e}"));
            Err(SkipReason::Refused(e))
        }
    }
}

fn request(entry: &Entry) -> ReloadRequest {
    ReloadRequest {
        path: entry.patch.clone(),
        replace: Some(entry.module.clone()),
        dry_run: false,
        no_probe: true,
        got_only: false,
        // A deferred patch could not share the running state; before main there is none worth
        // keeping, so the new build keeps its own.
        fresh_state: entry.deferred,
        changed_only: false,
        checkpoint: false,
        deadline_ms: None,
        confirm: false,
        settle_ms: None,
        hook_timeout_ms: None,
        probation_ms: Some(entry.probation_ms.unwrap_or(STARTUP_PROBATION_MS)),
        persist: false,
        on_next_start: false,
        // The journal is replayed as recorded: each entry was a generation when it ran.
        force: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    /// The warning line reads as before, and a refused reload stays a `ReloadError` (its code
    /// tells a refusal that may lift at the next start from a broken file).
    #[test]
    fn skip_reasons_keep_their_cause() {
        let refused = SkipReason::Refused(ReloadError::NothingToRollBack);
        assert!(refused
            .to_string()
            .starts_with("the reload was refused: nothing to roll back"));
        assert!(refused
            .to_string()
            .ends_with("; marked failed, never applied again"));
        let src = refused.source().unwrap().downcast_ref::<ReloadError>();
        assert_eq!(src, Some(&ReloadError::NothingToRollBack));
        let killed = SkipReason::KilledAnEarlierStart(42);
        assert_eq!(
            killed.to_string(),
            "applying it at start-up killed process 42; marked failed, never applied again"
        );
        assert!(killed.source().is_none());
    }
}
