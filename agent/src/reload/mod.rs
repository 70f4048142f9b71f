//! The reload transaction and its undo: stage → check → load → plan → write → verify.
//!
//! Nothing is written before every check has passed and the new library is loaded. Writing then
//! happens in one batch under the loader's list lock (no module can appear or vanish meanwhile);
//! if any write fails the batch is undone. Besides the GOT and data slots, the replaced module's
//! symbol-table entries are redirected to the new code, so every later lookup — lazy binding of a
//! slot not yet resolved, a library dlopened later (and its constructors), `dlsym` — finds the
//! current generation without any hook on `dlopen`.
//!
//! Read `transaction.rs` first: it is the reload as one sequence. Each step lives in its own
//! file: `check` and `guard` (the file), `select` (which symbols), `stage`, the probe in
//! `sys::probe`, `plan` (which slots), `write` (the locked pass), `rollback`, and `state` (what
//! the agent remembers between requests).

mod abandoned;
mod alias;
mod check;
mod discard;
mod entries;
mod error;
mod facts;
mod guard;
mod hook_failure;
mod hooked;
mod identify;
mod index;
mod lookup;
mod modules;
mod names;
mod origin;
mod parsed;
mod plan;
mod previous;
mod private;
pub mod probation;
mod purge;
mod report;
mod reset;
mod reuse;
mod rollback;
mod select;
mod sharing;
mod stage;
mod state;
mod transaction;
mod unchanged;
mod write;

pub use abandoned::Abandonment;
pub use check::{check_bytes, PatchFile};
pub use error::ReloadError;
pub use facts::StagedFacts;
pub use hook_failure::HookFailure;
pub use hooked::hook_timeout;
pub use identify::ModuleId;
pub use plan::{plan_slots, Binding, Plan, Tally};
pub use purge::PurgeError;
pub use state::Agent;
pub use transaction::Gate;
