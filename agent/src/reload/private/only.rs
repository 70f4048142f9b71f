//! `--changed-only`: which of the matched exports changed, and — when the private layouts
//! differ — whether the code the switched functions can reach touches only private data that
//! is the same in both builds. Objects that differ but that no reachable code uses are left to
//! the running code alone: the switched code never sees them.

use super::evidence::Partial;
use super::file::FileView;
use super::refs::Side;
use super::{
    identity, keep, named, other_ways, reach, sites, LiveIdentity, PrivateError, SharePlan, Sharing,
};
use crate::image::Layout;
use goblin::elf::Elf;
use hotagent_elfdiff::compare::compare_views;
pub use hotagent_elfdiff::compare::{Changes, Compared};

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
    compare_views(
        &old_view,
        &new_view,
        items,
        true,
        crate::sys::process::euid(),
    )
    .map_err(|e| refuse(e.to_string()))
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
