//! What an entry jump is on x86_64, and whether a function can take one.
//!
//! The jump is a 5-byte `jmp rel32` written at the entry, or just after an `endbr64` (indirect
//! calls must still land on one when IBT is enforced), to the symbol's dispatch stub near it: a
//! `jmp [rip+disp32]` through a data slot holding the current code's address. Neither clobbers a
//! register: `rax` carries the vector-register count of a variadic call, and every argument
//! register stays as the caller left it. The stub's target is a data store away, so retargeting
//! every old entry of a symbol is one atomic store, however many generations it has had.
//!
//! Overwriting 5 bytes is safe only if no code can arrive strictly inside them later: no branch
//! of the function may target them, and no call among them may return into them. Threads that are
//! inside them right now are the stopper's concern (`sys::stop`).

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};

/// Bytes the jump replaces.
pub const JUMP_LEN: usize = 5;
/// Bytes of a dispatch stub: `jmp qword [rip+disp32]` (6), two `int3` of padding.
pub const STUB_LEN: usize = 8;

const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

/// Where in the function the jump goes: after an `endbr64`, else at the entry.
pub fn window_offset(code: &[u8]) -> usize {
    if code.starts_with(&ENDBR64) {
        ENDBR64.len()
    } else {
        0
    }
}

/// `jmp rel32` at `at` to `to`, when `to` is within reach.
pub fn jump(at: u64, to: u64) -> Option<[u8; JUMP_LEN]> {
    let next = at.wrapping_add(JUMP_LEN as u64);
    let rel = i32::try_from(to.wrapping_sub(next) as i64).ok()?;
    let r = rel.to_le_bytes();
    Some([0xe9, r[0], r[1], r[2], r[3]])
}

/// A stub at `at` jumping to wherever the 8-byte slot at `slot` points, when within reach.
pub fn stub(at: u64, slot: u64) -> Option<[u8; STUB_LEN]> {
    let rel = i32::try_from(slot.wrapping_sub(at + 6) as i64).ok()?;
    let r = rel.to_le_bytes();
    Some([0xff, 0x25, r[0], r[1], r[2], r[3], 0xcc, 0xcc])
}

/// How far a `jmp rel32` reaches from its window, either way (kept a page short of 2 GiB).
pub const REACH: u64 = (1 << 31) - (1 << 16);

/// Why a function cannot take a jump at its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    TooShort { size: u64, needed: u64 },
    Undecodable { at: u64 },
    BranchInside { from: u64, to: u64 },
    ReturnsInside { call: u64 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooShort { size, needed } => write!(
                f,
                "function too short for a jump: {size} bytes, a jump needs {needed}"
            ),
            Refusal::Undecodable { at } => {
                write!(f, "cannot decode the instruction at +{at:#x}")
            }
            Refusal::BranchInside { from, to } => write!(
                f,
                "the branch at +{from:#x} lands at +{to:#x}, inside the bytes a jump would replace"
            ),
            Refusal::ReturnsInside { call } => write!(
                f,
                "the call at +{call:#x} returns inside the bytes a jump would replace"
            ),
        }
    }
}

/// Checks that the window at `window_off` of the function `code` (loaded at `addr`) can be
/// replaced: it fits, and nothing can arrive strictly inside it once it holds the jump.
pub fn check(code: &[u8], addr: u64, window_off: usize) -> Result<(), Refusal> {
    let needed = (window_off + JUMP_LEN) as u64;
    if (code.len() as u64) < needed {
        return Err(Refusal::TooShort {
            size: code.len() as u64,
            needed,
        });
    }
    let start = addr + window_off as u64;
    let end = start + JUMP_LEN as u64;
    let inside = |a: u64| a > start && a < end;
    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut ins);
        if ins.is_invalid() {
            return Err(Refusal::Undecodable {
                at: ins.ip() - addr,
            });
        }
        let target = ins.near_branch_target();
        if target != 0 && inside(target) {
            return Err(Refusal::BranchInside {
                from: ins.ip() - addr,
                to: target - addr,
            });
        }
        if ins.mnemonic() == Mnemonic::Call && inside(ins.next_ip()) {
            return Err(Refusal::ReturnsInside {
                call: ins.ip() - addr,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_reach_two_gib_either_way() {
        assert_eq!(jump(0x1000, 0x1005), Some([0xe9, 0, 0, 0, 0]));
        assert_eq!(jump(0x1000, 0x1000), Some([0xe9, 0xfb, 0xff, 0xff, 0xff]));
        assert!(jump(0x1000, 0x1005 + i32::MAX as u64).is_some());
        assert!(jump(0x1000, 0x1006 + i32::MAX as u64).is_none());
        assert!(jump(0x7f00_0000_0000, 0x5500_0000_0000).is_none());
    }

    #[test]
    fn stubs_jump_through_their_slot_without_registers() {
        let b = stub(0x7000_1000, 0x7000_2008).unwrap();
        let mut d = Decoder::with_ip(64, &b, 0x7000_1000, DecoderOptions::NONE);
        let ins = d.decode();
        assert_eq!(ins.mnemonic(), Mnemonic::Jmp);
        assert_eq!(ins.len(), 6);
        assert!(ins.is_ip_rel_memory_operand());
        assert_eq!(ins.ip_rel_memory_address(), 0x7000_2008);
        assert!(stub(0x1000, 0x1006 + (1 << 32)).is_none());
    }

    #[test]
    fn keeps_endbr64() {
        assert_eq!(
            window_offset(&[0xf3, 0x0f, 0x1e, 0xfa, 0x31, 0xc0, 0xc3]),
            4
        );
        assert_eq!(window_offset(&[0x31, 0xc0, 0xc3]), 0);
    }

    #[test]
    fn refuses_functions_shorter_than_the_window() {
        // endbr64; xor eax,eax; ret
        let f = [0xf3, 0x0f, 0x1e, 0xfa, 0x31, 0xc0, 0xc3];
        assert_eq!(
            check(&f, 0x1000, 4),
            Err(Refusal::TooShort { size: 7, needed: 9 })
        );
        // lea eax,[rdi+rdi*2+1]; ret: exactly five bytes
        assert_eq!(check(&[0x8d, 0x44, 0x7f, 0x01, 0xc3], 0x1000, 0), Ok(()));
    }

    #[test]
    fn refuses_a_loop_back_into_the_window() {
        // xor eax,eax; L: add eax,1; cmp eax,edi; jl L; ret   (L = +2)
        let f = [0x31, 0xc0, 0x83, 0xc0, 0x01, 0x39, 0xf8, 0x7c, 0xf9, 0xc3];
        assert_eq!(
            check(&f, 0x1000, 0),
            Err(Refusal::BranchInside { from: 7, to: 2 })
        );
        // A branch to the entry itself is fine: it meets the jump.
        let g = [0x83, 0xc0, 0x01, 0x39, 0xf8, 0x7c, 0xf9, 0xc3];
        assert_eq!(check(&g, 0x1000, 0), Ok(()));
    }

    #[test]
    fn refuses_a_call_returning_into_the_window() {
        // call rax; nop x3; ret — returns to +2
        let f = [0xff, 0xd0, 0x90, 0x90, 0x90, 0xc3];
        assert_eq!(
            check(&f, 0x1000, 0),
            Err(Refusal::ReturnsInside { call: 0 })
        );
        // call rel32 fills the window: it returns to its end, which is fine.
        let g = [0xe8, 0, 0, 0, 0, 0xc3];
        assert_eq!(check(&g, 0x1000, 0), Ok(()));
    }

    #[test]
    fn refuses_undecodable_code() {
        assert_eq!(
            check(&[0x90, 0x90, 0x90, 0x90, 0x90, 0x0f, 0xff], 0x1000, 0),
            Err(Refusal::Undecodable { at: 5 })
        );
    }
}
