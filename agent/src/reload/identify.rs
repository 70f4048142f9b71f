//! Who a module is, for the persistence journal: the name a later start finds it by (its soname,
//! else its file name) and its build-id, read from the mapped image.

use super::error::ReloadError;
use super::modules;
use super::private;
use super::state::Agent;
use crate::sys::phdr;

/// A loaded module as the journal keys it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleId {
    pub path: String,
    /// Its soname, else its file name.
    pub name: String,
    /// Its GNU build-id in hex.
    pub build_id: Option<String>,
}

impl Agent {
    /// The loaded module `want` names (a path, soname or file name, as `reload --replace` takes).
    pub fn identify(&self, want: &str) -> Result<ModuleId, ReloadError> {
        phdr::with_modules_locked(|mods| {
            let layouts = modules::layouts(&mods, &self.exe, self.page);
            let mem = modules::live_memory(mods.lock(), &layouts);
            let excluded: Vec<String> = self.staged.iter().map(|l| l.path.clone()).collect();
            let mut names = self.names();
            let module = match layouts.iter().find(|l| l.path == want) {
                Some(l) => l,
                None => modules::find(&layouts, &mem, &mut names, want, &excluded)?,
            };
            let soname = names.of(&mem, module).soname;
            let build_id = mods.iter().find(|m| m.base == module.base).and_then(|m| {
                private::live_build_id(
                    &mem,
                    m.base,
                    m.phdrs.iter().map(|p| (p.p_type, p.p_vaddr, p.p_memsz)),
                )
            });
            Ok(ModuleId {
                path: module.path.clone(),
                name: soname.unwrap_or_else(|| module.file_name().to_string()),
                build_id: build_id.map(|b| hotagent_protocol::journal::hex(&b)),
            })
        })
    }

    /// The executable's build-id in hex.
    pub fn exe_build_id(&self) -> Option<String> {
        phdr::with_modules_locked(|mods| {
            let layouts = modules::layouts(&mods, &self.exe, self.page);
            let mem = modules::live_memory(mods.lock(), &layouts);
            let main = mods.first().filter(|m| m.name.is_empty())?;
            private::live_build_id(
                &mem,
                main.base,
                main.phdrs.iter().map(|p| (p.p_type, p.p_vaddr, p.p_memsz)),
            )
            .map(|b| hotagent_protocol::journal::hex(&b))
        })
    }

    pub fn exe(&self) -> &str {
        &self.exe
    }

    /// The module names cache; taken under the loader's list lock, never the other way round.
    pub(super) fn names(&self) -> std::sync::MutexGuard<'_, super::names::ModuleNames> {
        self.module_names.lock().unwrap_or_else(|p| p.into_inner())
    }
}
