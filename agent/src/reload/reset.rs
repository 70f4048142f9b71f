//! `checkpoint` and `reset`: a reload may save the replaced module's private writable data, and
//! the rollback of that generation may put it back (see `private/snapshot.rs`), with the other
//! threads parked so no thread sees half of it.

use super::error::ReloadError;
use super::modules;
use super::private::{self, Snapshot, Variable};
use super::select::{Match, Role};
use super::state::{Agent, Generation};
use crate::image::Layout;
use crate::sys::{dl, phdr};
use std::sync::Arc;

impl Agent {
    /// The replaced module's private writable data as it is now, and the live storage of the
    /// exported variables the new code shares (`matches`' state variables).
    pub(super) fn take_checkpoint(
        &self,
        module: &Layout,
        matches: &[Match],
    ) -> Result<Snapshot, ReloadError> {
        let live = self.live_identity(module);
        let variables: Vec<Variable> = matches
            .iter()
            .filter(|m| m.role == Role::State)
            .map(|m| Variable {
                // Where the reload binds the new code (a copy relocation's, if any).
                storage: dl::default_symbol(&m.new.name).unwrap_or(m.old.addr),
                vaddr: m.old.addr.wrapping_sub(module.base),
                size: m.old.size,
            })
            .collect();
        let page = self.page;
        phdr::with_modules_locked(|mods| {
            let layouts = modules::layouts(&mods, &self.exe, page);
            let mem = modules::live_memory(mods.lock(), &layouts);
            private::checkpoint(module, &live, &mem, &layouts, &variables)
        })
        .map_err(ReloadError::PrivateState)
    }

    /// What a rollback of `gen` restores: its checkpoint when `reset` asks for it, plus the
    /// report's line about it.
    pub(super) fn reset_plan(
        gen: &Generation,
        reset: bool,
    ) -> (Option<Arc<Snapshot>>, Vec<String>) {
        if !reset {
            return (None, Vec::new());
        }
        match &gen.checkpoint {
            None => (
                None,
                vec![format!(
                    "reset: generation {} was reloaded without a checkpoint, so nothing was restored",
                    gen.number
                )],
            ),
            Some(s) => (
                Some(s.clone()),
                vec![format!(
                    "reset: {} byte(s) of {}'s writable data (.data, .bss; relocated words left as they are) restored to what they held at the reload",
                    s.bytes(),
                    crate::image::file_name(&s.module)
                )],
            ),
        }
    }
}

impl Agent {
    /// Records the checkpoint with the generation the reload just made, and says so.
    pub(super) fn keep_checkpoint(
        &mut self,
        checkpoint: Option<Snapshot>,
        report: &mut hotagent_protocol::ReloadReport,
    ) {
        let (Some(s), Some(gen)) = (checkpoint, self.generations.last_mut()) else {
            return;
        };
        report.warnings.push(format!(
            "checkpoint: {} byte(s) of {}'s writable data saved; `rollback` with reset puts them back",
            s.bytes(),
            crate::image::file_name(&s.module)
        ));
        gen.checkpoint = Some(Arc::new(s));
    }
}
