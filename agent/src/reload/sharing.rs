//! The transaction's side of private state: the evidence it gathers from the live image before
//! anything is loaded, and the redirect it makes right after the load.

use super::error::ReloadError;
use super::modules;
use super::private::{self, LiveIdentity, Placement, SharePlan, Sharing};
use super::state::Agent;
use crate::image::Layout;
use crate::sys::sealed::Sealed;
use crate::sys::{dl, phdr};
use hotagent_protocol::ReloadRequest;

impl Agent {
    /// How the new build's private data will be handled (the same answer for a dry run).
    pub(super) fn private_sharing(
        &self,
        req: &ReloadRequest,
        module: &Layout,
        copy: &Sealed,
    ) -> Result<Sharing, ReloadError> {
        let live = self.live_identity(module);
        let map = copy.map().map_err(|e| {
            ReloadError::Internal(format!(
                "cannot map the private copy of {} to compare its private data: {}",
                req.path,
                std::io::Error::from_raw_os_error(e)
            ))
        })?;
        private::analyse(module, &live, map.bytes(), req.fresh_state)
            .map_err(|e| ReloadError::PrivateState(format!("{}: {e}", req.path)))
    }

    /// The build-id the replaced module carries in memory, and where its mapping starts.
    fn live_identity(&self, module: &Layout) -> LiveIdentity {
        let page = self.page;
        phdr::with_modules_locked(|mods| {
            let layouts = modules::layouts(&mods, &self.exe, page);
            let mem = modules::live_memory(&layouts);
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
        let page = crate::sys::prot::page_size();
        let layouts = modules::layouts(&mods, "", page);
        let mem = modules::live_memory(&layouts);
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
