//! Why a reload or rollback was refused, with the stable code it carries on the wire.

use super::guard::StructureError;
use super::private::PrivateError;
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

/// An errno shown exactly as `std::io::Error` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", std::io::Error::from_raw_os_error(*.0))]
pub struct IoErrno(pub i32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    FileUnreadable(String),
    /// The patch file (or the descriptor the client passed) could not be read.
    #[error("cannot read {path}: {cause}")]
    Unreadable {
        path: String,
        #[source]
        cause: OsError,
    },
    #[error("{0}")]
    BadElf(String),
    /// A structural check refused the file: loading it would crash the loader.
    #[error("{path}: {cause}")]
    Corrupted {
        path: String,
        #[source]
        cause: StructureError,
    },
    #[error("{0}")]
    LoadFailed(String),
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
    #[error("{0}")]
    NoCommonSymbols(String),
    #[error("{0}")]
    IncompatibleSymbol(String),
    /// The new build's private data cannot be shared with the replaced module's.
    #[error("{0}")]
    PrivateState(String),
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
    #[error("{0}")]
    WriteFailed(String),
    /// Entries that jump to the code being left could not be rewritten: the switch was refused
    /// (or undone), so nothing claims a change that did not happen.
    #[error("{0}")]
    EntriesUnwritable(String),
    #[error("{0}")]
    Internal(String),
    /// The request's deadline passed or its client left before the change started.
    #[error("{0}")]
    Abandoned(String),
    /// A hook of the patch refused, failed or hung: nothing was switched.
    #[error("{0}")]
    Hook(String),
    /// The current generation is on probation: no other reload until it passes or is rolled back.
    #[error("{0}")]
    OnProbation(String),
}

impl ReloadError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ReloadError::FileUnreadable(_) | ReloadError::Unreadable { .. } => {
                ErrorCode::FileUnreadable
            }
            ReloadError::BadElf(_) | ReloadError::Corrupted { .. } => ErrorCode::BadElf,
            ReloadError::LoadFailed(_) | ReloadError::DependencyUnloadable { .. } => {
                ErrorCode::LoadFailed
            }
            ReloadError::ModuleNotFound(_) => ErrorCode::ModuleNotFound,
            ReloadError::NoCommonSymbols(_) => ErrorCode::NoCommonSymbols,
            ReloadError::IncompatibleSymbol(_)
            | ReloadError::PrivateState(_)
            | ReloadError::PrivateUnshareable { .. } => ErrorCode::IncompatibleSymbol,
            ReloadError::NothingToRollBack => ErrorCode::NothingToRollBack,
            ReloadError::WriteFailed(_) | ReloadError::EntriesUnwritable(_) => {
                ErrorCode::WriteFailed
            }
            ReloadError::Internal(_) | ReloadError::CopyUnmappable { .. } => ErrorCode::Internal,
            ReloadError::Abandoned(_) => ErrorCode::Abandoned,
            ReloadError::Hook(_) => ErrorCode::HookRefused,
            ReloadError::OnProbation(_) => ErrorCode::OnProbation,
        }
    }
}

impl ReloadError {
    /// Whether the new build's private data is what was refused (a migrate hook or a fresh
    /// start may take it over).
    pub fn is_private_state(&self) -> bool {
        matches!(
            self,
            ReloadError::PrivateState(_) | ReloadError::PrivateUnshareable { .. }
        )
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
}
