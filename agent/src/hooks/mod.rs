//! The patch-author API (`include/hotagent.h`): the hooks a patch library may export, the
//! context they receive, and running them.
//!
//! A reload or rollback with hooks opens a [`Session`]: its context is the only one the exported
//! services answer to while it lasts, and each hook runs on the hook thread with a deadline
//! (`runner`). The reload decides when each phase runs (see `reload/transaction.rs`); this module
//! only knows how.

pub mod context;
pub mod runner;
pub mod symbols;

pub use context::{ClassRequest, Context, Phase, RegisterError};
pub use runner::HookError;
pub use symbols::{Symbol, SymbolTable};

pub use crate::sys::hooks_ffi::HookFn;
use runner::Returns;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The hooks' names, as the patch exports them.
pub const PREPARE: &str = "hotagent_prepare";
pub const MIGRATE: &str = "hotagent_migrate";
pub const UNMIGRATE: &str = "hotagent_unmigrate";
pub const COMMITTED: &str = "hotagent_committed";
pub const HOOK_NAMES: [&str; 4] = [PREPARE, MIGRATE, UNMIGRATE, COMMITTED];

/// The hooks one patch library exports: each the address of its function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hooks {
    pub prepare: Option<HookFn>,
    pub migrate: Option<HookFn>,
    pub unmigrate: Option<HookFn>,
    pub committed: Option<HookFn>,
}

impl Hooks {
    /// Looks each hook up with `lookup` (by name in the patch library itself).
    pub fn find(lookup: impl Fn(&str) -> Option<HookFn>) -> Hooks {
        Hooks {
            prepare: lookup(PREPARE),
            migrate: lookup(MIGRATE),
            unmigrate: lookup(UNMIGRATE),
            committed: lookup(COMMITTED),
        }
    }

    pub fn any(&self) -> bool {
        self.prepare.is_some()
            || self.migrate.is_some()
            || self.unmigrate.is_some()
            || self.committed.is_some()
    }

    pub fn of(&self, phase: Phase) -> Option<HookFn> {
        match phase {
            Phase::Prepare => self.prepare,
            Phase::Migrate => self.migrate,
            Phase::Unmigrate => self.unmigrate,
            Phase::Committed => self.committed,
            Phase::Closed => None,
        }
    }
}

/// Why a phase did not go on. Carries no text, so it can be made while threads are parked;
/// [`Session::describe`] words it afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The hook returned nonzero.
    Refused {
        phase: Phase,
        code: i32,
    },
    /// It returned 0 but recorded a failure (a converter refused, say).
    Failed {
        phase: Phase,
    },
    TimedOut {
        phase: Phase,
        after: Duration,
    },
    NoThread {
        phase: Phase,
    },
}

/// The hooks of one reload or rollback, their context, and how long each took.
pub struct Session {
    ctx: Arc<Context>,
    hooks: Hooks,
    /// `None`: hooks run on the calling thread, without a deadline (the probe's copy, whose
    /// parent keeps the deadline).
    timeout: Option<Duration>,
    /// Microseconds per phase (prepare, migrate, unmigrate, committed).
    times: [u64; 4],
    _installed: context::Installed,
}

impl Session {
    /// Readies the hook thread and makes `ctx` the live context. Allocates: call before a stop.
    pub fn open(ctx: Context, hooks: Hooks, timeout: Duration) -> Result<Session, HookError> {
        runner::ready()?;
        Ok(Session::with(ctx, hooks, Some(timeout)))
    }

    /// A session whose hooks run on the calling thread: for the probe's single-threaded copy.
    pub fn here(ctx: Context, hooks: Hooks) -> Session {
        Session::with(ctx, hooks, None)
    }

    fn with(ctx: Context, hooks: Hooks, timeout: Option<Duration>) -> Session {
        let ctx = Arc::new(ctx);
        let installed = context::install(&ctx);
        Session {
            ctx,
            hooks,
            timeout,
            times: [0; 4],
            _installed: installed,
        }
    }

    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Runs `phase`'s hook, if the patch has one. Allocates nothing.
    pub fn run(&mut self, phase: Phase) -> Result<(), Stopped> {
        let Some(f) = self.hooks.of(phase) else {
            return Ok(());
        };
        self.ctx.enter(phase);
        let returns = if phase == Phase::Committed {
            Returns::Nothing
        } else {
            Returns::Int
        };
        let t = Instant::now();
        let addr = Arc::as_ptr(&self.ctx) as usize;
        let r = match self.timeout {
            Some(limit) => runner::call(f, addr, returns, limit),
            None => Ok(crate::sys::hooks_ffi::call_hook(
                f,
                addr,
                returns == Returns::Int,
            )),
        };
        if let Some(slot) = self.times.get_mut(phase as usize) {
            *slot = t.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
        }
        match r {
            Ok(0) if phase != Phase::Committed && self.ctx.has_failed() => {
                Err(Stopped::Failed { phase })
            }
            Ok(0) => Ok(()),
            Ok(_) if phase == Phase::Committed => Ok(()),
            Ok(code) => Err(Stopped::Refused { phase, code }),
            Err(HookError::TimedOut(after)) => Err(Stopped::TimedOut { phase, after }),
            Err(HookError::NoThread(_)) => Err(Stopped::NoThread { phase }),
        }
    }

    /// The phase's time in microseconds (0 when it had no hook).
    pub fn micros(&self, phase: Phase) -> u64 {
        self.times.get(phase as usize).copied().unwrap_or(0)
    }

    /// `stopped`, with the hook's own message.
    pub fn describe(&self, stopped: Stopped) -> HookStop {
        HookStop {
            stopped,
            reason: self.ctx.failure(),
        }
    }

    /// Whether a hook timed out: its library may still run on the abandoned thread.
    pub fn abandoned(stopped: Stopped) -> bool {
        matches!(stopped, Stopped::TimedOut { .. })
    }
}

/// Why a hook stopped its phase, worded for the operator: `reason` is what the patch's own code
/// recorded with `hotagent_fail`, if anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", stop_words(*.stopped, .reason.as_deref()))]
pub struct HookStop {
    pub stopped: Stopped,
    pub reason: Option<String>,
}

fn stop_words(stopped: Stopped, reason: Option<&str>) -> String {
    let said = reason.map(|m| format!(": {m}")).unwrap_or_default();
    match stopped {
        Stopped::Refused { phase, code } => {
            format!("{} refused (returned {code}){said}", phase.hook_name())
        }
        Stopped::Failed { phase } => format!("{} failed{said}", phase.hook_name()),
        Stopped::TimedOut { phase, after } => format!(
            "{} did not return within {} ms (stopped waiting; its thread is left where it hangs){said}",
            phase.hook_name(),
            after.as_millis()
        ),
        Stopped::NoThread { phase } => format!(
            "{} could not run: the agent's hook thread could not be started",
            phase.hook_name()
        ),
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.ctx.enter(Phase::Closed);
    }
}
