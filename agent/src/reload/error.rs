//! Why a reload or rollback was refused, with the stable code it carries on the wire.

use super::abandoned::Abandonment;
use super::guard::StructureError;
use super::hook_failure::HookFailure;
use super::private::PrivateError;
use super::sharing::RedirectFailed;
use super::write::NoParkedStop;
use crate::entry::error::EntryError;
use crate::patch::PatchError;
use crate::sys::dl::DlError;
use hotagent_protocol::ErrorCode;

/// An errno from the kernel, worded as `std::io::Error` words it (plain words for a missing file
/// and a refused permission, which users meet most).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", errno_words(*.0))]
pub struct OsError(pub i32);

fn errno_words(e: i32) -> String {
    match e {
        libc::ENOENT => "no such file".to_string(),
        libc::EACCES | libc::EPERM => "permission denied".to_string(),
        _ => std::io::Error::from_raw_os_error(e).to_string(),
    }
}

/// An errno shown exactly as `std::io::Error` shows it (one type with the entries' errors).
pub use crate::entry::error::Errno as IoErrno;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    #[error("{path}: the path must be absolute (hotctl resolves it)")]
    RelativePath { path: String },
    #[error("{path} is a symbolic link: the agent follows no link in the last part of the path it is sent (hotctl sends the resolved path); name the file itself")]
    SymbolicLink { path: String },
    #[error("{path} is a socket or a device with nothing behind it, not a shared library")]
    NothingBehind { path: String },
    /// `what` names its kind ("a directory", "a FIFO (named pipe)"...).
    #[error("{path} is {what}, not a shared library: only regular files are loaded")]
    NotRegular { path: String, what: &'static str },
    #[error("{path} changed size while it was copied (it had {size} bytes when opened): is it still being written? Nothing was loaded")]
    ChangedSize { path: String, size: u64 },
    /// The patch file (or the descriptor the client passed) could not be read.
    #[error("cannot read {path}: {cause}")]
    Unreadable {
        path: String,
        #[source]
        cause: OsError,
    },
    #[error("{path} is empty")]
    Empty { path: String },
    #[error("{path} is {size} bytes: larger than any shared library we load (at most {max})")]
    TooLarge { path: String, size: u64, max: u64 },
    /// What is wrong with the file's bytes, as the check words it.
    #[error("{path}: {problem}")]
    Malformed { path: String, problem: String },
    /// `how` is how the throwaway child died, as the probe saw it.
    #[error("{path}: loading it crashed a throwaway copy of this process ({how}); the file is corrupt or its constructors fault, nothing was loaded here")]
    ProbeCrashed { path: String, how: String },
    /// A structural check refused the file: loading it would crash the loader.
    #[error("{path}: {cause}")]
    Corrupted {
        path: String,
        #[source]
        cause: StructureError,
    },
    #[error("dlsym cannot resolve {symbol} in {module}")]
    Unresolvable { symbol: String, module: String },
    /// `asked` is the name, with `@version` when one was asked for.
    #[error("{path}: dlsym cannot find its {asked} once loaded (its symbol version table does not give that definition to a lookup)")]
    NotFoundOnceLoaded { path: String, asked: String },
    #[error("{path}: {symbol} resolves back into {module} (an IFUNC resolver that picks the old code?): switching to it would change nothing")]
    ResolvesBack {
        path: String,
        symbol: String,
        module: String,
    },
    /// The loader refused the file (`loader` is its words, naming the patch's path, not the
    /// staged copy's); `origin` when `$ORIGIN` in its run path may be why.
    #[error("cannot load {path}: {loader}{}", if *.origin { " ($ORIGIN in its run path was taken as the patch file's folder)" } else { "" })]
    LoaderRefused {
        path: String,
        loader: String,
        origin: bool,
    },
    #[error("{path} closed the agent's private copy of it while it loaded (descriptor {fd}, a constructor that closes descriptors it did not open?): its code is loaded but nothing was switched")]
    CopyClosedWhileLoading { path: String, fd: String },
    #[error("cannot load {path}: the loader returned an earlier generation's module for {staged}; nothing was switched")]
    EarlierModule { path: String, staged: String },
    #[error("{path} was loaded but its private data could not be pointed at {module}'s: {cause}; nothing was switched")]
    PrivateUnredirectable {
        path: String,
        module: String,
        #[source]
        cause: RedirectFailed,
    },
    #[error("{path}: the probe load did not finish within {secs} s (a constructor that blocks?); nothing was loaded; --no-probe skips the probe")]
    ProbeTimedOut { path: String, secs: u64 },
    #[error("{path}: for {secs} s, every throwaway copy of this process was born with the loader locked by another thread (a dlopen, dlclose or dl_iterate_phdr in progress at each fork); nothing was loaded; try again, or --no-probe skips the probe")]
    LoaderBusy { path: String, secs: u64 },
    /// A library the patch needs from its own folder (`$ORIGIN`) could not be loaded.
    #[error("cannot load {dep}, which {path} needs from its own folder ($ORIGIN): {cause}")]
    DependencyUnloadable {
        dep: String,
        path: String,
        #[source]
        cause: DlError,
    },
    #[error("{0}")]
    ModuleNotFound(String),
    /// `detail` names the variables in common, if any, with its leading space.
    #[error("the new library exports no function or read-only data that {module} exports{detail}: nothing to replace")]
    NothingShared { module: String, detail: String },
    #[error("nothing changed: every function of {module} is identical in {patch} (references compared by what they point at); nothing was loaded")]
    NothingChanged { module: String, patch: String },
    #[error("refusing {file}: it exports {export}, so it is a build of hotagent itself; loading it would start a second agent inside the process")]
    IsHotagent { file: String, export: String },
    #[error("refusing to replace {symbol} of {module}: the agent itself (or the allocations the target already made) depends on it")]
    AgentDepends { symbol: String, module: String },
    #[error("refusing to replace {symbol} of {module}: it is an alias of {alias} (the same code), which the agent itself depends on")]
    AgentDependsOnAlias {
        symbol: String,
        module: String,
        alias: String,
    },
    /// `was` and `is` say what it is on each side ("a function", "data", "a thread-local
    /// variable"...).
    #[error("{symbol} is {was} in {module} but {is} in the new library")]
    KindChanged {
        symbol: String,
        module: String,
        was: &'static str,
        is: &'static str,
    },
    #[error("variable {symbol} changed size ({old} bytes in {module}, {new} in the new library): its state cannot be carried over without a migrate hook (export hotagent_migrate to copy what it needs from hotagent_previous_symbol)")]
    SizeChanged {
        symbol: String,
        module: String,
        old: u64,
        new: u64,
    },
    #[error("thread-local variable {symbol} changed size ({old} bytes in {module}, {new} in the new library): every thread's block holds the old size, so the new code would write past it")]
    ThreadLocalSizeChanged {
        symbol: String,
        module: String,
        old: u64,
        new: u64,
    },
    #[error("variable {symbol} changed size ({old} bytes, {new} in {path}), but the executable holds a copy of it (a copy relocation: the program was built against its old size and reads it there), so its size cannot change, migrate hook or not; nothing was loaded")]
    CopyRelocated {
        symbol: String,
        path: String,
        old: u64,
        new: u64,
    },
    /// The new build's private data cannot be checkpointed for a later reset.
    #[error(transparent)]
    PrivateState(#[from] PrivateError),
    /// As `PrivateState`, found comparing the patch at `path` with the running module.
    #[error("{path}: {cause}")]
    PrivateUnshareable {
        path: String,
        #[source]
        cause: PrivateError,
    },
    /// The agent's sealed copy of the patch could not be mapped to read it (`purpose` says for
    /// what, with its leading space).
    #[error("cannot map the private copy of {path}{purpose}: {cause}")]
    CopyUnmappable {
        path: String,
        purpose: &'static str,
        #[source]
        cause: IoErrno,
    },
    #[error("nothing to roll back: the process runs generation 0, the code it started with")]
    NothingToRollBack,
    #[error("{cause}; every slot written was put back")]
    SlotsPutBack {
        #[source]
        cause: PatchError,
    },
    #[error("{module} was unloaded; nothing was changed")]
    ModuleUnloaded { module: String },
    #[error("the switch needs every other thread parked at once (a migrate hook or a class conversion), but {cause}; nothing was switched")]
    NotParked {
        #[source]
        cause: NoParkedStop,
    },
    /// `what` says what of the generation needs the threads parked.
    #[error("cannot roll back generation {generation}: {what} every other thread parked, but {cause}; nothing was changed")]
    RollbackNotParked {
        generation: u32,
        what: &'static str,
        #[source]
        cause: NoParkedStop,
    },
    /// Entries that jump to the code being left could not be rewritten: the rollback was
    /// refused, so nothing claims a change that did not happen. `entries` describes them.
    #[error("cannot roll back generation {generation}: {entries} must be restored, but {}; nothing was changed: generation {generation} still runs", blocked_words(.cause, *.threads))]
    RollbackBlocked {
        generation: u32,
        entries: String,
        /// Whether the threads could not be stopped (else an entry cannot be written).
        threads: bool,
        #[source]
        cause: EntryError,
    },
    /// As `RollbackBlocked`, found only by the rollback's writes, which were then undone
    /// (`undone`: completely).
    #[error("rolling back generation {generation} failed: {entries} could not be restored ({}); {}", cause.as_ref().map_or_else(|| "it could not be written".to_string(), |e| e.to_string()), undo_words(*.generation, *.undone))]
    RollbackUndone {
        generation: u32,
        entries: String,
        undone: bool,
        #[source]
        cause: Option<EntryError>,
    },
    #[error("cannot {step} for a private copy of {path}: {cause}")]
    CopyFailed {
        step: &'static str,
        path: String,
        #[source]
        cause: OsError,
    },
    #[error("cannot move the private copy to a fresh descriptor: {cause}")]
    CopyUnmovable {
        #[source]
        cause: OsError,
    },
    #[error("no fresh descriptor number for the private copy after {tries} tries: loaded modules carry them all")]
    NoFreshNumber { tries: usize },
    #[error("the program closed the agent's private copy of {path} (descriptor {fd}); nothing was loaded")]
    CopyClosed { path: String, fd: String },
    #[error("a hook ran without a session")]
    HookWithoutSession,
    #[error("cannot start the probe load of {path}: {cause}; --no-probe skips it")]
    ProbeUnstartable {
        path: String,
        #[source]
        cause: IoErrno,
    },
    #[error("cannot make the probation's guards: {cause}; nothing was switched")]
    GuardsUnmade {
        #[source]
        cause: IoErrno,
    },
    #[error("cannot watch for crashes during the probation: {cause}; nothing was switched")]
    CrashWatchUnarmed {
        #[source]
        cause: IoErrno,
    },
    #[error("a later generation is stacked on it")]
    StackedOn,
    /// The reload was refused now and could apply at the next start, but recording it for
    /// then failed (`failure` is the journal's words).
    #[error("{refusal}; it could apply at the next start, but recording it failed: {failure}")]
    NotRecorded {
        #[source]
        refusal: Box<ReloadError>,
        failure: String,
    },
    /// The request's deadline passed or its client left before the change started.
    #[error(transparent)]
    Abandoned(#[from] Abandonment),
    /// A hook of the patch refused, failed or hung: nothing was switched.
    #[error(transparent)]
    Hook(#[from] HookFailure),
    /// A load refused after it ran stays mapped (`kept_because` says why it cannot be
    /// unloaded); the refusal keeps its code.
    #[error("{refusal}; {kept_because}: it stays mapped as a refused load (not a generation; nothing was switched to it)")]
    KeptMapped {
        #[source]
        refusal: Box<ReloadError>,
        kept_because: String,
    },
    /// The current generation is on probation: no other reload until it passes or is rolled back.
    #[error("generation {generation} is on probation for {remaining_ms} ms more: roll it back (hotctl rollback) or wait until it passes; nothing was loaded")]
    OnProbation { generation: u32, remaining_ms: u64 },
}

impl ReloadError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ReloadError::RelativePath { .. }
            | ReloadError::SymbolicLink { .. }
            | ReloadError::NothingBehind { .. }
            | ReloadError::NotRegular { .. }
            | ReloadError::ChangedSize { .. }
            | ReloadError::Unreadable { .. } => ErrorCode::FileUnreadable,
            ReloadError::Empty { .. }
            | ReloadError::TooLarge { .. }
            | ReloadError::Malformed { .. }
            | ReloadError::ProbeCrashed { .. }
            | ReloadError::Corrupted { .. } => ErrorCode::BadElf,
            ReloadError::Unresolvable { .. }
            | ReloadError::NotFoundOnceLoaded { .. }
            | ReloadError::ResolvesBack { .. }
            | ReloadError::LoaderRefused { .. }
            | ReloadError::CopyClosedWhileLoading { .. }
            | ReloadError::EarlierModule { .. }
            | ReloadError::PrivateUnredirectable { .. }
            | ReloadError::ProbeTimedOut { .. }
            | ReloadError::LoaderBusy { .. }
            | ReloadError::DependencyUnloadable { .. } => ErrorCode::LoadFailed,
            ReloadError::ModuleNotFound(_) => ErrorCode::ModuleNotFound,
            ReloadError::NothingShared { .. } | ReloadError::NothingChanged { .. } => {
                ErrorCode::NoCommonSymbols
            }
            ReloadError::IsHotagent { .. }
            | ReloadError::AgentDepends { .. }
            | ReloadError::AgentDependsOnAlias { .. }
            | ReloadError::KindChanged { .. }
            | ReloadError::SizeChanged { .. }
            | ReloadError::ThreadLocalSizeChanged { .. }
            | ReloadError::CopyRelocated { .. }
            | ReloadError::PrivateState(_)
            | ReloadError::PrivateUnshareable { .. } => ErrorCode::IncompatibleSymbol,
            ReloadError::NothingToRollBack => ErrorCode::NothingToRollBack,
            ReloadError::SlotsPutBack { .. }
            | ReloadError::ModuleUnloaded { .. }
            | ReloadError::NotParked { .. }
            | ReloadError::RollbackNotParked { .. }
            | ReloadError::RollbackBlocked { .. }
            | ReloadError::RollbackUndone { .. } => ErrorCode::WriteFailed,
            ReloadError::CopyFailed { .. }
            | ReloadError::CopyUnmovable { .. }
            | ReloadError::NoFreshNumber { .. }
            | ReloadError::CopyClosed { .. }
            | ReloadError::HookWithoutSession
            | ReloadError::ProbeUnstartable { .. }
            | ReloadError::GuardsUnmade { .. }
            | ReloadError::CrashWatchUnarmed { .. }
            | ReloadError::StackedOn
            | ReloadError::NotRecorded { .. }
            | ReloadError::CopyUnmappable { .. } => ErrorCode::Internal,
            ReloadError::Abandoned(_) => ErrorCode::Abandoned,
            ReloadError::Hook(_) => ErrorCode::HookRefused,
            ReloadError::OnProbation { .. } => ErrorCode::OnProbation,
            ReloadError::KeptMapped { refusal, .. } => refusal.code(),
        }
    }
}

impl ReloadError {
    /// A loader's refusal for want of a dependency may be `$ORIGIN`'s doing: it says so when
    /// `origin` (the patch's run path has `$ORIGIN`).
    pub fn with_origin_hint(self, origin: bool) -> ReloadError {
        match self {
            ReloadError::LoaderRefused { path, loader, .. } => ReloadError::LoaderRefused {
                path,
                loader,
                origin,
            },
            e => e,
        }
    }

    /// Whether the new build's private data is what was refused (a migrate hook or a fresh
    /// start may take it over).
    pub fn is_private_state(&self) -> bool {
        match self {
            ReloadError::PrivateState(_) | ReloadError::PrivateUnshareable { .. } => true,
            ReloadError::KeptMapped { refusal, .. } => refusal.is_private_state(),
            _ => false,
        }
    }
}

/// Why a rollback's entries cannot be restored, as its refusal words it.
fn blocked_words(cause: &EntryError, threads: bool) -> String {
    match threads {
        true => cause.to_string(),
        false => format!("its first bytes cannot be written: {cause}"),
    }
}

/// What became of a rollback whose writes failed.
fn undo_words(generation: u32, undone: bool) -> String {
    match undone {
        true => format!("the rollback was undone: generation {generation} still runs"),
        false => format!(
            "undoing it failed too: generation {generation} is current but some calls may run \
             other code; `hotctl status` shows what each entry holds"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    /// Callers tell the causes apart by wire code and by the typed source, while the message
    /// reads as it did when it was one formatted string.
    #[test]
    fn typed_causes_keep_code_message_and_source() {
        let unreadable = ReloadError::Unreadable {
            path: "/x/libp.so".into(),
            cause: OsError(libc::ENOENT),
        };
        assert_eq!(unreadable.code(), ErrorCode::FileUnreadable);
        assert_eq!(
            unreadable.to_string(),
            "cannot read /x/libp.so: no such file"
        );
        let src = unreadable.source().unwrap().downcast_ref::<OsError>();
        assert_eq!(src, Some(&OsError(libc::ENOENT)));

        let unmappable = ReloadError::CopyUnmappable {
            path: "/x/libp.so".into(),
            purpose: " to check it",
            cause: IoErrno(libc::ENOMEM),
        };
        assert_eq!(unmappable.code(), ErrorCode::Internal);
        assert_eq!(
            unmappable.to_string(),
            format!(
                "cannot map the private copy of /x/libp.so to check it: {}",
                std::io::Error::from_raw_os_error(libc::ENOMEM)
            )
        );
        assert!(unmappable.source().unwrap().is::<IoErrno>());

        let private = ReloadError::PrivateUnshareable {
            path: "/x/libp.so".into(),
            cause: PrivateError::Refused("layout changed".into()),
        };
        assert_eq!(private.code(), ErrorCode::IncompatibleSymbol);
        assert!(private.is_private_state());
        assert_eq!(private.to_string(), "/x/libp.so: layout changed");
        assert!(private.source().unwrap().is::<PrivateError>());
        assert!(!unmappable.is_private_state());
    }

    /// Variants split out of one formatted String keep their wire code, so callers and the
    /// JSON codes tell them apart exactly as before, and the words users grep for.
    #[test]
    fn split_variants_keep_their_codes_and_words() {
        let p = || "/x/libp.so".to_string();
        let cases = [
            (
                ReloadError::SymbolicLink { path: p() },
                ErrorCode::FileUnreadable,
            ),
            (
                ReloadError::ChangedSize { path: p(), size: 3 },
                ErrorCode::FileUnreadable,
            ),
            (ReloadError::Empty { path: p() }, ErrorCode::BadElf),
            (
                ReloadError::ProbeTimedOut { path: p(), secs: 5 },
                ErrorCode::LoadFailed,
            ),
            (
                ReloadError::NothingChanged {
                    module: "liba.so".into(),
                    patch: "libp.so".into(),
                },
                ErrorCode::NoCommonSymbols,
            ),
            (
                ReloadError::SizeChanged {
                    symbol: "v".into(),
                    module: "liba.so".into(),
                    old: 4,
                    new: 8,
                },
                ErrorCode::IncompatibleSymbol,
            ),
            (
                ReloadError::ModuleUnloaded { module: p() },
                ErrorCode::WriteFailed,
            ),
            (ReloadError::StackedOn, ErrorCode::Internal),
            (
                ReloadError::OnProbation {
                    generation: 2,
                    remaining_ms: 10,
                },
                ErrorCode::OnProbation,
            ),
        ];
        for (e, code) in &cases {
            assert_eq!(e.code(), *code, "{e}");
        }
        assert_eq!(cases[1].0.to_string(), "/x/libp.so changed size while it was copied (it had 3 bytes when opened): is it still being written? Nothing was loaded");
        assert_eq!(cases[8].0.to_string(), "generation 2 is on probation for 10 ms more: roll it back (hotctl rollback) or wait until it passes; nothing was loaded");

        // A refused load kept mapped keeps its refusal's code and reaches it as the source.
        let kept = ReloadError::KeptMapped {
            refusal: Box::new(cases[5].0.clone()),
            kept_because: "the loader would not unload it".into(),
        };
        assert_eq!(kept.code(), ErrorCode::IncompatibleSymbol);
        assert_eq!(kept.source().unwrap().to_string(), cases[5].0.to_string());

        // The loader's words get the $ORIGIN hint only when the run path has it.
        let refused = ReloadError::LoaderRefused {
            path: p(),
            loader: "libdep.so: cannot open shared object file".into(),
            origin: false,
        };
        assert!(!refused.to_string().contains("$ORIGIN"));
        assert!(refused
            .with_origin_hint(true)
            .to_string()
            .ends_with(" ($ORIGIN in its run path was taken as the patch file's folder)"));

        // A rollback blocked by an entry carries the EntryError, errno and all.
        let blocked = ReloadError::RollbackBlocked {
            generation: 3,
            entries: "f's entry".into(),
            threads: false,
            cause: EntryError::WriteFailed(crate::entry::error::Errno(libc::EPERM)),
        };
        assert_eq!(blocked.code(), ErrorCode::WriteFailed);
        assert!(blocked
            .to_string()
            .contains("but its first bytes cannot be written: writing its first bytes failed"));
        assert!(blocked.source().unwrap().is::<EntryError>());
    }

    /// Abandonments and hook failures, once formatted Strings, keep their wire codes and the
    /// exact words tests and users grep for; their typed causes are reachable as sources.
    #[test]
    fn abandonments_and_hook_failures_keep_their_codes_and_words() {
        use crate::convert::ConvertError;
        use crate::hooks::{HookError, HookStop, Phase, Stopped};
        let abandoned = [
            (Abandonment::DeadlinePassed { late_ms: 7 }, "the request's deadline passed 7 ms before the change could start; nothing was changed"),
            (Abandonment::ConnectionClosed, "the program closed the client's connection before the change started; nothing was changed"),
            (Abandonment::ClientLeft, "the client left before the change started; nothing was changed"),
            (Abandonment::ReadyNotTaken, "the client did not take the ready answer in time; nothing was changed"),
            (Abandonment::CommitLate { late_ms: 3 }, "the commit was read 3 ms after the request's deadline; nothing was changed"),
            (Abandonment::NotCommit, "the client answered ready with something other than commit; nothing was changed"),
            (Abandonment::NoCommit { wait_s: 30 }, "the client did not commit before the deadline or within 30 s of the ready answer; nothing was changed"),
        ];
        for (a, words) in abandoned {
            let e = ReloadError::from(a);
            assert_eq!(e.code(), ErrorCode::Abandoned, "{e}");
            assert_eq!(e.to_string(), words);
        }

        let no_thread = || HookError::NoThread("clone failed".into());
        let no_downgrade = || ConvertError::NoDowngrade {
            old: "_ZTV1A".into(),
            new: "_ZTV1B".into(),
        };
        let refused = HookStop {
            stopped: Stopped::Refused {
                phase: Phase::Migrate,
                code: 2,
            },
            reason: Some("table too big".into()),
        };
        let hooks = [
            (HookFailure::CannotRun { cause: no_thread(), loaded: false }, format!("the patch's hooks cannot run: {}; nothing was loaded", no_thread())),
            (HookFailure::CannotRun { cause: no_thread(), loaded: true }, format!("the patch's hooks cannot run: {}; nothing was switched", no_thread())),
            (HookFailure::MigrateOnProbation { path: "/x/libp.so".into() }, "/x/libp.so has a hotagent_migrate hook, which --probation cannot guard: a revert from the signal handler cannot run hotagent_unmigrate first; reload it without --probation".into()),
            (HookFailure::ConversionOnProbation { path: "/x/libp.so".into(), classes: 2 }, "/x/libp.so converts objects of 2 classes, which --probation cannot guard (a revert from the signal handler cannot convert them back); nothing was switched".into()),
            (HookFailure::NoEntryThunk { cause: no_downgrade() }, format!("hotagent_convert_class: {}; nothing was switched", no_downgrade())),
            (HookFailure::Stopped { stop: refused.clone(), undone: "nothing was switched" }, "hotagent_migrate refused (returned 2): table too big; nothing was switched".into()),
            (HookFailure::ProbeRefused { reason: "hotagent_prepare failed".into() }, "hotagent_prepare failed (in the probe's throwaway copy of this process); nothing was loaded here".into()),
            (HookFailure::ProbeCrashed { path: "/x/libp.so".into(), hook: "hotagent_migrate".into(), how: "signal 11".into() }, "/x/libp.so: its hotagent_migrate crashed a throwaway copy of this process (signal 11); nothing was loaded here".into()),
            (HookFailure::ProbeHung { path: "/x/libp.so".into(), hook: "hotagent_prepare".into(), ms: 500 }, "/x/libp.so: its hotagent_prepare did not return within 500 ms in a throwaway copy of this process (--hook-timeout sets the limit); nothing was loaded here".into()),
            (HookFailure::ClassesStuck { generation: 4, cause: no_downgrade() }, format!("cannot roll back generation 4: {}; objects on the new layout may exist, and the old code cannot run on them; nothing was changed: generation 4 still runs", no_downgrade())),
            (HookFailure::NoRollbackThunk { generation: 4, cause: no_downgrade() }, format!("cannot roll back generation 4: {}; nothing was changed", no_downgrade())),
            (HookFailure::UnmigrateCannotRun { generation: 4, cause: no_thread() }, format!("cannot roll back generation 4: its hotagent_unmigrate cannot run: {}; nothing was changed", no_thread())),
            (HookFailure::UnmigrateStopped { generation: 4, stop: refused.clone() }, "cannot roll back generation 4: hotagent_migrate refused (returned 2): table too big; nothing was changed: generation 4 still runs".into()),
        ];
        for (h, words) in hooks {
            let e = ReloadError::from(h);
            assert_eq!(e.code(), ErrorCode::HookRefused, "{e}");
            assert_eq!(e.to_string(), words);
        }

        // A hook's stop words, as `Session::describe` gave them when they were a String.
        let timed_out = HookStop {
            stopped: Stopped::TimedOut {
                phase: Phase::Prepare,
                after: std::time::Duration::from_millis(250),
            },
            reason: None,
        };
        assert_eq!(timed_out.to_string(), "hotagent_prepare did not return within 250 ms (stopped waiting; its thread is left where it hangs)");
        let failed = HookStop {
            stopped: Stopped::Failed {
                phase: Phase::Prepare,
            },
            reason: Some("no room".into()),
        };
        assert_eq!(failed.to_string(), "hotagent_prepare failed: no room");
        let stuck = ReloadError::from(HookFailure::ClassesStuck {
            generation: 1,
            cause: no_downgrade(),
        });
        let cause = stuck.source().unwrap();
        assert_eq!(cause.downcast_ref::<ConvertError>(), Some(&no_downgrade()));
    }
}
