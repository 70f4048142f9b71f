//! The reload's side of the patch-author API: which hooks a patch has, the context they get, and
//! what a hook's refusal means for the reload or rollback (`include/hotagent.h`, `crate::hooks`).
//!
//! Where each hook runs: prepare once the new library is loaded and resolved, before anything is
//! planned (threads running; it may register class converters); migrate inside the switch's
//! stop, first thing, before any slot or entry is written (`write::switch_parked`); committed
//! after the switch, threads running (it cannot refuse); unmigrate inside the rollback's stop.
//! The probe runs prepare and migrate in its throwaway copy first, so a hook that crashes or
//! hangs every time is caught there.

use super::check::PatchFile;
use super::error::ReloadError;
use super::previous::file_symbols;
use super::state::Agent;
use crate::hooks::{ClassRequest, Context, HookFn, Hooks, Phase, Session, Stopped, Symbol};
use crate::image::Layout;
use crate::sys::{dl, phdr};
use std::time::Duration;

/// How long each hook may run unless the request says otherwise.
pub(super) const HOOK_TIMEOUT: Duration = Duration::from_secs(5);

pub fn hook_timeout(ms: Option<u64>) -> Duration {
    ms.map_or(HOOK_TIMEOUT, Duration::from_millis)
}

/// The hooks the patch file exports as functions, looked up in the loaded library.
pub(super) fn find_hooks(patch: &PatchFile, handle: dl::Handle) -> Hooks {
    Hooks::find(|name| HookFn::find(handle, name, patch.exports_function(name)))
}

/// A refusal by a hook, worded for the operator.
pub(super) fn hook_error(session: &Session, why: Stopped, undone: &str) -> ReloadError {
    ReloadError::Hook(format!("{}; {undone}", session.describe(why)))
}

impl Agent {
    /// The context of generation `number`, whose library `path` is loaded from `staged`: names
    /// as generation `below` left them in `module`, and the library's own.
    pub(super) fn hook_context(
        &self,
        module: &Layout,
        number: u32,
        below: u32,
        staged: &str,
        path: &str,
    ) -> Context {
        let live = self.live_identity(module);
        let previous = self.previous_symbols(module, &live, below);
        let base = phdr::snapshot()
            .into_iter()
            .find(|m| m.name == staged)
            .map(|m| m.base);
        let this = match (base, std::fs::read(staged)) {
            (Some(base), Ok(bytes)) => file_symbols(&bytes, base),
            _ => Default::default(),
        };
        Context::new(
            number,
            previous,
            (this, path.to_string()),
            Box::new(check_class),
        )
    }

    /// What the probe's copy runs after its load: prepare, then migrate, each named first.
    pub(super) fn probe_hooks<'a>(
        &'a self,
        patch: &'a PatchFile,
        module: &'a Layout,
        staged: &'a str,
        path: &'a str,
    ) -> Box<RunHooks<'a>> {
        Box::new(move |handle: dl::Handle, mark: &dyn Fn(&str)| {
            let hooks = find_hooks(patch, handle);
            if hooks.prepare.is_none() && hooks.migrate.is_none() {
                return None;
            }
            let number = self.generation() + 1;
            let ctx = self.hook_context(module, number, self.generation(), staged, path);
            let mut session = Session::here(ctx, hooks);
            for phase in [Phase::Prepare, Phase::Migrate] {
                if hooks.of(phase).is_none() {
                    continue;
                }
                mark(phase.hook_name());
                if let Err(why) = session.run(phase) {
                    return Some(session.describe(why));
                }
            }
            None
        })
    }
}

/// What the probe's copy runs after its load (see `sys::probe::RunHooks`).
type RunHooks<'a> = dyn Fn(dl::Handle, &dyn Fn(&str)) -> Option<String> + 'a;

/// The checks a converter's vtables must pass before the class conversion can be built: both
/// whole vtables (offset-to-top, typeinfo, then one word per method) with as many methods.
fn check_class(r: &ClassRequest) -> Result<(), String> {
    let methods = |name: &str, s: &Symbol| -> Result<u64, String> {
        if !s.size.is_multiple_of(8) || s.size < 24 {
            return Err(format!(
                "hotagent_convert_class: {name} is not a vtable (its symbol is {} bytes; a vtable is two words and one per method)",
                s.size
            ));
        }
        Ok(s.size / 8 - 2)
    };
    let old = methods(&r.old_name, &r.old)?;
    let new = methods(&r.new_name, &r.new)?;
    if old != new {
        return Err(format!(
            "hotagent_convert_class: {} has {old} method slot(s) but {} has {new}: an object converted to the new class would call through a vtable of another shape",
            r.old_name, r.new_name
        ));
    }
    Ok(())
}
