//! Whether the exports two builds share differ: each compared export gets a verdict
//! (`changed.rs`), and the changed ones where their new code starts (for the reach).

use crate::changed::{self, Change};
use crate::file::{FileView, ParseError};
use crate::refs::{Pair, Side};
use goblin::elf::Elf;

/// Where separate debug files live, by build-id.
pub const DEBUG_ROOT: &str = "/usr/lib/debug/.build-id";

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

/// Why two builds could not be compared (every export then counts as changed).
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("cannot read the old build: {0}")]
    OldUnreadable(#[source] ParseError),
    #[error("cannot read the new build: {0}")]
    NewUnreadable(#[source] ParseError),
    /// Which builds lack one, e.g. "the running build and the new build".
    #[error("it needs the symbol tables of both builds (.symtab, or debug info found by build-id under {DEBUG_ROOT}) to tell functions and objects apart, and {missing} has none")]
    NoSymbols { missing: String },
    #[error("cannot tell where the new build's {0} starts and ends (no single symbol with a size names it)")]
    NoExtent(String),
    #[error("{name} points at code no function symbol names ({at:#x})")]
    UnnamedCode { name: String, at: u64 },
}

/// Compares `items` between two builds' files, `old` and `new` (`hotctl diff`): the same
/// verdicts `--changed-only` reaches, without a running module.
/// `euid`: whose separate debug files are trusted besides root's (see [`debug_file_for`]).
pub fn compare_files(
    old: &[u8],
    new: &[u8],
    items: &[Compared],
    euid: u32,
) -> Result<Changes, CompareError> {
    let old_view = FileView::parse(old).map_err(CompareError::OldUnreadable)?;
    let new_view = FileView::parse(new).map_err(CompareError::NewUnreadable)?;
    compare_views(&old_view, &new_view, items, false, euid)
}

/// The comparison itself, `old_view` being the running (or old) build; with `roots_wanted`,
/// also where each changed export's new code starts.
pub fn compare_views<'a>(
    old_view: &'a FileView<'a>,
    new_view: &'a FileView<'a>,
    items: &[Compared],
    roots_wanted: bool,
    euid: u32,
) -> Result<Changes, CompareError> {
    let (old_debug, new_debug) = (
        debug_file_for(old_view, euid),
        debug_file_for(new_view, euid),
    );
    let old_debug = old_debug.as_deref().and_then(|b| Elf::parse(b).ok());
    let new_debug = new_debug.as_deref().and_then(|b| Elf::parse(b).ok());
    let pick = |v: &FileView<'_>, d: &Option<Elf<'_>>| v.has_symtab() || d.is_some();
    let missing: Vec<&str> = [
        (!pick(old_view, &old_debug)).then_some("the running build"),
        (!pick(new_view, &new_debug)).then_some("the new build"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        return Err(CompareError::NoSymbols {
            missing: missing.join(" and "),
        });
    }
    let old_syms = old_debug.as_ref().unwrap_or(&old_view.elf);
    let new_syms = new_debug.as_ref().unwrap_or(&new_view.elf);
    let pair = Pair::new(Side::new(old_view, old_syms), Side::new(new_view, new_syms));
    let mut verdicts = Vec::with_capacity(items.len());
    let mut roots = Vec::new();
    for item in items {
        let verdict = if item.data {
            changed::data(&pair, &item.name, item.old)
        } else {
            changed::function(&pair, &item.name, item.old)
        };
        if roots_wanted && verdict.changed() {
            roots.extend(roots_of(&pair.new, item)?);
        }
        verdicts.push(verdict);
    }
    Ok(Changes { verdicts, roots })
}

/// Where the new code of a switched export starts: a function's own body (an IFUNC's resolver:
/// the implementations it returns are taken addresses, followed by the reach); for data, the
/// functions its relocated words point at.
fn roots_of(new: &Side<'_>, item: &Compared) -> Result<Vec<(u64, u64)>, CompareError> {
    if !item.data {
        return match new.function(&item.name) {
            Some(f) if f.size > 0 => Ok(vec![(f.addr, f.addr + f.size)]),
            _ => Err(CompareError::NoExtent(item.name.clone())),
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
                return Err(CompareError::UnnamedCode {
                    name: item.name.clone(),
                    at: v,
                })
            }
        }
    }
    Ok(out)
}

/// The separate debug file of `f` by build-id, if one is installed and trustworthy: a regular
/// file nobody but root or `euid` can write (its symbols decide where the agent's writes go).
pub fn debug_file_for(f: &FileView<'_>, euid: u32) -> Option<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    if f.has_symtab() {
        return None;
    }
    let id = f.build_id()?;
    let (head, rest) = id.split_first()?;
    let hex: String = rest.iter().map(|b| format!("{b:02x}")).collect();
    let path = format!("{DEBUG_ROOT}/{head:02x}/{hex}.debug");
    let md = std::fs::symlink_metadata(&path)
        .or_else(|_| std::fs::metadata(&path))
        .ok()?;
    let md = if md.file_type().is_symlink() {
        std::fs::metadata(&path).ok()?
    } else {
        md
    };
    let owner_ok = md.uid() == 0 || md.uid() == euid;
    if !md.is_file() || md.mode() & 0o022 != 0 || !owner_ok {
        tracing::info!(path, "separate debug file ignored: not a regular file owned by root or us, or writable by others");
        return None;
    }
    let bytes = std::fs::read(&path).ok()?;
    let dbg = FileView::parse(&bytes).ok()?;
    (dbg.build_id().as_deref() == Some(id.as_slice()) && dbg.has_symtab()).then_some(bytes)
}

#[cfg(test)]
mod error_tests {
    use super::*;
    use std::error::Error;

    /// Which build could not be read is a variant, with the parser's error as its source;
    /// the message reads as the formatted string did.
    #[test]
    fn compare_errors_name_their_cause() {
        let e = compare_files(b"not an elf", b"also not", &[], 0).unwrap_err();
        assert!(
            matches!(e, CompareError::OldUnreadable(ParseError::Elf(_))),
            "{e:?}"
        );
        assert!(e
            .to_string()
            .starts_with("cannot read the old build: cannot parse it: "));
        assert!(e.source().unwrap().is::<ParseError>());
        let none = CompareError::NoSymbols {
            missing: "the new build".into(),
        };
        assert!(none
            .to_string()
            .ends_with("apart, and the new build has none"));
    }
}
