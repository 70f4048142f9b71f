//! The transaction's side of private state: the evidence it gathers from the live image before
//! anything is loaded, and the redirect it makes right after the load.

use super::error::ReloadError;
use super::modules;
use super::parsed::Parsed;
use super::private::{self, Compared, LiveIdentity, Placement, SharePlan, Sharing};
use super::select::{Match, Role};
use super::state::Agent;
use crate::image::{Layout, SymKind};
use crate::sys::code_window::CodeWindow;
use crate::sys::{dl, phdr};
use hotagent_protocol::ReloadRequest;

/// What `--changed-only` keeps of a reload.
pub(super) struct ChangedOnly {
    /// The changed exports and the state variables.
    pub matches: Vec<Match>,
    /// The report's line.
    pub line: String,
    /// New-file ranges where the switched code starts.
    pub roots: Vec<(u64, u64)>,
}

impl Agent {
    /// How the new build's private data will be handled (the same answer for a dry run).
    pub(super) fn private_sharing(
        &self,
        req: &ReloadRequest,
        module: &Layout,
        patch: &Parsed<'_>,
        changed_only: Option<&[(u64, u64)]>,
    ) -> Result<Sharing, ReloadError> {
        let live = self.live_identity(module);
        private::analyse(module, &live, patch, req.fresh_state, changed_only).map_err(|cause| {
            ReloadError::PrivateUnshareable {
                path: req.path.clone(),
                cause,
            }
        })
    }

    /// `--changed-only`: keeps the matches whose code (or read-only data) differs from what
    /// runs now, and the state variables. Nothing changed is a refusal.
    pub(super) fn changed_only(
        &self,
        req: &ReloadRequest,
        module: &Layout,
        new: &[u8],
        matches: Vec<Match>,
    ) -> Result<ChangedOnly, ReloadError> {
        // State variables are not compared: the new code is bound to the old storage anyway.
        let items: Vec<Compared> = matches
            .iter()
            .filter(|m| m.role != Role::State)
            .map(|m| Compared {
                name: m.new.name.clone(),
                old: (self.find_replaced(module, m).is_none() && m.old.kind != SymKind::Ifunc)
                    .then(|| (m.old.addr.wrapping_sub(module.base), m.old.size)),
                data: matches!(m.role, Role::Rodata | Role::Moved),
            })
            .collect();
        let live = self.live_identity(module);
        let changes = private::changes(module, &live, new, &items).map_err(|cause| {
            ReloadError::PrivateUnshareable {
                path: req.path.clone(),
                cause,
            }
        })?;
        let functions = matches.iter().filter(|m| m.role == Role::Code).count();
        let mut switched = Vec::new();
        let mut kept = Vec::new();
        let mut verdicts = changes.verdicts.iter();
        for m in matches {
            if m.role == Role::State {
                kept.push(m);
            } else if verdicts.next().is_some_and(|v| v.changed()) {
                switched.push(m.new.name.clone());
                kept.push(m);
            }
        }
        let module_file = crate::image::file_name(&module.path);
        if switched.is_empty() {
            return Err(ReloadError::NothingChanged {
                module: module_file.to_string(),
                patch: crate::image::file_name(&req.path).to_string(),
            });
        }
        let changed = kept.iter().filter(|m| m.role == Role::Code).count();
        let data = kept.iter().filter(|m| m.role == Role::Rodata).count();
        let mut line = format!(
            "--changed-only: {changed} of {functions} function{} of {module_file} changed; {} keep the running code",
            if functions == 1 { "" } else { "s" },
            functions - changed
        );
        if data > 0 {
            line.push_str(&format!(
                "; {data} read-only data object{} changed",
                if data == 1 { "" } else { "s" }
            ));
        }
        line.push_str(&format!("; switched: {}", switched.join(", ")));
        Ok(ChangedOnly {
            matches: kept,
            line,
            roots: changes.roots,
        })
    }

    /// The build-id the replaced module carries in memory, and where its mapping starts.
    pub(super) fn live_identity(&self, module: &Layout) -> LiveIdentity {
        let page = self.page;
        phdr::with_modules_locked(|mods| {
            let layouts = modules::layouts(&mods, &self.exe, page);
            let mem = modules::live_memory(mods.lock(), &layouts);
            let build_id = mods.iter().find(|m| m.base == module.base).and_then(|m| {
                private::live_build_id(
                    &mem,
                    m.base,
                    m.phdrs.iter().map(|p| (p.p_type, p.p_vaddr, p.p_memsz)),
                )
            });
            LiveIdentity {
                build_id,
                first_page: module.span().map_or(0, |(s, _)| s & !(page - 1)),
            }
        })
    }
}

/// Why the new copy's private data could not be pointed at the running module's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectFailed {
    #[error("the loader does not list the new copy")]
    NotListed,
    #[error(transparent)]
    Redirect(#[from] private::RedirectError),
}

/// Points the loaded new copy's references to its own private data at `module`'s.
pub(super) fn redirect_private(
    plan: &SharePlan,
    module: &Layout,
    handle: dl::Handle,
    new_base: Option<u64>,
) -> Result<(), RedirectFailed> {
    let new_base = new_base.ok_or(RedirectFailed::NotListed)?;
    let old_modid = dl::open_loaded(&module.path).and_then(|h| {
        let id = dl::tls_modid(h);
        dl::release(h);
        id
    });
    let at = Placement {
        new_base,
        old_base: module.base,
        new_modid: dl::tls_modid(handle),
        old_modid,
    };
    let pokes = private::pokes(plan, &at)?;
    phdr::with_modules_locked(|mods| {
        let page = crate::sys::page::page_size();
        let layouts = modules::layouts(&mods, "", page);
        let mem = modules::live_memory(mods.lock(), &layouts);
        let window_of = |a: u64, len: u64| CodeWindow::within(&layouts, a, len);
        private::apply(&pokes, &mem, window_of)
    })?;
    tracing::info!(
        module = module.path,
        writes = pokes.len(),
        "private state redirected to the running module's"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    /// A missing new copy and a refused write are distinct, and the write keeps its cause.
    #[test]
    fn redirect_failures_keep_their_cause() {
        let e = RedirectFailed::from(private::RedirectError::NoModid("old"));
        assert!(matches!(
            e,
            RedirectFailed::Redirect(private::RedirectError::NoModid("old"))
        ));
        assert_eq!(
            e.to_string(),
            "the thread-local module id of the old module is unknown"
        );
        assert_eq!(
            RedirectFailed::NotListed.to_string(),
            "the loader does not list the new copy"
        );
        assert!(RedirectFailed::NotListed.source().is_none());
    }
}
