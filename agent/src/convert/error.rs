//! Why a class cannot be converted, each message naming the vtable symbol(s) concerned.

/// A refusal of `hotagent_convert_class` (or of its rollback half).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{symbol}: cannot read its {size} bytes at {addr:#x}")]
    Unreadable {
        symbol: String,
        addr: u64,
        size: u64,
    },
    #[error(
        "{symbol}: its size {size} is not that of a vtable (offset-to-top, typeinfo and at least \
         one method: a multiple of 8, 24 bytes or more)"
    )]
    BadSize { symbol: String, size: u64 },
    #[error(
        "{symbol}: its first word is {value:#x}, not an offset-to-top of 0: not a primary vtable \
         (virtual inheritance puts virtual base offsets there), which is not supported"
    )]
    NotPrimary { symbol: String, value: u64 },
    #[error(
        "{symbol}: multiple or virtual inheritance (a secondary vtable at offset {offset}) is not \
         supported"
    )]
    Secondary { symbol: String, offset: u64 },
    #[error("{symbol}: method slot {slot} holds {value:#x}, which does not point into code")]
    NotCode {
        symbol: String,
        slot: usize,
        value: u64,
    },
    #[error(
        "{old} has {old_methods} virtual methods but {new} has {new_methods}: a class can only be \
         converted to one with the same methods in the same slots"
    )]
    CountMismatch {
        old: String,
        old_methods: usize,
        new: String,
        new_methods: usize,
    },
    #[error("{old} -> {new}: the upgrade converter is NULL")]
    NoUpgrade { old: String, new: String },
    #[error("{old} -> {new}: the {which} converter ({addr:#x}) does not point into code")]
    ConverterNotCode {
        old: String,
        new: String,
        which: &'static str,
        addr: u64,
    },
    #[error(
        "{new}: objects converted from {old} cannot go back: no downgrade converter was given \
         (hotagent_convert_class with downgrade NULL)"
    )]
    NoDowngrade { old: String, new: String },
    #[error("{old} -> {new}: the entry thunk's target {addr:#x} is not a method address")]
    BadMethod { old: String, new: String, addr: u64 },
    #[error("{old} -> {new}: cannot map the conversion thunks: {source}")]
    Thunks {
        old: String,
        new: String,
        source: crate::entry::error::Errno,
    },
}
