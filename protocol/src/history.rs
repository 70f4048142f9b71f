//! The answer to `history`: what the agent was asked to change, and what came of it.

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// How a reload, rollback or probation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A reload made a new generation current.
    Switched,
    /// A rollback left this generation for the one before.
    RolledBack,
    /// The agent refused the request (or it was abandoned): nothing changed.
    Refused,
    /// A crash on probation sent the process back to the previous generation.
    Reverted,
    /// A patch from the journal was applied before the program's main.
    AppliedAtStartup,
    /// A generation's probation ended without a crash: calls now reach its code directly.
    PassedProbation,
    /// `reload --persist --on-next-start` of a patch only a fresh start can apply: nothing
    /// switched now; the journal applies it when the program next starts.
    DeferredToNextStart,
    /// `hotctl purge`: a retired generation's copy was unloaded.
    Purged,
}

/// One event. Fields that do not apply (the file of a refused rollback) are absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// Numbers every event since the agent started, without gaps: a missing number was
    /// dropped from the bounded history.
    pub seq: u64,
    /// Wall-clock time of the outcome, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    pub outcome: Outcome,
    /// The generation the event is about: made by a switch, left by a rollback or revert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// The generation current after the event.
    pub current: u32,
    /// The patch file as given to `reload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The module the patch replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Size and SHA-256 (hex) of the bytes the agent staged: what was loaded, not what the
    /// path holds now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The GNU build-id (hex), if the file has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// The uid of the client that asked (SO_PEERCRED); absent for the agent's own acts
    /// (a probation's revert, a start-up application).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Why it was refused or reverted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

/// The answer to `history`: the newest events the agent keeps, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryReport {
    pub pid: u32,
    /// How many events the agent keeps; older ones are dropped.
    pub capacity: usize,
    /// Events dropped so far.
    #[serde(default)]
    pub dropped: u64,
    pub events: Vec<HistoryEvent>,
}
