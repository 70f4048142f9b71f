//! Taking back a load that a reload refused after `dlopen`.
//!
//! Every failure between the load and the switch (a lookup the new library does not answer, a
//! symbol that resolves back into the old module, a write that had to be undone, and whatever
//! later step returns an error) goes through [`Agent::discard_load`]: nothing was switched to the
//! new copy, so its code is unreachable and it is unloaded; its memfd is closed, and no
//! generation number or `name#N` label is used up. The one thing the agent cannot take back is a
//! thread the library's constructors started: unloading would pull its code from under it, so
//! such a load stays mapped, as does one the loader will not unload (`RTLD_NODELETE`,
//! `DF_1_NODELETE`, C++ `STB_GNU_UNIQUE` symbols). Either is then reported as what it is — a
//! refused load still mapped — never as a generation.

use super::error::ReloadError;
use super::state::{Agent, Replaced};
use crate::sys::sealed::Sealed;
use crate::sys::{dl, phdr};
use std::collections::HashSet;

/// What the agent's state was before the load, to go back to if the reload is refused.
pub(super) struct UndoPoint {
    replaced: Vec<Replaced>,
    staged: usize,
    threads: HashSet<u32>,
}

/// A load that was refused but stays in the process.
#[derive(Debug, Clone)]
pub(super) struct RefusedLoad {
    /// `/proc/self/fd/N`: the name the loader knows it by (its memfd stays open).
    pub(super) staged: String,
    /// The file the operator named.
    pub(super) path: String,
    pub(super) file_name: String,
    /// Why the reload was refused, and why it could not be unloaded.
    pub(super) reason: String,
}

/// The threads of this process now.
fn threads() -> HashSet<u32> {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Agent {
    /// Taken right before the new library is loaded.
    pub(super) fn undo_point(&self) -> UndoPoint {
        UndoPoint {
            replaced: self.replaced.clone(),
            staged: self.staged.len(),
            threads: threads(),
        }
    }

    /// The agent's records as they were at `undo`, nothing unloaded: for a reload that reused a
    /// loaded copy (see `reuse.rs`), which stays loaded as it was.
    pub(super) fn restore_records(&mut self, undo: UndoPoint) {
        self.replaced = undo.replaced;
        self.staged.truncate(undo.staged);
    }

    /// Undoes a load refused with `e`: the agent's records as they were at `undo`, the library
    /// unloaded and its memfd closed when that is safe, else kept and named as a refused load.
    /// Returns `e`, with what stays behind said.
    pub(super) fn discard_load(
        &mut self,
        undo: UndoPoint,
        handle: dl::Handle,
        copy: Sealed,
        path: &str,
        e: ReloadError,
    ) -> ReloadError {
        let staged = copy.path();
        let file_name = crate::image::file_name(path).to_string();
        self.replaced = undo.replaced;
        self.staged.truncate(undo.staged);
        let started: Vec<u32> = threads().difference(&undo.threads).copied().collect();
        let why_kept = if let Some(why) = self.keep_loaded.take() {
            why
        } else if started.is_empty() {
            dl::close(handle);
            // A module the loader keeps is still in its list (under the name we gave it).
            let kept = phdr::snapshot().iter().any(|m| m.name == staged);
            if !kept {
                tracing::info!(path, "refused load unloaded");
                return e;
            }
            "the loader would not unload it (RTLD_NODELETE or C++ STB_GNU_UNIQUE symbols)"
                .to_string()
        } else {
            format!(
                "its constructors started thread(s) {started:?}, which would crash if it were unloaded"
            )
        };
        // Loaded under /proc/self/fd/N: the number must stay ours while the module lives.
        copy.keep();
        let e = ReloadError::KeptMapped {
            refusal: Box::new(e),
            kept_because: why_kept,
        };
        self.refused.push(RefusedLoad {
            staged,
            path: path.to_string(),
            file_name,
            reason: e.to_string(),
        });
        tracing::info!(path, "refused load stays mapped: {e}");
        e
    }
}
