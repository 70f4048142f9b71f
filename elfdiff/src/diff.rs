//! `hotctl diff OLD.so NEW.so`: the exported functions a new build adds, removes and changes,
//! and the exported data whose size changed. "Changed" is decided exactly as
//! `reload --changed-only` decides it (`compare::compare_files`: code compared with references
//! normalised, read-only data reached rip-relative compared by content), so the two never
//! disagree; when a function cannot be compared it counts as changed.

use crate::changed::Change;
use crate::compare::{compare_files, Compared};
use goblin::elf::{section_header::SHN_UNDEF, sym, Elf};
use std::collections::BTreeMap;

/// A function that differs, and whether that was proven or assumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub name: String,
    /// False when it could not be compared (an IFUNC, no size, no symbol table): taken as
    /// changed.
    pub proven: bool,
}

/// Exported data whose size differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resized {
    pub name: String,
    pub old_size: u64,
    pub new_size: u64,
}

/// What differs between two builds' exports; every list is sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileDiff {
    pub changed: Vec<Changed>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Functions in both builds whose code is the same.
    pub unchanged: Vec<String>,
    pub data_resized: Vec<Resized>,
    pub data_added: Vec<String>,
    pub data_removed: Vec<String>,
    /// Why functions were taken as changed without proof, when the reason is the files'.
    pub notes: Vec<String>,
}

impl FileDiff {
    /// Nothing added, removed, changed or resized.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.data_resized.is_empty()
            && self.data_added.is_empty()
            && self.data_removed.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("the old build is not an ELF file: {0}")]
    Old(String),
    #[error("the new build is not an ELF file: {0}")]
    New(String),
}

#[derive(Debug, Clone, Copy)]
struct Export {
    addr: u64,
    size: u64,
    func: bool,
}

/// The defined, visible symbols of `.dynsym` by name (the first version of a name wins).
fn exports(elf: &Elf<'_>) -> BTreeMap<String, Export> {
    let mut out = BTreeMap::new();
    for s in elf.dynsyms.iter() {
        let visible = matches!(
            s.st_bind(),
            sym::STB_GLOBAL | sym::STB_WEAK | sym::STB_GNU_UNIQUE
        ) && matches!(s.st_visibility(), sym::STV_DEFAULT | sym::STV_PROTECTED);
        let func = matches!(s.st_type(), sym::STT_FUNC | sym::STT_GNU_IFUNC);
        let data = matches!(s.st_type(), sym::STT_OBJECT | sym::STT_TLS);
        let Some(name) = elf.dynstrtab.get_at(s.st_name) else {
            continue;
        };
        if !visible || !(func || data) || s.st_shndx == SHN_UNDEF as usize || name.is_empty() {
            continue;
        }
        out.entry(name.to_string()).or_insert(Export {
            addr: s.st_value,
            size: s.st_size,
            func,
        });
    }
    out
}

/// Compares the exports of two builds of a library, given their bytes; `euid` as for
/// [`crate::compare::debug_file_for`].
pub fn diff(old: &[u8], new: &[u8], euid: u32) -> Result<FileDiff, DiffError> {
    let old_elf = Elf::parse(old).map_err(|e| DiffError::Old(e.to_string()))?;
    let new_elf = Elf::parse(new).map_err(|e| DiffError::New(e.to_string()))?;
    let (before, after) = (exports(&old_elf), exports(&new_elf));
    let mut d = FileDiff::default();
    let mut common = Vec::new();
    for (name, o) in &before {
        match after.get(name) {
            // A function that became data or the reverse: gone as what it was, new as the other.
            Some(n) if n.func != o.func => {
                push_kind(&mut d.removed, &mut d.data_removed, o.func, name);
                push_kind(&mut d.added, &mut d.data_added, n.func, name);
            }
            Some(_) if o.func => common.push(Compared {
                name: name.clone(),
                old: Some((o.addr, o.size)),
                data: false,
            }),
            Some(n) if n.size != o.size => d.data_resized.push(Resized {
                name: name.clone(),
                old_size: o.size,
                new_size: n.size,
            }),
            Some(_) => {}
            None => push_kind(&mut d.removed, &mut d.data_removed, o.func, name),
        }
    }
    for (name, n) in &after {
        if !before.contains_key(name) {
            push_kind(&mut d.added, &mut d.data_added, n.func, name);
        }
    }
    let verdicts = match compare_files(old, new, &common, euid) {
        Ok(c) => c.verdicts,
        Err(why) => {
            d.notes.push(format!(
                "the code could not be compared, so every function in both builds counts as changed: {why}"
            ));
            vec![Change::Unknown; common.len()]
        }
    };
    for (item, verdict) in common.into_iter().zip(verdicts) {
        match verdict {
            Change::Same => d.unchanged.push(item.name),
            v => d.changed.push(Changed {
                name: item.name,
                proven: v == Change::Differs,
            }),
        }
    }
    for list in [
        &mut d.added,
        &mut d.removed,
        &mut d.data_added,
        &mut d.data_removed,
    ] {
        list.sort();
    }
    Ok(d)
}

fn push_kind(funcs: &mut Vec<String>, data: &mut Vec<String>, func: bool, name: &str) {
    match func {
        true => funcs.push(name.to_string()),
        false => data.push(name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_against_itself_has_no_difference() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        let d = diff(&me, &me, 0).unwrap();
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn refuses_what_is_not_elf() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        let e = diff(b"not an ELF file", &me, 0).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the old build is not an ELF file"),
            "{e}"
        );
        assert!(matches!(diff(&me, b"", 0).unwrap_err(), DiffError::New(_)));
    }
}
