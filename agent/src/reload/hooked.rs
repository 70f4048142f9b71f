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
use super::hook_failure::HookFailure;
use super::previous::file_symbols;
use super::state::Agent;
use crate::convert::{Class, Vtable};
use crate::hooks::{ClassRequest, Context, HookFn, Hooks, Phase, RegisterError, Session, Stopped};
use crate::image::Layout;
use crate::sys::{dl, phdr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The classes prepare registered, checked and with their thunks made.
pub(super) type Registered = Arc<Mutex<Vec<&'static Class>>>;

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
pub(super) fn hook_error(session: &Session, why: Stopped, undone: &'static str) -> ReloadError {
    HookFailure::Stopped {
        stop: session.describe(why),
        undone,
    }
    .into()
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
    ) -> (Context, Registered) {
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
        let registered: Registered = Arc::default();
        let code = code_ranges();
        let into = Arc::clone(&registered);
        let check = move |r: &ClassRequest| -> Result<(), RegisterError> {
            let class = Class::new(
                Vtable {
                    name: r.old_name.clone(),
                    addr: r.old.addr,
                    size: r.old.size,
                },
                Vtable {
                    name: r.new_name.clone(),
                    addr: r.new.addr,
                    size: r.new.size,
                },
                r.upgrade as usize,
                r.downgrade.map(|d| d as usize),
                &|a| code.iter().any(|&(lo, hi)| a >= lo && a < hi),
            )?;
            into.lock()
                .map_err(|_| RegisterError::Poisoned("class"))?
                .push(class);
            Ok(())
        };
        let ctx = Context::new(number, previous, (this, path.to_string()), Box::new(check));
        (ctx, registered)
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
            let (ctx, _) = self.hook_context(module, number, self.generation(), staged, path);
            let mut session = Session::here(ctx, hooks);
            for phase in [Phase::Prepare, Phase::Migrate] {
                if hooks.of(phase).is_none() {
                    continue;
                }
                mark(phase.hook_name());
                if let Err(why) = session.run(phase) {
                    return Some(session.describe(why).to_string());
                }
            }
            None
        })
    }
}

/// What the probe's copy runs after its load (see `sys::probe::RunHooks`).
type RunHooks<'a> = dyn Fn(dl::Handle, &dyn Fn(&str)) -> Option<String> + 'a;

/// Every executable segment of the loaded modules: where methods and converters must point.
fn code_ranges() -> Vec<(u64, u64)> {
    phdr::snapshot()
        .iter()
        .flat_map(|m| m.text_ranges().collect::<Vec<_>>())
        .collect()
}

/// After a switch that converts `classes` (`switched`), lets their conversions go once no thread
/// is stopped inside `methods` (the code being left: a call in flight there would see its
/// object converted under it), looking at most [`IN_FLIGHT_WAIT`]; at once when nothing was
/// switched.
pub(super) fn let_conversions_go(
    classes: &[&'static Class],
    methods: &[(u64, u64)],
    switched: bool,
) {
    let t = Instant::now();
    if switched && !classes.is_empty() {
        while t.elapsed() < IN_FLIGHT_WAIT {
            match crate::entry::any_thread_in(methods) {
                Ok(true) => std::thread::sleep(Duration::from_micros(500)),
                Ok(false) | Err(_) => break,
            }
        }
        if t.elapsed() >= IN_FLIGHT_WAIT {
            tracing::warn!(
                "a thread stayed inside a method of a converted class for {} ms after the switch; its objects convert all the same",
                IN_FLIGHT_WAIT.as_millis()
            );
        }
    }
    for k in classes {
        k.go();
    }
}

/// How long the calls in flight at a switch may take to leave the converted class's methods.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);
