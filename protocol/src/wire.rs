//! The request and response documents.

use serde::{Deserialize, Serialize};

/// What a client asks of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Switch calls to a new build of a loaded library.
    Reload(ReloadRequest),
    /// Return to the previous generation.
    Rollback(RollbackRequest),
    /// Describe the agent, its process and its generations.
    Status(NoArgs),
    /// The client's go-ahead after a `ready` answer (see [`Control::confirm`]); only valid then.
    Commit(NoArgs),
    /// Every reload, rollback and revert the agent remembers, with its outcome.
    History(NoArgs),
    /// Unload a retired generation (nothing the agent can see leads into it any more).
    Purge(crate::PurgeRequest),
}

impl Request {
    /// A status request.
    pub fn status() -> Request {
        Request::Status(NoArgs {})
    }
    /// The go-ahead after a `ready` answer.
    pub fn commit() -> Request {
        Request::Commit(NoArgs {})
    }
    /// A history request.
    pub fn history() -> Request {
        Request::History(NoArgs {})
    }
    /// A rollback request with no deadline and no confirmation step.
    pub fn rollback() -> Request {
        Request::Rollback(RollbackRequest::default())
    }
    /// The deadline and confirmation settings of a request that changes the target.
    pub fn control(&self) -> Control {
        match self {
            Request::Reload(r) => Control {
                deadline_ms: r.deadline_ms,
                confirm: r.confirm,
                settle_ms: r.settle_ms,
            },
            Request::Rollback(r) => Control {
                deadline_ms: r.deadline_ms,
                confirm: r.confirm,
                settle_ms: r.settle_ms,
            },
            Request::Status(_) | Request::Commit(_) | Request::History(_) | Request::Purge(_) => {
                Control::default()
            }
        }
    }
}

/// When a request that changes the target may still start, and whether the client confirms.
///
/// A client that gives up cannot know whether an agent it can no longer hear went on to make the
/// change. So a request carries its deadline, and the agent never starts switching past it; and
/// with `confirm`, the agent stops right before the change with a `ready` answer and goes on only
/// when the client answers `{"op":"commit"}` in time: a client that did not send its commit knows
/// for certain that nothing changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Control {
    /// `CLOCK_MONOTONIC` time, in milliseconds, after which the agent must not start the change.
    pub deadline_ms: Option<u64>,
    /// Answer `ready` before the change and wait for the client's commit.
    pub confirm: bool,
    /// After its answer, keep the connection open (until the client closes it, this long at
    /// most) with the fatal-signal watch armed, so a crash right after the switch is reported
    /// on it as [`Response::Died`].
    pub settle_ms: Option<u64>,
}

/// The arguments of a rollback: only its [`Control`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// See [`Control::deadline_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// See [`Control::confirm`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirm: bool,
    /// See [`Control::settle_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_ms: Option<u64>,
    /// How long each of the patch's hooks may run (`include/hotagent.h`) before the change is
    /// refused; the agent's default (5 s) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_timeout_ms: Option<u64>,
    /// Put the replaced module's private writable data back to the generation's checkpoint
    /// (taken by a reload with `checkpoint`), with the other threads parked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

/// The arguments of a request that takes none: any field is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// The arguments of a reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    /// Absolute path of the new library (hotctl resolves it against its own working directory).
    pub path: String,
    /// The loaded module to replace; by default the one whose soname or file name matches `path`'s.
    #[serde(default)]
    pub replace: Option<String>,
    /// Check and plan, write nothing; the library is only loaded in the throwaway probe.
    #[serde(default)]
    pub dry_run: bool,
    /// Skip the probe load in a forked copy of the target (see the agent's `sys/probe.rs`).
    #[serde(default)]
    pub no_probe: bool,
    /// Rewrite GOT and data slots only: old function entries keep their own bytes, so pointers
    /// taken earlier, vtables and a library's direct calls keep running the old code.
    #[serde(default)]
    pub got_only: bool,
    /// Let the new build run on its own, freshly initialised private data instead of sharing the
    /// replaced module's (or being refused when the layouts differ): for a library that keeps no
    /// state worth keeping.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh_state: bool,
    /// Switch only the exported functions whose code differs between the running module's file
    /// and the new build; private state must then match only where the switched code reaches.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub changed_only: bool,
    /// Snapshot the replaced module's private writable data (`.data`, `.bss`; relocated words
    /// left out) before the switch, so a rollback with `reset` can put it back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checkpoint: bool,
    /// See [`Control::deadline_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// See [`Control::confirm`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirm: bool,
    /// See [`Control::settle_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_ms: Option<u64>,
    /// How long each of the patch's hooks may run (`include/hotagent.h`) before the change is
    /// refused; the agent's default (5 s) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_timeout_ms: Option<u64>,
    /// Keep the new generation on probation this long: a crash in its code rolls the process
    /// back at once and re-runs the crashed call on the previous generation. `None` or 0: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probation_ms: Option<u64>,
    /// Record the patch in the journal, so later starts of this executable apply it before main.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub persist: bool,
    /// With `persist`: a patch that cannot be applied live for a reason only a fresh start lifts
    /// is accepted into the journal alone, for the next start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_next_start: bool,
    /// Reload even when the file's bytes (sha256) are the current generation's: without it such
    /// a reload changes nothing and answers with `unchanged`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// The agent's answer: exactly one of these per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// Everything is checked and loaded in the probe; the change starts on the client's commit.
    Ready,
    Reload(ReloadReport),
    Rollback(RollbackReport),
    Status(StatusReport),
    Error(ErrorReply),
    /// The process is dying of a fatal signal while a reload or rollback runs (or in its settle
    /// time): sent from the agent's signal handler on the request's connection, in place of (or
    /// after) the answer. The process then dies exactly as it would have without the agent.
    Died(DiedReport),
    History(crate::HistoryReport),
    Purge(crate::PurgeReport),
}

/// The fatal signal a process is dying of (`{"kind":"died","signal":11}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiedReport {
    pub signal: i32,
}

/// Stable, machine-readable failure classes. The message carries the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request line could not be decoded.
    BadRequest,
    /// The patch file cannot be read (missing, a directory, unreadable).
    FileUnreadable,
    /// The patch file is not a usable ELF shared object for this machine.
    BadElf,
    /// `dlopen` refused the staged copy (missing dependency, undefined symbol, ...).
    LoadFailed,
    /// The module to replace is not loaded, or more than one matches.
    ModuleNotFound,
    /// The new library and the module share no exported symbol.
    NoCommonSymbols,
    /// An exported symbol changed kind (function/data) or a mutable variable changed size.
    IncompatibleSymbol,
    /// Rollback was asked at generation 0.
    NothingToRollBack,
    /// Writing a slot failed; every slot written was put back.
    WriteFailed,
    /// Too many clients at once.
    Busy,
    /// A fault inside the agent (a caught panic): the request was abandoned, the target keeps running.
    Internal,
    /// The request's deadline passed, or its client left, before the change started: nothing changed.
    Abandoned,
    /// A hook of the patch (`include/hotagent.h`) refused, failed, crashed in the probe or did
    /// not return in time: nothing changed.
    HookRefused,
    /// The current generation is on probation: roll it back, or wait until it passes.
    OnProbation,
    /// A purge was refused: the generation is current, live, unknown, or still in use.
    PurgeRefused,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

/// Time spent in each step of a reload, in microseconds, measured inside the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phases {
    pub stage_us: u64,
    pub check_us: u64,
    /// The throwaway load in a forked copy of the target (0 with `no_probe`).
    #[serde(default)]
    pub probe_us: u64,
    pub load_us: u64,
    pub plan_us: u64,
    pub write_us: u64,
    pub verify_us: u64,
    /// Writing function entries, threads stopped included.
    #[serde(default)]
    pub entries_us: u64,
    /// The patch's hooks (`include/hotagent.h`), each on its own: 0 when it has none.
    #[serde(default)]
    pub prepare_us: u64,
    #[serde(default)]
    pub migrate_us: u64,
    #[serde(default)]
    pub committed_us: u64,
}

/// What happened to one replaced symbol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymbolReport {
    pub name: String,
    /// The version of the replaced definition, when the module versions its symbols.
    #[serde(default)]
    pub version: Option<String>,
    /// `function` or `rodata`.
    pub kind: String,
    /// GOT/data slots switched by this operation.
    pub slots: usize,
    /// Modules (file names) whose slots were switched.
    pub modules: Vec<String>,
    /// Lazy-binding slots not yet resolved: they resolve to the current generation on first call.
    pub lazy: usize,
    /// GOT/PLT slots naming this symbol that are bound to another definition (interposed,
    /// canonical PLT): left as they are.
    pub other: usize,
    /// Every entry of this function's older (and, after a rollback, newer) code, and whether it
    /// jumps to the current code. Empty for data.
    #[serde(default)]
    pub entries: Vec<EntryReport>,
}

/// What one function entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// This is the current code: its own bytes.
    Current,
    /// Jumps to the current code (for a dry run: would).
    Jump,
    /// Old code left with its own bytes: `reason` says why.
    Original,
}

/// One entry of a replaced function: generation 0's, or a generation's library's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryReport {
    /// The module holding it: the replaced module's file name, or `libfoo.so#2` for the library
    /// generation 2 loaded.
    pub module: String,
    pub addr: u64,
    pub state: EntryState,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Other threads held while entries were written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseReport {
    /// Times the threads were stopped (more than one when a thread sat inside an entry).
    pub rounds: u32,
    /// The longest stop, in microseconds.
    pub longest_us: u64,
    /// Threads held.
    pub threads: usize,
    /// Entries written.
    pub entries: usize,
    /// Threads that block the stop signal but were asleep in a system call: checked where they
    /// slept instead of being stopped.
    #[serde(default)]
    pub asleep: usize,
    /// One of those that left its system call while entries were being written, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub woke: Option<i32>,
    /// Entries were switched per thread (int3 first, each thread looked at once): no thread was
    /// held, and `longest_us` is the longest any thread spent answering a look.
    #[serde(default)]
    pub per_thread: bool,
    /// The longest any thread was kept from its own code, in microseconds: per thread, the most
    /// CPU time one spent in our look or trap handler (`longest_us` is the wall time, which also
    /// counts being descheduled); with the full stop, `longest_us`.
    #[serde(default)]
    pub held_us: u64,
    /// Per thread: the most CPU time, in microseconds, a thread spent in our `int3` handler
    /// (0 when none reached an entry while it was being rewritten).
    #[serde(default)]
    pub trap_us: u64,
}

/// The answer to a reload (also to a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The generation now current (for a dry run: the one a reload would create).
    pub generation: u32,
    pub dry_run: bool,
    /// The patch file as given.
    pub path: String,
    /// The module replaced.
    pub module: String,
    /// GOT/data slots written (for a dry run: that would be written).
    pub slots: usize,
    /// Symbol-table entries of the replaced module redirected, so later lookups (lazy binding,
    /// libraries dlopened later, dlsym) find the new code.
    pub symtab_entries: usize,
    pub symbols: Vec<SymbolReport>,
    /// Agent-side time from request to answer.
    pub elapsed_us: u64,
    pub phases: Phases,
    /// Entry writes and the pause they cost (zero for a dry run or `got_only`).
    #[serde(default)]
    pub pause: PauseReport,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// How long the new generation stays on probation (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub probation_ms: u64,
    /// The journal the patch was recorded in, with `persist`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persisted: Option<String>,
    /// With `on_next_start`: nothing was switched; the patch waits in the journal for the next
    /// start, and `warnings` say why it could not be applied live.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
    /// The file's bytes are the current generation's (`generation`): nothing was switched, no
    /// generation was pushed. A reload with `force` never answers this.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The answer to a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackReport {
    /// The generation now current.
    pub generation: u32,
    /// The generation left.
    pub from: u32,
    pub slots: usize,
    pub symtab_entries: usize,
    pub symbols: Vec<SymbolReport>,
    pub elapsed_us: u64,
    #[serde(default)]
    pub pause: PauseReport,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The generation's `hotagent_unmigrate` hook, when it has one.
    #[serde(default)]
    pub unmigrate_us: u64,
}

/// One generation on the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationInfo {
    pub generation: u32,
    /// The patch file as given to `reload`.
    pub path: String,
    /// The private copy that was loaded.
    pub staged: String,
    pub module: String,
    pub symbols: Vec<String>,
    pub slots: usize,
    pub elapsed_us: u64,
    /// On probation: how long it lasts and how much of it is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probation: Option<ProbationInfo>,
    /// Applied from the journal before the program's main ran.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub applied_at_startup: bool,
    /// When it became current (wall clock, milliseconds since the Unix epoch), if the agent
    /// still remembers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_unix_ms: Option<u64>,
}

/// A generation on probation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbationInfo {
    pub duration_ms: u64,
    pub remaining_ms: u64,
}

/// A generation that crashed on probation and was rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertedInfo {
    pub generation: u32,
    /// The patch file as given to `reload`.
    pub path: String,
    pub module: String,
    /// The fatal signal (11 for SIGSEGV) and its name.
    pub signal: i32,
    pub signal_name: String,
    /// The replaced function the crash was in (or called from), when known.
    #[serde(default)]
    pub function: Option<String>,
    /// The faulting instruction.
    pub address: u64,
    /// The crashed call was run again on the previous generation and its caller got that answer;
    /// false when it could not be (the signal then took its usual course).
    pub rerun: bool,
    /// The generation the process went back to.
    pub back_to: u32,
}

/// A reload refused after its library was loaded, which could not be unloaded (its constructors
/// started a thread, or the loader pins it): mapped in the process, but never a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedLoad {
    /// The patch file as given to `reload`.
    pub path: String,
    /// The private copy the loader knows it by.
    pub staged: String,
    /// Why the reload was refused and why the library stays.
    pub reason: String,
}

/// The answer to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub protocol: u32,
    pub agent_version: String,
    pub pid: u32,
    /// The target's executable.
    pub exe: String,
    pub generation: u32,
    pub generations: Vec<GenerationInfo>,
    /// Modules currently loaded in the process.
    pub modules: usize,
    /// A reload or rollback is running: this report shows the state it started from.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub busy: bool,
    /// Coverage of every replaced symbol now: slots bound to its current code (`slots`,
    /// `modules`) and what each of its entries holds.
    #[serde(default)]
    pub symbols: Vec<SymbolReport>,
    /// Refused loads still mapped (see [`RefusedLoad`]); none in the usual case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_loads: Vec<RefusedLoad>,
    /// Generations rolled back by probation, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reverted: Vec<RevertedInfo>,
}
