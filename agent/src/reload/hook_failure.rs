//! Why a patch's hooks (or the class conversions a hook registered) stopped a reload or a
//! rollback: all carry the wire code `HookRefused`.

use crate::convert::ConvertError;
use crate::hooks::{HookError, HookStop};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookFailure {
    /// The agent's hook thread is unusable; `loaded` when the patch is already loaded.
    #[error("the patch's hooks cannot run: {cause}; nothing was {}", if *.loaded { "switched" } else { "loaded" })]
    CannotRun {
        #[source]
        cause: HookError,
        loaded: bool,
    },
    #[error("{path} has a hotagent_migrate hook, which --probation cannot guard: a revert from the signal handler cannot run hotagent_unmigrate first; reload it without --probation")]
    MigrateOnProbation { path: String },
    #[error("{path} converts objects of {classes} classes, which --probation cannot guard (a revert from the signal handler cannot convert them back); nothing was switched")]
    ConversionOnProbation { path: String, classes: usize },
    /// A registered class's entry thunk could not be made.
    #[error("hotagent_convert_class: {cause}; nothing was switched")]
    NoEntryThunk {
        #[source]
        cause: ConvertError,
    },
    /// A hook stopped its phase in this process; `undone` says what that left (its words).
    #[error("{stop}; {undone}")]
    Stopped {
        #[source]
        stop: HookStop,
        undone: &'static str,
    },
    /// `reason` is the probe's words for the hook's refusal, with the patch's own message.
    #[error("{reason} (in the probe's throwaway copy of this process); nothing was loaded here")]
    ProbeRefused { reason: String },
    #[error("{path}: its {hook} crashed a throwaway copy of this process ({how}); nothing was loaded here")]
    ProbeCrashed {
        path: String,
        hook: String,
        how: String,
    },
    #[error("{path}: its {hook} did not return within {ms} ms in a throwaway copy of this process (--hook-timeout sets the limit); nothing was loaded here")]
    ProbeHung {
        path: String,
        hook: String,
        ms: u128,
    },
    /// A converted class has no downgrade: objects on its new layout may exist.
    #[error("cannot roll back generation {generation}: {cause}; objects on the new layout may exist, and the old code cannot run on them; nothing was changed: generation {generation} still runs")]
    ClassesStuck {
        generation: u32,
        #[source]
        cause: ConvertError,
    },
    #[error("cannot roll back generation {generation}: {cause}; nothing was changed")]
    NoRollbackThunk {
        generation: u32,
        #[source]
        cause: ConvertError,
    },
    #[error("cannot roll back generation {generation}: its hotagent_unmigrate cannot run: {cause}; nothing was changed")]
    UnmigrateCannotRun {
        generation: u32,
        #[source]
        cause: HookError,
    },
    #[error("cannot roll back generation {generation}: {stop}; nothing was changed: generation {generation} still runs")]
    UnmigrateStopped {
        generation: u32,
        #[source]
        stop: HookStop,
    },
}
