//! Architectures without entry jumps yet: every site is refused, so reloads stay GOT-only.
//! What aarch64 needs is written down in docs/design.md ("Entry jumps on aarch64").

pub const JUMP_LEN: usize = 4;
pub const ISLAND_LEN: usize = 16;
pub const REACH: u64 = 0;

pub fn window_offset(_code: &[u8]) -> usize {
    0
}

pub fn jump(_at: u64, _to: u64) -> Option<[u8; JUMP_LEN]> {
    None
}

pub fn island(_to: u64) -> [u8; ISLAND_LEN] {
    [0; ISLAND_LEN]
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
