//! Why a function entry keeps its bytes: the answer for one site, or for a whole switch.

use super::arch::{self, JUMP_LEN};
use crate::sys::self_mem::PokeError;
use crate::sys::stop::StopError;
use crate::sys::trap::TrapError;

/// An errno, shown as `std::io::Error` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", std::io::Error::from_raw_os_error(*.0))]
pub struct Errno(pub i32);

impl Errno {
    /// The errno of an error from a system call (EIO when it carries none).
    pub fn of(e: &std::io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("not a known function entry")]
    Unknown,
    /// Its symbol gives no usable size (the caller's words), so its code cannot be checked.
    #[error("{0}")]
    NoSize(&'static str),
    #[error("its code is not readable")]
    CodeUnreadable,
    /// Its code cannot take a jump (too short, a loop back into the bytes to replace...).
    #[error("{0}")]
    Refused(arch::Refusal),
    #[error("its code lies in no segment of a loaded module")]
    NoSegment,
    #[error("its code cannot be made writable ({0})")]
    NotWritable(#[source] PokeError),
    #[error("its first bytes were changed by something other than this agent; left alone")]
    ChangedElsewhere,
    #[error("its jump target landed out of reach")]
    TargetOutOfReach,
    #[error("writing its first bytes failed: {0}")]
    WriteFailed(#[source] Errno),
    #[error("a thread stayed inside its first {JUMP_LEN} bytes for {ms} ms")]
    ThreadInside { ms: u128 },
    #[error(
        "the current code's own entry could not be restored, so old entries cannot be sent to it"
    )]
    NotRestored,
    #[error("other threads could not be stopped: {0}")]
    NoStop(#[source] StopError),
    #[error("{0}")]
    Trap(#[source] TrapError),
    #[error("other threads could not be looked at: {0}")]
    NoLook(#[source] StopError),
    /// The work a caller asked to do with the threads parked refused: nothing was written.
    #[error("the switch was abandoned before any entry was written")]
    Abandoned,
    /// No round found every thread outside every entry to rewrite: nothing was written.
    #[error(
        "in every stop of the budget some thread was inside the first bytes of an entry to rewrite"
    )]
    HeldInside,
    #[error("the stub's data page landed out of reach")]
    StubOutOfReach,
    #[error("cannot map a dispatch stub: {0}")]
    StubUnmappable(#[source] Box<EntryError>),
    #[error("cannot make a dispatch stub executable: {0}")]
    StubUnsealable(#[source] Errno),
    #[error("no free page within ±2 GiB of {near:#x} for a dispatch stub")]
    NoFreePage { near: u64 },
}

impl EntryError {
    /// Whether the whole switch was refused before any entry was written.
    pub fn nothing_written(&self) -> bool {
        matches!(self, EntryError::Abandoned | EntryError::HeldInside)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    /// A failed write keeps its errno as a typed source; the message reads as before.
    #[test]
    fn a_failed_write_carries_its_errno() {
        let e = EntryError::WriteFailed(Errno(libc::EPERM));
        assert_eq!(
            e.to_string(),
            format!(
                "writing its first bytes failed: {}",
                std::io::Error::from_raw_os_error(libc::EPERM)
            )
        );
        let errno = e.source().and_then(|s| s.downcast_ref::<Errno>());
        assert_eq!(errno, Some(&Errno(libc::EPERM)));
        assert!(!e.nothing_written());
        assert!(EntryError::Abandoned.nothing_written());
        assert!(EntryError::HeldInside.nothing_written());
    }

    /// Causes a report words alike still differ to a caller.
    #[test]
    fn stop_and_look_failures_differ() {
        let why = StopError::NoSignal;
        let stop = EntryError::NoStop(why.clone());
        let look = EntryError::NoLook(why);
        assert_ne!(stop, look);
        assert!(stop
            .to_string()
            .starts_with("other threads could not be stopped: "));
        assert!(look.source().unwrap().is::<StopError>());
    }
}
