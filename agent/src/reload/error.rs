//! Why a reload or rollback was refused, with the stable code it carries on the wire.

use super::guard::StructureError;
use crate::sys::dl::DlError;
use hotagent_protocol::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    FileUnreadable(String),
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
            ReloadError::FileUnreadable(_) => ErrorCode::FileUnreadable,
            ReloadError::BadElf(_) | ReloadError::Corrupted { .. } => ErrorCode::BadElf,
            ReloadError::LoadFailed(_) | ReloadError::DependencyUnloadable { .. } => {
                ErrorCode::LoadFailed
            }
            ReloadError::ModuleNotFound(_) => ErrorCode::ModuleNotFound,
            ReloadError::NoCommonSymbols(_) => ErrorCode::NoCommonSymbols,
            ReloadError::IncompatibleSymbol(_) | ReloadError::PrivateState(_) => {
                ErrorCode::IncompatibleSymbol
            }
            ReloadError::NothingToRollBack => ErrorCode::NothingToRollBack,
            ReloadError::WriteFailed(_) | ReloadError::EntriesUnwritable(_) => {
                ErrorCode::WriteFailed
            }
            ReloadError::Internal(_) => ErrorCode::Internal,
            ReloadError::Abandoned(_) => ErrorCode::Abandoned,
            ReloadError::Hook(_) => ErrorCode::HookRefused,
            ReloadError::OnProbation(_) => ErrorCode::OnProbation,
        }
    }
}
