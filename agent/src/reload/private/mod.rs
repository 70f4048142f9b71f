//! Private state: the new build's code must run on the replaced module's private writable data
//! (`.data`, `.bss`, its thread-local block), or the reload is refused.
//!
//! Everything is decided from the two files before anything is loaded, so a dry run runs the
//! same code and a refusal loads nothing: `identity` proves the old file is the mapped build,
//! `evidence` proves the layouts match (or names what differs), `sites` finds every reference of
//! the new code to its own private data. After the load, `redirect` points those references at
//! the old module's storage, before any switch makes the new code reachable. The new copy's
//! constructors have run by then on its own, fresh data: a constructor never re-initialises the
//! live state.

mod evidence;
mod identity;
mod only;
mod reach;
mod redirect;
mod sites;
mod snapshot;

// The file comparison `hotctl diff` shares with `--changed-only` lives in its own crate.
use hotagent_elfdiff::{file, refs};

pub use evidence::Shared;
use file::FileView;
pub use identity::{build_id_in_notes, live_build_id, prove, LiveIdentity};
pub use only::{changes, Compared};
pub use sites::Sites;
pub use snapshot::{checkpoint, Snapshot, Variable};

use super::parsed::Parsed;
use crate::image::Layout;
use evidence::Verdict;

/// At most this many differences are named in a refusal.
const NAMED: usize = 8;

/// Why private state cannot be shared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivateError {
    #[error("{0}")]
    Refused(String),
}

/// What the reload does about private state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sharing {
    /// The new build keeps no private state of its own.
    Nothing,
    /// `--fresh-state`: the new copy runs on its own, fresh data.
    Fresh,
    Shared(Box<SharePlan>),
}

/// The redirect to make once the new copy is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharePlan {
    pub module: String,
    pub shared: Shared,
    pub sites: Sites,
    /// `--changed-only` with a layout that differs: how many functions the switched code can
    /// reach, and the objects that differ but none of them uses (left alone).
    pub reached: Option<(usize, Vec<String>)>,
}

impl Sharing {
    /// The report's line about it, if any.
    pub fn note(&self, module: &str) -> Option<String> {
        match self {
            Sharing::Nothing => None,
            Sharing::Fresh => Some(format!(
                "--fresh-state: the new build runs on its own, freshly initialised private data (.data, .bss, thread-local); the state of the running {} is not shared",
                crate::image::file_name(module)
            )),
            Sharing::Shared(p) => Some(p.summary()),
        }
    }
}

impl SharePlan {
    pub fn summary(&self) -> String {
        let s = &self.shared;
        let mut line = format!(
            "private state shared with {}: {} object{}, {} (evidence: {}); {} code reference{} and {} data pointer{} redirected",
            crate::image::file_name(&self.module),
            s.objects,
            plural(s.objects),
            size(s.bytes),
            s.evidence.label(),
            self.sites.code.len(),
            plural(self.sites.code.len()),
            self.sites.data.len(),
            plural(self.sites.data.len()),
        );
        if s.tls {
            line.push_str(&format!(
                "; thread-local block shared ({} module-id slot{})",
                self.sites.tls_modid.len(),
                plural(self.sites.tls_modid.len())
            ));
        }
        if !s.only_new.is_empty() {
            line.push_str(&format!(
                "; only in the new build, so its own fresh state: {}",
                named(&s.only_new)
            ));
        }
        if let Some((functions, unshared)) = &self.reached {
            line.push_str(&format!(
                "; --changed-only: the {functions} function{} the switched code can reach {} none of the private data that differs ({}), which only the running code keeps using",
                plural(*functions),
                if *functions == 1 { "uses" } else { "use" },
                named(unshared)
            ));
        }
        line
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn size(b: u64) -> String {
    if b < 1024 {
        format!("{b} B")
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

fn named(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > NAMED {
        s.push_str(&format!(" and {} more", items.len() - NAMED));
    }
    s
}

/// Decides, from `new` (the sealed copy's bytes) and the replaced module's file, how the new
/// build's private data is handled.
pub fn analyse(
    module: &Layout,
    live: &LiveIdentity,
    new: &Parsed<'_>,
    fresh: bool,
    changed_only: Option<&[(u64, u64)]>,
) -> Result<Sharing, PrivateError> {
    if fresh {
        return Ok(Sharing::Fresh);
    }
    let path = module.path.as_str();
    let refuse = |why: String| PrivateError::Refused(format!("{why}; {}", ways_forward(path)));
    let new_view = new.view().map_err(|e| {
        refuse(format!(
            "cannot read the new build's private data layout: {e}"
        ))
    })?;
    if new_view.private.is_empty() && new_view.tls.is_none() {
        return Ok(Sharing::Nothing);
    }
    let mut sites = sites::find(new_view).map_err(|e| {
        refuse(format!(
            "cannot find the new build's references to its private data: {e}"
        ))
    })?;
    // Code that never reaches its own private data needs none shared, whatever the layouts: a
    // stripped patch of a few functions has only the C runtime's bookkeeping there (reached
    // from start-up code no unwind entry covers), and no evidence could pair it with the
    // library's.
    if sites.code.is_empty() && sites.data.is_empty() && new_view.tls.is_none() {
        return Ok(Sharing::Nothing);
    }
    let old_bytes = std::fs::read(path).map_err(|e| {
        refuse(format!(
            "cannot read {path} to compare its private data with the new build's: {e}"
        ))
    })?;
    let old_view = FileView::parse(&old_bytes)
        .map_err(|e| refuse(format!("cannot read {path}'s private data layout: {e}")))?;
    identity::prove(path, live, old_view.build_id().as_deref())
        .map_err(|e| refuse(format!("cannot share its private state: {e}")))?;
    let old_debug = debug_file_for(&old_view);
    let new_debug = debug_file_for(new_view);
    let old_debug_elf = old_debug
        .as_deref()
        .and_then(|b| goblin::elf::Elf::parse(b).ok());
    let new_debug_elf = new_debug
        .as_deref()
        .and_then(|b| goblin::elf::Elf::parse(b).ok());
    let (old_syms, old_dbg) = if old_view.has_symtab() {
        (Some(&old_view.elf), false)
    } else {
        (old_debug_elf.as_ref(), old_debug_elf.is_some())
    };
    let (new_syms, new_dbg) = if new_view.has_symtab() {
        (Some(&new_view.elf), false)
    } else {
        (new_debug_elf.as_ref(), new_debug_elf.is_some())
    };
    let both = old_syms.is_some() && new_syms.is_some();
    let verdict = evidence::compare(
        &old_view,
        new_view,
        old_syms.filter(|_| both),
        new_syms.filter(|_| both),
        both && (old_dbg || new_dbg),
    );
    let shared = match verdict {
        Verdict::Nothing => return Ok(Sharing::Nothing),
        Verdict::Differs(_, Some(partial)) if changed_only.is_some() && new_syms.is_some() => {
            let roots = changed_only.unwrap_or_default();
            let new_syms = new_syms.unwrap_or(&new_view.elf);
            return only::reached_only(path, new_view, new_syms, roots, partial);
        }
        Verdict::Differs(d, _) if changed_only.is_some() => {
            return Err(PrivateError::Refused(format!(
                "the new build's private data differs from the running {}'s where it is shared as a whole, so even --changed-only cannot run it on the live state: {}; nothing was loaded. Ways forward: {}",
                crate::image::file_name(path),
                named(&d),
                other_ways(path)
            )))
        }
        Verdict::Differs(d, _) => {
            return Err(PrivateError::Refused(format!(
                "the new build's private data (not exported: statics, .data, .bss, thread-local) differs from the running {}'s, so the new code cannot run on the live state: {}; {}",
                crate::image::file_name(path),
                named(&d),
                ways_forward(path)
            )))
        }
        Verdict::Shared(s) => s,
    };
    let mut unnamed = Vec::new();
    sites
        .code
        .retain(|c| keep(&shared, new_view, c.target, &mut unnamed));
    sites
        .data
        .retain(|d| keep(&shared, new_view, d.target, &mut unnamed));
    if !unnamed.is_empty() {
        unnamed.sort();
        unnamed.dedup();
        return Err(refuse(format!(
            "the new build's code reaches private data no symbol names, so its place in the running copy is unknown: {}",
            named(&unnamed)
        )));
    }
    if !shared.tls {
        sites.tls_modid.clear();
    }
    Ok(Sharing::Shared(Box::new(SharePlan {
        module: path.to_string(),
        shared,
        sites,
        reached: None,
    })))
}

/// Is a reference to `target` one to redirect? Own data is left alone; data neither shared nor
/// own is collected in `unnamed`.
fn keep(shared: &Shared, f: &FileView<'_>, target: u64, unnamed: &mut Vec<String>) -> bool {
    if shared.is_own(target) {
        return false;
    }
    if shared.old_of(target).is_some() {
        return true;
    }
    if let Some(s) = f.private_section(target) {
        unnamed.push(format!("{}+{:#x}", s.name, target - s.addr));
    }
    false
}

fn ways_forward(path: &str) -> String {
    format!(
        "nothing was loaded. Ways forward: --changed-only (switch only the functions whose code differs, if none of them reaches what differs), {}",
        other_ways(path)
    )
}

/// The ways forward once `--changed-only` was tried.
fn other_ways(path: &str) -> String {
    format!(
        "a patch library carrying only the changed functions, a migrate hook (hotagent_migrate), or --fresh-state if {} keeps no state worth keeping",
        crate::image::file_name(path)
    )
}

/// The build-id of the ELF file `bytes`, if it has one.
pub fn build_id_of(bytes: &[u8]) -> Option<Vec<u8>> {
    FileView::parse(bytes).ok()?.build_id()
}

/// The separate debug file of the ELF file `bytes` (see [`debug_file_for`]).
pub fn debug_file_of(bytes: &[u8]) -> Option<Vec<u8>> {
    debug_file_for(&FileView::parse(bytes).ok()?)
}

/// The separate debug file of `f` by build-id, if one is installed and trustworthy.
fn debug_file_for(f: &FileView<'_>) -> Option<Vec<u8>> {
    hotagent_elfdiff::compare::debug_file_for(f, crate::sys::process::euid())
}

pub use redirect::{apply, pokes, Placement, RedirectError};
