//! Architectures without entry jumps yet: every site is refused, so reloads stay GOT-only.
//! What aarch64 needs is written down in docs/design.md ("Entry jumps on aarch64").

pub const JUMP_LEN: usize = 4;
pub const STUB_LEN: usize = 8;
pub const REACH: u64 = 0;

pub fn window_offset(_code: &[u8]) -> usize {
    0
}

pub fn jump(_at: u64, _to: u64) -> Option<[u8; JUMP_LEN]> {
    None
}

pub fn stub(_at: u64, _slot: u64) -> Option<[u8; STUB_LEN]> {
    None
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal;

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("entry jumps are implemented for x86_64 only")
    }
}

pub fn check(_code: &[u8], _addr: u64, _window_off: usize) -> Result<(), Refusal> {
    Err(Refusal)
}
