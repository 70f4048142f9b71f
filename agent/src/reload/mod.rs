//! The reload transaction and its undo: stage → check → load → plan → write → verify.
//!
//! Nothing is written before every check has passed and the new library is loaded. Writing then
//! happens in one batch under the loader's list lock (no module can appear or vanish meanwhile);
//! if any write fails the batch is undone. Besides the GOT and data slots, the replaced module's
//! symbol-table entries are redirected to the new code, so every later lookup — lazy binding of a
//! slot not yet resolved, a library dlopened later (and its constructors), `dlsym` — finds the
//! current generation without any hook on `dlopen`.

mod check;
mod error;
mod guard;
mod modules;
mod plan;
mod select;
mod stage;
mod state;

pub use check::{check_bytes, PatchFile};
pub use error::ReloadError;
pub use plan::{plan_slots, Binding, Plan, Tally};
pub use state::Agent;
