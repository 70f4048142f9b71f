//! Pointing the loaded new copy's references to its own private data at the old module's: each
//! RIP-relative displacement, each data pointer, each thread-local module-id slot. Runs after the
//! load and before any switch, while no thread can reach the new code yet (only threads its own
//! constructors started could), so plain writes through `/proc/self/mem` are enough.

use super::SharePlan;
use crate::image::Memory;
use crate::sys::code_window::CodeWindow;

/// Where the two modules are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub new_base: u64,
    pub old_base: u64,
    /// Thread-local module ids (`dlinfo(RTLD_DI_TLS_MODID)`), when the blocks are shared.
    pub new_modid: Option<u64>,
    pub old_modid: Option<u64>,
}

/// Why the redirect could not be made (the new copy is loaded, but nothing was switched).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("the new copy's code at {site:#x} cannot reach the old module's data at {target:#x} with a 32-bit displacement (they are mapped more than 2 GiB apart)")]
    TooFar { site: u64, target: u64 },
    #[error("the loaded new copy holds {found:02x?} at {addr:#x}, not the {expected:02x?} its file says")]
    Changed {
        addr: u64,
        expected: Vec<u8>,
        found: Vec<u8>,
    },
    #[error("the thread-local module id of the {0} module is unknown")]
    NoModid(&'static str),
    #[error("cannot write the new copy at {addr:#x}: {why}")]
    Write { addr: u64, why: String },
}

/// One write: `expected` bytes replaced by `value` bytes at `addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poke {
    pub addr: u64,
    pub expected: Vec<u8>,
    pub value: Vec<u8>,
}

/// The writes the redirect makes, from the plan and where the modules are.
pub fn pokes(plan: &SharePlan, at: &Placement) -> Result<Vec<Poke>, RedirectError> {
    let mut out = Vec::new();
    let old_abs = |t: u64| plan.shared.old_of(t).map(|o| at.old_base.wrapping_add(o));
    for c in &plan.sites.code {
        let Some(target) = old_abs(c.target) else {
            continue;
        };
        let site = at.new_base.wrapping_add(c.disp);
        let next = at.new_base.wrapping_add(c.next_ip);
        let disp = i32::try_from(target.wrapping_sub(next) as i64)
            .map_err(|_| RedirectError::TooFar { site, target })?;
        let was = c.target.wrapping_sub(c.next_ip) as i64 as i32;
        out.push(Poke {
            addr: site,
            expected: was.to_le_bytes().to_vec(),
            value: disp.to_le_bytes().to_vec(),
        });
    }
    for d in &plan.sites.data {
        let Some(target) = old_abs(d.target) else {
            continue;
        };
        out.push(Poke {
            addr: at.new_base.wrapping_add(d.at),
            expected: at.new_base.wrapping_add(d.target).to_le_bytes().to_vec(),
            value: target.to_le_bytes().to_vec(),
        });
    }
    if plan.shared.tls && !plan.sites.tls_modid.is_empty() {
        let new = at.new_modid.ok_or(RedirectError::NoModid("new"))?;
        let old = at.old_modid.ok_or(RedirectError::NoModid("old"))?;
        for &slot in &plan.sites.tls_modid {
            out.push(Poke {
                addr: at.new_base.wrapping_add(slot),
                expected: new.to_le_bytes().to_vec(),
                value: old.to_le_bytes().to_vec(),
            });
        }
    }
    Ok(out)
}

/// Checks every poke against the loaded bytes (`mem` reads the new copy), then writes them all.
/// `window_of` gives the window of loaded code or read-only data a write lands in: a process that
/// may not open `/proc/self/mem` (one that dropped privileges is no longer dumpable) gets the
/// bytes written by making the page writable for the instant — safe here, since no thread runs
/// the new copy's code yet.
pub fn apply(
    pokes: &[Poke],
    mem: &impl Memory,
    window_of: impl Fn(u64, u64) -> Option<CodeWindow>,
) -> Result<(), RedirectError> {
    for p in pokes {
        let found = mem
            .tail(p.addr)
            .and_then(|t| t.get(..p.expected.len()))
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        if found != p.expected {
            return Err(RedirectError::Changed {
                addr: p.addr,
                expected: p.expected.clone(),
                found,
            });
        }
    }
    let file = crate::sys::self_mem::open_proc_mem().ok();
    let fd = file.as_ref().map_or(-1, |f| f.as_raw_fd());
    for p in pokes {
        let window =
            window_of(p.addr, p.value.len() as u64).ok_or_else(|| RedirectError::Write {
                addr: p.addr,
                why: "no segment of the new copy holds it".to_string(),
            })?;
        crate::sys::self_mem::poke_code(fd, &window, &p.value).map_err(|why| {
            RedirectError::Write {
                addr: p.addr,
                why: format!("it cannot be written ({why})"),
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::evidence::{Evidence, MapRange, Shared};
    use super::super::sites::{CodeSite, DataWord, Sites};
    use super::*;

    fn plan() -> SharePlan {
        SharePlan {
            module: "libx.so".into(),
            shared: Shared {
                evidence: Evidence::Symtab,
                ranges: vec![MapRange {
                    new: 0x4000,
                    len: 0x10,
                    old: 0x5000,
                }],
                own: vec![],
                only_new: vec![],
                objects: 1,
                bytes: 0x10,
                tls: false,
            },
            sites: Sites {
                code: vec![CodeSite {
                    disp: 0x1003,
                    next_ip: 0x1007,
                    target: 0x4008,
                }],
                data: vec![DataWord {
                    at: 0x3000,
                    target: 0x4004,
                }],
                tls_modid: vec![],
                instructions: 3,
            },
            reached: None,
        }
    }

    #[test]
    fn displacements_and_pointers_reach_the_old_storage() {
        let at = Placement {
            new_base: 0x7000_0000,
            old_base: 0x6000_0000,
            new_modid: None,
            old_modid: None,
        };
        let p = pokes(&plan(), &at).unwrap();
        assert_eq!(p[0].addr, 0x7000_1003);
        assert_eq!(p[0].expected, (0x4008i32 - 0x1007).to_le_bytes());
        let disp = i32::from_le_bytes(p[0].value.clone().try_into().unwrap());
        assert_eq!(0x7000_1007i64 + i64::from(disp), 0x6000_5008);
        assert_eq!(p[1].expected, 0x7000_4004u64.to_le_bytes());
        assert_eq!(p[1].value, 0x6000_5004u64.to_le_bytes());
    }

    #[test]
    fn too_far_is_an_error_not_a_truncation() {
        let at = Placement {
            new_base: 0x7f00_0000_0000,
            old_base: 0x1000_0000,
            new_modid: None,
            old_modid: None,
        };
        assert!(matches!(
            pokes(&plan(), &at),
            Err(RedirectError::TooFar { .. })
        ));
    }
}
