//! The transaction's side of private state: the evidence it gathers from the live image before
//! anything is loaded, and the redirect it makes right after the load.

use super::error::ReloadError;
use super::modules;
use super::parsed::Parsed;
use super::private::{self, Compared, LiveIdentity, Placement, SharePlan, Sharing};
use super::select::{Match, Role};
use super::state::Agent;
use crate::image::{Layout, SymKind};
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
        private::analyse(module, &live, patch, req.fresh_state, changed_only)
            .map_err(|e| ReloadError::PrivateState(format!("{}: {e}", req.path)))
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
        let changes = private::changes(module, &live, new, &items)
            .map_err(|e| ReloadError::PrivateState(format!("{}: {e}", req.path)))?;
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
            return Err(ReloadError::NoCommonSymbols(format!(
                "nothing changed: every function of {module_file} is identical in {} (references compared by what they point at); nothing was loaded",
                crate::image::file_name(&req.path)
            )));
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

/// Points the loaded new copy's references to its own private data at `module`'s.
pub(super) fn redirect_private(
    plan: &SharePlan,
    module: &Layout,
    handle: dl::Handle,
    new_base: Option<u64>,
) -> Result<(), String> {
    let new_base = new_base.ok_or("the loader does not list the new copy")?;
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
    let pokes = private::pokes(plan, &at).map_err(|e| e.to_string())?;
    phdr::with_modules_locked(|mods| {
        let page = crate::sys::page::page_size();
        let layouts = modules::layouts(&mods, "", page);
        let mem = modules::live_memory(mods.lock(), &layouts);
        let prot_of = |a: u64| {
            layouts
                .iter()
                .find(|l| l.contains(a))
                .and_then(|l| l.protection(a))
                .map(|p| p.to_mprotect())
        };
        private::apply(&pokes, &mem, prot_of)
    })
    .map_err(|e| e.to_string())?;
    tracing::info!(
        module = module.path,
        writes = pokes.len(),
        "private state redirected to the running module's"
    );
    Ok(())
}
