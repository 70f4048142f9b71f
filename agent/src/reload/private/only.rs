//! `--changed-only`: which of the matched exports changed, and — when the private layouts
//! differ — whether the code the switched functions can reach touches only private data that
//! is the same in both builds. Objects that differ but that no reachable code uses are left to
//! the running code alone: the switched code never sees them.

use super::changed::{self, Change};
use super::evidence::Partial;
use super::file::FileView;
use super::refs::{Pair, Side};
use super::{
    debug_file_for, identity, keep, named, other_ways, reach, sites, LiveIdentity, PrivateError,
    SharePlan, Sharing,
};
use crate::image::Layout;
use goblin::elf::Elf;

/// One export of the running module to compare with the new build's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compared {
    pub name: String,
    /// File address and size in the running module's file; `None` when it cannot be told
    /// (an earlier reload switched it: what runs is not the file's code).
    pub old: Option<(u64, u64)>,
    /// Read-only data (compared by bytes and relocations) rather than a function.
    pub data: bool,
}

/// The verdict for each compared export, and the new-file ranges of the changed functions (and
/// of the functions the changed data points at): where the reach starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub verdicts: Vec<Change>,
    pub roots: Vec<(u64, u64)>,
}

/// Compares `items` between the running module's file and `new`.
pub fn changes(
    module: &Layout,
    live: &LiveIdentity,
    new: &[u8],
    items: &[Compared],
) -> Result<Changes, PrivateError> {
    let path = module.path.as_str();
    let file = crate::image::file_name(path);
    let refuse =
        |why: String| PrivateError::Refused(format!("--changed-only: {why}; nothing was loaded"));
    let new_view =
        FileView::parse(new).map_err(|e| refuse(format!("cannot read the new build: {e}")))?;
    let old_bytes = std::fs::read(path).map_err(|e| {
        refuse(format!(
            "cannot read {path} to compare its code with the new build's: {e}"
        ))
    })?;
    let old_view =
        FileView::parse(&old_bytes).map_err(|e| refuse(format!("cannot read {path}: {e}")))?;
    identity::prove(path, live, old_view.build_id().as_deref()).map_err(|e| {
        refuse(format!(
            "cannot compare with the running code of {file}: {e}"
        ))
    })?;
    let (old_debug, new_debug) = (debug_file_for(&old_view), debug_file_for(&new_view));
    let old_debug = old_debug.as_deref().and_then(|b| Elf::parse(b).ok());
    let new_debug = new_debug.as_deref().and_then(|b| Elf::parse(b).ok());
    let pick = |v: &FileView<'_>, d: &Option<Elf<'_>>| v.has_symtab() || d.is_some();
    let missing: Vec<&str> = [
        (!pick(&old_view, &old_debug)).then_some("the running build"),
        (!pick(&new_view, &new_debug)).then_some("the new build"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        return Err(refuse(format!(
            "it needs the symbol tables of both builds (.symtab, or debug info found by build-id under {}) to tell functions and objects apart, and {} has none",
            super::DEBUG_ROOT,
            missing.join(" and ")
        )));
    }
    let old_syms = old_debug.as_ref().unwrap_or(&old_view.elf);
    let new_syms = new_debug.as_ref().unwrap_or(&new_view.elf);
    let pair = Pair::new(
        Side::new(&old_view, old_syms),
        Side::new(&new_view, new_syms),
    );
    let mut verdicts = Vec::with_capacity(items.len());
    let mut roots = Vec::new();
    for item in items {
        let verdict = if item.data {
            changed::data(&pair, &item.name, item.old)
        } else {
            changed::function(&pair, &item.name, item.old)
        };
        if verdict.changed() {
            roots.extend(roots_of(&pair.new, item).map_err(refuse)?);
        }
        verdicts.push(verdict);
    }
    Ok(Changes { verdicts, roots })
}

/// Where the new code of a switched export starts: a function's own body (an IFUNC's resolver:
/// the implementations it returns are taken addresses, followed by the reach); for data, the
/// functions its relocated words point at.
fn roots_of(new: &Side<'_>, item: &Compared) -> Result<Vec<(u64, u64)>, String> {
    if !item.data {
        return match new.function(&item.name) {
            Some(f) if f.size > 0 => Ok(vec![(f.addr, f.addr + f.size)]),
            _ => Err(format!(
                "cannot tell where the new build's {} starts and ends (no single symbol with a size names it)",
                item.name
            )),
        };
    }
    let Some(d) = new.syms.iter().find(|s| !s.func && s.name == item.name) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for r in new
        .f
        .rels
        .iter()
        .filter(|r| d.addr <= r.offset && r.offset < d.addr + d.size)
    {
        let Some(v) = r.value.filter(|&v| new.is_code(v)) else {
            continue;
        };
        match new.containing(v).filter(|s| s.func && s.size > 0) {
            Some(f) => out.push((f.addr, f.addr + f.size)),
            None => {
                return Err(format!(
                    "{} points at code no function symbol names ({v:#x})",
                    item.name
                ))
            }
        }
    }
    Ok(out)
}

/// The share plan when the layouts differ: only what the reachable code references must match.
pub(super) fn reached_only(
    path: &str,
    new_view: &FileView<'_>,
    new_syms: &Elf<'_>,
    roots: &[(u64, u64)],
    p: Partial,
) -> Result<Sharing, PrivateError> {
    let refuse = |why: String| {
        PrivateError::Refused(format!(
            "{why}; nothing was loaded. Ways forward: {}",
            other_ways(path)
        ))
    };
    let side = Side::new(new_view, new_syms);
    let reach = reach::reach(&side, roots).map_err(|e| {
        refuse(format!(
            "--changed-only cannot tell what the switched code runs: {e}"
        ))
    })?;
    let mut sites = sites::find(new_view).map_err(|e| {
        refuse(format!(
            "cannot find the new build's references to its private data: {e}"
        ))
    })?;
    let differing = |t: u64| p.differing.iter().find(|d| d.start <= t && t < d.end);
    let (mut hit, mut unnamed) = (Vec::new(), Vec::new());
    sites.code.retain(|c| {
        let reached = reach.contains(c.disp);
        if let Some(d) = differing(c.target) {
            if reached {
                hit.push(d.what.clone());
            }
            return false;
        }
        if reached {
            keep(&p.shared, new_view, c.target, &mut unnamed)
        } else {
            // Unreached code is never run; pointing it at the live state costs nothing and
            // keeps a path the reach cannot see (a pointer) on the same data.
            !p.shared.is_own(c.target) && p.shared.old_of(c.target).is_some()
        }
    });
    let mut pointed = Vec::new();
    sites.data.retain(|d| {
        if let Some(x) = differing(d.target) {
            pointed.push(x.what.clone());
            return false;
        }
        keep(&p.shared, new_view, d.target, &mut unnamed)
    });
    for list in [&mut hit, &mut pointed, &mut unnamed] {
        list.sort();
        list.dedup();
    }
    if !hit.is_empty() {
        return Err(refuse(format!(
            "even with --changed-only: the changed functions (or code they call) use private data that differs from the running {}'s: {}",
            crate::image::file_name(path),
            named(&hit)
        )));
    }
    if !pointed.is_empty() {
        return Err(refuse(format!(
            "even with --changed-only: pointers in the new build's data lead to private data that differs, and any code may follow them: {}",
            named(&pointed)
        )));
    }
    if !unnamed.is_empty() {
        return Err(refuse(format!(
            "the new build's code reaches private data no symbol names, so its place in the running copy is unknown: {}",
            named(&unnamed)
        )));
    }
    if !p.shared.tls {
        sites.tls_modid.clear();
    }
    let unshared = p.differing.iter().map(|d| d.what.clone()).collect();
    Ok(Sharing::Shared(Box::new(SharePlan {
        module: path.to_string(),
        shared: p.shared,
        sites,
        reached: Some((reach.functions(), unshared)),
    })))
}
