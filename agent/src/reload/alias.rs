//! Aliases: one body of code exported under several names (`pthread_mutex_lock` and
//! `__pthread_mutex_lock`, `sigaction` and `__sigaction`, `mmap` and `mmap64`).
//!
//! A patch that wraps one name and calls the other reaches the old code through its entry. If
//! that entry jumps to the new code, the wrapper calls itself forever. So the decision is made
//! from the patch file alone — its imports, and what each resolves to in the process now — the
//! same way for a dry run and a reload: an old entry the patch reaches under another name keeps
//! its bytes (its GOT slots still switch), and the report says which alias is why.
//!
//! The same look-up finds a patch that replaces one of the agent's own lifeline functions under
//! another name (`__libc_malloc`, `__mmap`): refused like the name itself.

use super::check::PatchFile;
use super::error::ReloadError;
use super::select::{Match, Role, NEVER_REPLACED};
use super::state::{Agent, Keep};
use crate::image::Layout;
use crate::sys::dl;

impl Agent {
    /// For each of `matches` (in order), the old entries the patch calls under another name.
    /// Refuses a match that is one of the agent's lifeline functions under another name.
    pub(super) fn entry_aliases(
        &self,
        patch: &PatchFile,
        module: &Layout,
        matches: &[Match],
    ) -> Result<Vec<Vec<Keep>>, ReloadError> {
        self.refuse_lifeline_aliases(module, matches)?;
        // What each import binds to: the loader resolves the patch's references through the
        // global scope, as `dlsym(RTLD_DEFAULT)` does.
        let imports: Vec<(&str, u64)> = patch
            .imports
            .iter()
            .filter_map(|i| {
                let at = dl::symbol(dl::default_scope(), &i.name, i.version.as_deref())
                    .or_else(|| dl::default_symbol(&i.name))?;
                Some((i.name.as_str(), at))
            })
            .collect();
        Ok(matches
            .iter()
            .map(|m| {
                if m.role != Role::Code {
                    return Vec::new();
                }
                // The entries this reload would make jump: every one the symbol has had.
                let sites: Vec<u64> = match self.find_replaced(module, m) {
                    Some(i) => self.replaced[i].code.iter().map(|c| c.addr).collect(),
                    None => self.gen0_of(module, m).into_iter().collect(),
                };
                let mut keep: Vec<Keep> = Vec::new();
                for &(name, at) in &imports {
                    if name != m.old.name
                        && sites.contains(&at)
                        && !keep.iter().any(|k| k.site == at)
                    {
                        keep.push(Keep {
                            site: at,
                            alias: name.to_string(),
                        });
                    }
                }
                keep
            })
            .collect())
    }

    /// A function the agent cannot live without, reached under another name, is refused like
    /// the name itself: its code is the same.
    fn refuse_lifeline_aliases(
        &self,
        module: &Layout,
        matches: &[Match],
    ) -> Result<(), ReloadError> {
        let code: Vec<(&Match, u64)> = matches
            .iter()
            .filter(|m| m.role == Role::Code)
            .filter_map(|m| Some((m, self.gen0_of(module, m).ok()?)))
            .collect();
        if code.is_empty() {
            return Ok(());
        }
        // What the module defines of them does not change while it is loaded: one `dlsym` per
        // name per module, not per reload.
        let own = self.names().lifeline(module, || lifeline_defined(module));
        let mut refusal = None;
        'outer: for (name, at) in own {
            for (m, gen0) in &code {
                if *gen0 == at && m.old.name != name {
                    refusal = Some(ReloadError::AgentDependsOnAlias {
                        symbol: m.old.name.clone(),
                        module: module.file_name().into(),
                        alias: name.to_string(),
                    });
                    break 'outer;
                }
            }
        }
        refusal.map_or(Ok(()), Err)
    }
}

/// Why an entry keeps its bytes for an alias, as reports say it.
pub(super) fn keep_note(name: &str, alias: &str) -> String {
    format!(
        "the patch calls {alias}, an alias of {name}: its entry keeps its bytes so that call \
         reaches the previous code"
    )
}

/// The functions the agent depends on that `module` itself defines, with their addresses.
fn lifeline_defined(module: &Layout) -> Vec<(&'static str, u64)> {
    let Some(h) = dl::open_loaded(&module.path) else {
        return Vec::new();
    };
    let own = NEVER_REPLACED
        .iter()
        .filter_map(|&name| Some((name, dl::symbol(h, name, None)?)))
        // Only the module's own definition counts (a handle's scope includes its dependencies).
        .filter(|&(_, at)| module.contains(at))
        .collect();
    dl::release(h);
    own
}
