//! Many processes at once: which ones (`--pid` repeated, `--exe`, `--all`), and a bounded,
//! parallel rollout over them with canaries, a failure budget and all-or-nothing.

mod engine;
mod output;
mod select;

pub use engine::{reload, rollback, status};
pub use output::FleetFailed;
pub use select::{select, Selection};
