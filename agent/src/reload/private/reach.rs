//! The code of the new build that switched functions can run: from the changed functions,
//! every function a direct call or jump reaches, and every function whose address that code
//! takes (it may call it through the pointer). A call through the PLT or GOT is not followed:
//! the new copy's slots for a function that is not switched are bound to the running code.
//! Pointers the old code stored are not followed either: calling them runs the old code.

use super::refs::Side;
use iced_x86::{Decoder, DecoderOptions, Instruction, OpKind};

/// Why the reach cannot be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReachError {
    #[error("the code at {0:#x}, reached from the changed functions, belongs to no function symbol (its extent is unknown)")]
    Unnamed(u64),
    #[error("the function at {0:#x} lies outside the file's sections")]
    NoBytes(u64),
}

/// Sorted, disjoint `[start, end)` ranges of new-file code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    pub ranges: Vec<(u64, u64)>,
}

impl Reach {
    pub fn contains(&self, a: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.0 <= a);
        i > 0 && a < self.ranges[i - 1].1
    }

    pub fn functions(&self) -> usize {
        self.ranges.len()
    }
}

/// The functions of `new` reachable from `roots` (function ranges).
pub(super) fn reach(new: &Side<'_>, roots: &[(u64, u64)]) -> Result<Reach, ReachError> {
    let functions = new.function_ranges();
    let enclosing = |a: u64| -> Option<(u64, u64)> {
        let i = functions.partition_point(|r| r.0 <= a);
        functions[..i]
            .iter()
            .rev()
            .take(8)
            .find(|r| a < r.1)
            .copied()
    };
    let mut seen = std::collections::HashSet::new();
    let mut todo: Vec<(u64, u64)> = roots.to_vec();
    let mut ins = Instruction::default();
    while let Some(f) = todo.pop() {
        if !seen.insert(f) {
            continue;
        }
        let code = new.bytes(f.0, f.1 - f.0).ok_or(ReachError::NoBytes(f.0))?;
        let mut dec = Decoder::with_ip(64, code, f.0, DecoderOptions::NONE);
        while dec.can_decode() {
            dec.decode_out(&mut ins);
            let mut targets = Vec::new();
            for i in 0..ins.op_count() {
                if matches!(
                    ins.op_kind(i),
                    OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
                ) {
                    targets.push(ins.near_branch_target());
                }
            }
            if ins.is_ip_rel_memory_operand() {
                targets.push(ins.ip_rel_memory_address());
            }
            for t in targets {
                if (f.0..f.1).contains(&t) || !new.is_code(t) || new.is_plt(t) {
                    continue;
                }
                todo.push(enclosing(t).ok_or(ReachError::Unnamed(t))?);
            }
        }
    }
    let mut seen: Vec<(u64, u64)> = seen.into_iter().collect();
    seen.sort_unstable();
    // Nested or overlapping symbols (aliases of one body) make one range.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for r in seen {
        match ranges.last_mut() {
            Some(last) if r.0 <= last.1 => last.1 = last.1.max(r.1),
            _ => ranges.push(r),
        }
    }
    Ok(Reach { ranges })
}
