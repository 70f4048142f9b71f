//! `purge`: unload a retired generation the operator vouches for (see the agent's
//! `reload/purge.rs`).

use serde::{Deserialize, Serialize};

/// Which generation to unload. Refused (`purge_refused`) while anything the agent can see still
/// leads into it; a function pointer the program holds cannot be seen: the operator vouches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    pub generation: u32,
}

/// What a purge unloaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReport {
    pub generation: u32,
    /// Each copy unloaded, as reports name it (`libfoo.so#2`).
    pub unloaded: Vec<String>,
    /// Bytes of address space its loaded segments took.
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub elapsed_us: u64,
}
