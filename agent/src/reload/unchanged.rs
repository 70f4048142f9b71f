//! Idempotence: a reload of the bytes the current generation already runs changes nothing.
//!
//! Without this, running the same `hotctl reload` twice (a retry after a timeout, a fleet run
//! repeated, a build that did not change) stacks a new generation each time: more code mapped,
//! more entries jumping, and a rollback that "does nothing" as far as the operator can see.
//! The bytes are compared, not the path: a copy under another name is the same build, and a
//! path rebuilt in place is not. Only generations this agent pushed are compared: at generation
//! 0 the running code is what the program loaded, whose file may since have been replaced on
//! disk, so nothing cheap and certain can be said about it.

use super::state::{micros, Agent};
use hotagent_protocol::{Phases, ReloadReport, ReloadRequest};
use std::time::Instant;

impl Agent {
    /// The answer to a reload that would change nothing: `sha` (of the staged copy) is the
    /// current generation's, for the same module. `None` when the reload must go ahead: other
    /// bytes, another module, `force`, or `persist` (recording in the journal is a change the
    /// operator asked for).
    pub(super) fn unchanged(
        &self,
        req: &ReloadRequest,
        sha: Option<&str>,
        module: &str,
        phases: Phases,
        t0: Instant,
    ) -> Option<ReloadReport> {
        if req.force || req.persist {
            return None;
        }
        let current = self.generations.last()?;
        if sha.is_none() || current.sha256.as_deref() != sha || current.module != module {
            return None;
        }
        tracing::info!(
            generation = current.number,
            path = req.path,
            "reload of the current generation's bytes: nothing to do"
        );
        Some(ReloadReport {
            generation: current.number,
            dry_run: req.dry_run,
            path: req.path.clone(),
            module: module.to_string(),
            slots: 0,
            symtab_entries: 0,
            symbols: Vec::new(),
            elapsed_us: micros(t0),
            phases,
            pause: Default::default(),
            warnings: Vec::new(),
            probation_ms: 0,
            persisted: None,
            deferred: false,
            unchanged: true,
        })
    }
}
