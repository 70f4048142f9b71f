//! How long a thread that blocks the stop signal may be seen running before a stop gives up on it.

use super::raw;
use super::stop::StopError;
use std::time::Duration;

/// How long a thread that blocks the signal may keep running, without sleeping once, before it
/// is taken to run on for good. Asleep in the kernel it costs no wait at all.
const BLOCKED_GRACE: Duration = Duration::from_millis(50);
/// Looks at it that must all find it running before it counts: a stopper the scheduler starves
/// could otherwise see the whole grace pass in one or two looks.
const BLOCKED_LOOKS: u32 = 10;
/// However often blockers are caught awake between sleeps (a loaded machine leaves a thread that
/// wakes every few milliseconds runnable much of the time), a stop waits no longer than this.
const BLOCKED_LIMIT: Duration = Duration::from_secs(1);

/// How long blockers have been seen running. Only one that runs on without sleeping — seen
/// running at `BLOCKED_LOOKS` looks in a row over `BLOCKED_GRACE`, its voluntary switches
/// unchanged — counts as running for good; one that slept in between starts afresh.
pub(super) struct Grace {
    start: Duration,
    limit: Duration,
    suspect: Option<Suspect>,
}

struct Suspect {
    tid: i32,
    voluntary: Option<u64>,
    since: Duration,
    looks: u32,
}

impl Grace {
    pub(super) fn new() -> Self {
        let start = raw::monotonic();
        Grace {
            start,
            limit: start + BLOCKED_LIMIT,
            suspect: None,
        }
    }

    /// Records a look that found `tid` running; true once it is taken to run on for good.
    pub(super) fn running(&mut self, tid: i32, voluntary: Option<u64>) -> bool {
        let now = raw::monotonic();
        match &mut self.suspect {
            Some(s) if s.tid == tid && s.voluntary == voluntary && voluntary.is_some() => {
                s.looks += 1;
            }
            _ => {
                self.suspect = Some(Suspect {
                    tid,
                    voluntary,
                    since: now,
                    looks: 1,
                })
            }
        }
        let s = self
            .suspect
            .as_ref()
            .map_or((now, 0), |s| (s.since, s.looks));
        (s.1 >= BLOCKED_LOOKS && now.saturating_sub(s.0) >= BLOCKED_GRACE) || now >= self.limit
    }

    pub(super) fn blocked(&self, tid: i32, sig: i32) -> StopError {
        StopError::Blocked {
            tid,
            signal: sig,
            waited_ms: raw::monotonic().saturating_sub(self.start).as_millis() as u64,
        }
    }
}
