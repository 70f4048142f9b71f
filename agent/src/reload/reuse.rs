//! Reuse: a reload of bytes a loaded generation already holds switches back to that copy.
//!
//! Every reload loads a fresh copy, and loaded generations stay loaded (a function pointer taken
//! while one was current can lead into it at any time). Cycling between two builds — reload,
//! rollback, reload the same file again — would then map one more copy per cycle: memory grows
//! without end, and every copy adds addresses each later plan must know. A copy of the same bytes
//! (sha256 of the staged copy, as `facts.rs` takes it) that replaced the same module is reused
//! instead: nothing new is staged or loaded, its addresses are already known.
//!
//! The generation number is still a new one (the next on the stack, like any reload): history
//! and status show the reload the operator made; labels (`libfoo.so#N`) keep naming the
//! generation that first loaded the copy, since that is what the mapping is.
//!
//! Not reused, a fresh copy loaded as before: with `force` (asked for a load), `--fresh-state`
//! (the old copy's data is not fresh), a patch with hooks (its prepare/migrate would run again
//! in a copy whose own state is stale), a variable that moves to the new build (its storage in
//! the old copy holds stale data), or probation (its guards are made for a fresh load).

use super::private::Sharing;
use super::select::{Match, Role};
use super::state::{Agent, StagedLib};
use super::PatchFile;
use crate::hooks::HOOK_NAMES;
use crate::sys::phdr;
use hotagent_protocol::ReloadRequest;

/// What decides whether a reload may reuse a loaded copy.
pub(super) struct Candidate<'a> {
    pub(super) req: &'a ReloadRequest,
    pub(super) sha: Option<&'a str>,
    pub(super) module: &'a str,
    pub(super) patch: &'a PatchFile,
    pub(super) matches: &'a [Match],
    pub(super) sharing: &'a Sharing,
}

impl Agent {
    /// The loaded copy this reload may switch to instead of loading its own, if any.
    pub(super) fn reusable(&self, c: &Candidate<'_>) -> Option<StagedLib> {
        let sha = c.sha?;
        let fresh_needed = c.req.force
            || c.req.dry_run
            || c.req.probation_ms.unwrap_or(0) > 0
            || matches!(c.sharing, Sharing::Fresh)
            || HOOK_NAMES.iter().any(|h| c.patch.exports_function(h))
            || c.matches.iter().any(|m| m.role == Role::Moved);
        if fresh_needed {
            return None;
        }
        let lib = self.staged.iter().rev().find(|l| {
            l.reusable
                .as_ref()
                .is_some_and(|(s, m)| s == sha && m == c.module)
        })?;
        // Purged or never fully loaded: the loader must still know it under the name we gave it.
        let loaded = phdr::snapshot().iter().any(|m| m.name == lib.path);
        loaded.then(|| lib.clone())
    }

    /// Records that the copy loaded from `staged` now runs as a generation replacing `module`,
    /// with bytes `sha`: a later reload of the same bytes may reuse it.
    pub(super) fn remember_bytes(&mut self, staged: &str, sha: Option<String>, module: &str) {
        let Some(sha) = sha else { return };
        if let Some(l) = self.staged.iter_mut().find(|l| l.path == staged) {
            l.reusable = Some((sha, module.to_string()));
        }
    }

    /// Where the loaded copy `staged` lies.
    pub(super) fn base_of(staged: &str) -> Option<u64> {
        phdr::snapshot()
            .iter()
            .find(|m| m.name == staged)
            .map(|m| m.base)
    }
}
