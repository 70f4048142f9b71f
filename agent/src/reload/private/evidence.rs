//! Proving that the new build's private data has the replaced build's layout, object by object
//! when symbols say which object is which, section by section when nothing else is known.

use super::file::{base_name, first_difference, is_runtime_bookkeeping, FileView, Object};
use goblin::elf::Elf;
use std::collections::HashMap;

/// Where the names and places of the private objects came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Both files' own `.symtab`.
    Symtab,
    /// At least one side's symbols came from a separate debug file found by build-id.
    DebugInfo,
    /// No symbols: the private sections' names, sizes and initial bytes.
    Sections,
}

impl Evidence {
    pub fn label(self) -> &'static str {
        match self {
            Evidence::Symtab => ".symtab",
            Evidence::DebugInfo => "debug info by build-id",
            Evidence::Sections => "section sizes and initial bytes",
        }
    }
}

/// New-file addresses `[new, new + len)` are the old file's `[old, old + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRange {
    pub new: u64,
    pub len: u64,
    pub old: u64,
}

/// The private state can be shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    pub evidence: Evidence,
    pub ranges: Vec<MapRange>,
    /// New-file ranges that stay the new copy's own: the C runtime's per-module bookkeeping and
    /// objects the old build does not have.
    pub own: Vec<(u64, u64)>,
    /// Objects only the new build has (they keep their own, fresh state).
    pub only_new: Vec<String>,
    pub objects: usize,
    pub bytes: u64,
    /// The thread-local block matches and is shared as a whole.
    pub tls: bool,
}

impl Shared {
    /// The old-file address of new-file address `addr`, if it is shared.
    pub fn old_of(&self, addr: u64) -> Option<u64> {
        self.ranges
            .iter()
            .find(|r| r.new <= addr && addr < r.new + r.len)
            .map(|r| r.old + (addr - r.new))
    }

    pub fn is_own(&self, addr: u64) -> bool {
        self.own.iter().any(|&(a, b)| a <= addr && addr < b)
    }
}

impl Differing {
    fn of(n: &Object, what: String) -> Differing {
        Differing {
            what,
            start: n.addr,
            end: n.addr + n.size,
        }
    }
}

/// Sharing verdict of two builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The new build has no private writable data to speak of.
    Nothing,
    Shared(Shared),
    /// Named differences; with symbols (and a matching thread-local block), what could be
    /// shared object by object and which objects differ.
    Differs(Vec<String>, Option<Partial>),
}

/// The objects that match, and the new-file ranges of those that do not (each with its
/// difference): enough to share what a subset of the code reaches (`--changed-only`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    pub shared: Shared,
    pub differing: Vec<Differing>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Differing {
    pub what: String,
    pub start: u64,
    pub end: u64,
}

/// Compares the private data of `old` and `new`; `*_syms` are the ELF files holding each side's
/// symbol table (the file itself or its separate debug file), if any, and `debug` tells whether
/// a separate debug file was used.
pub fn compare(
    old: &FileView<'_>,
    new: &FileView<'_>,
    old_syms: Option<&Elf<'_>>,
    new_syms: Option<&Elf<'_>>,
    debug: bool,
) -> Verdict {
    let symbols = old_syms.zip(new_syms);
    let (old_objs, new_objs) = match symbols {
        Some((o, n)) => (old.objects(o), new.objects(n)),
        None => (Vec::new(), Vec::new()),
    };
    let mut differs = Vec::new();
    let tls = compare_tls(old, new, &old_objs, &new_objs, &mut differs);
    let stateful = new_objs
        .iter()
        .any(|o| !o.tls && o.size > 0 && !is_runtime_bookkeeping(&o.name));
    if new.private.is_empty() && !tls || symbols.is_some() && !stateful && !tls {
        return if differs.is_empty() {
            Verdict::Nothing
        } else {
            Verdict::Differs(differs, None)
        };
    }
    let evidence = match (symbols.is_some(), debug) {
        (false, _) => Evidence::Sections,
        (true, false) => Evidence::Symtab,
        (true, true) => Evidence::DebugInfo,
    };
    let own: Vec<(u64, u64)> = new_objs
        .iter()
        .filter(|o| !o.tls && is_runtime_bookkeeping(&o.name))
        .map(|o| (o.addr, o.addr + o.size.max(1)))
        .collect();
    let mut shared = Shared {
        evidence,
        ranges: Vec::new(),
        own,
        only_new: Vec::new(),
        objects: 0,
        bytes: 0,
        tls,
    };
    let tls_differs = !differs.is_empty();
    let mut differing = Vec::new();
    let same_sections = section_differences(old, new).is_empty();
    if same_sections && (symbols.is_none() || same_objects(old, new, &old_objs, &new_objs)) {
        let bytes = section_bytes_differences(old, new);
        if bytes.is_empty() {
            for (n, o) in new.private.iter().zip(&old.private) {
                shared.ranges.push(MapRange {
                    new: n.addr,
                    len: n.size,
                    old: o.addr,
                });
                shared.bytes += n.size;
            }
            shared.objects = if symbols.is_some() {
                new_objs
                    .iter()
                    .filter(|o| !o.tls && o.size > 0 && !is_runtime_bookkeeping(&o.name))
                    .count()
            } else {
                new.private.len()
            };
        } else if symbols.is_none() {
            differs.extend(bytes);
        } else {
            by_object(old, new, &old_objs, &new_objs, &mut shared, &mut differing);
        }
    } else if symbols.is_none() {
        differs.extend(section_differences(old, new));
    } else {
        by_object(old, new, &old_objs, &new_objs, &mut shared, &mut differing);
    }
    differs.extend(differing.iter().map(|d| d.what.clone()));
    if differs.is_empty() {
        Verdict::Shared(shared)
    } else {
        let partial = (symbols.is_some() && !tls_differs).then_some(Partial { shared, differing });
        Verdict::Differs(differs, partial)
    }
}

/// The thread-local blocks must match as a whole (a module's block is shared through its module
/// id, all of it): sizes, alignment, initial image and, with symbols, every object.
fn compare_tls(
    old: &FileView<'_>,
    new: &FileView<'_>,
    old_objs: &[Object],
    new_objs: &[Object],
    differs: &mut Vec<String>,
) -> bool {
    let Some(n) = new.tls else {
        return false;
    };
    let Some(o) = old.tls else {
        differs.push(format!(
            "thread-local storage: {} bytes, only in the new build",
            n.memsz
        ));
        return false;
    };
    if (n.memsz, n.align) != (o.memsz, o.align) {
        differs.push(format!(
            "thread-local storage: {} bytes (aligned to {}), was {} (aligned to {})",
            n.memsz, n.align, o.memsz, o.align
        ));
        return false;
    }
    let before = differs.len();
    let tls_of = |objs: &[Object]| -> Vec<(String, u64, u64)> {
        objs.iter()
            .filter(|o| o.tls)
            .map(|o| (base_name(&o.name).to_string(), o.addr, o.size))
            .collect()
    };
    let (ot, nt) = (tls_of(old_objs), tls_of(new_objs));
    for x in &nt {
        match ot.iter().find(|y| y.0 == x.0) {
            None => differs.push(format!("thread-local {}: only in the new build", x.0)),
            Some(y) if (y.1, y.2) != (x.1, x.2) => differs.push(format!(
                "thread-local {}: {} bytes at offset {}, was {} bytes at {}",
                x.0, x.2, x.1, y.2, y.1
            )),
            _ => {}
        }
    }
    if first_difference(&new.tls_initial(), &old.tls_initial()).is_some() {
        differs.push("initial value of the thread-local block differs".into());
    }
    differs.len() == before
}

fn section_differences(old: &FileView<'_>, new: &FileView<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for n in &new.private {
        match old.private.iter().find(|o| o.name == n.name) {
            None => out.push(format!("{}: only in the new build", n.name)),
            Some(o) if o.size != n.size => {
                out.push(format!("{}: {} bytes, was {}", n.name, n.size, o.size))
            }
            _ => {}
        }
    }
    for o in &old.private {
        if !new.private.iter().any(|n| n.name == o.name) {
            out.push(format!("{}: only in the old build", o.name));
        }
    }
    let order = |f: &FileView<'_>| f.private.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    if out.is_empty() && order(old) != order(new) {
        out.push("private sections in another order".into());
    }
    out
}

fn section_bytes_differences(old: &FileView<'_>, new: &FileView<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for (n, o) in new.private.iter().zip(&old.private) {
        let a = new.initial(n.addr, n.size);
        let b = old.initial(o.addr, o.size);
        if let Some(at) = first_difference(&a, &b) {
            out.push(format!("initial bytes of {} differ (at +{at:#x})", n.name));
        }
    }
    out
}

/// Same objects at the same places in the same sections (numbered statics may be renumbered).
fn same_objects(old: &FileView<'_>, new: &FileView<'_>, o: &[Object], n: &[Object]) -> bool {
    let shape = |f: &FileView<'_>, objs: &[Object]| -> Vec<(String, String, String, u64, u64)> {
        let mut v: Vec<_> = objs
            .iter()
            .filter(|x| !x.tls)
            .map(|x| {
                let base = f
                    .private
                    .iter()
                    .find(|s| s.name == x.section)
                    .map_or(0, |s| s.addr);
                (
                    x.section.clone(),
                    x.file.clone(),
                    base_name(&x.name).to_string(),
                    x.addr - base,
                    x.size,
                )
            })
            .collect();
        v.sort();
        v
    };
    shape(old, o) == shape(new, n)
}

/// Pairs objects by (source file, name): same size and initial value, or a named difference.
fn by_object(
    old: &FileView<'_>,
    new: &FileView<'_>,
    old_objs: &[Object],
    new_objs: &[Object],
    shared: &mut Shared,
    differs: &mut Vec<Differing>,
) {
    let mut index: HashMap<(&str, &str), Vec<&Object>> = HashMap::new();
    for o in old_objs.iter().filter(|o| !o.tls) {
        index.entry(o.key()).or_default().push(o);
    }
    let mut new_count: HashMap<(&str, &str), usize> = HashMap::new();
    for n in new_objs.iter().filter(|o| !o.tls) {
        *new_count.entry(n.key()).or_default() += 1;
    }
    for n in new_objs.iter().filter(|o| !o.tls && o.size > 0) {
        if is_runtime_bookkeeping(&n.name) {
            continue;
        }
        let olds = index.get(&n.key()).map(Vec::as_slice).unwrap_or(&[]);
        let o = match olds {
            [] => {
                shared.only_new.push(n.name.clone());
                shared.own.push((n.addr, n.addr + n.size));
                continue;
            }
            [o] if new_count[&n.key()] == 1 => *o,
            _ => {
                differs.push(Differing::of(
                    n,
                    format!(
                        "{}: several private objects of that name, cannot tell them apart",
                        n.name
                    ),
                ));
                continue;
            }
        };
        if o.size != n.size {
            differs.push(Differing::of(
                n,
                format!("{}: {} bytes, was {}", n.name, n.size, o.size),
            ));
        } else if first_difference(&new.initial(n.addr, n.size), &old.initial(o.addr, o.size))
            .is_some()
        {
            differs.push(Differing::of(
                n,
                format!("initial value of {} differs", n.name),
            ));
        } else {
            shared.ranges.push(MapRange {
                new: n.addr,
                len: n.size,
                old: o.addr,
            });
            shared.objects += 1;
            shared.bytes += n.size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zlib() -> Vec<u8> {
        std::fs::read("/lib/x86_64-linux-gnu/libz.so.1").unwrap()
    }

    #[test]
    fn a_stripped_library_matches_itself_by_sections() {
        let bytes = zlib();
        let f = FileView::parse(&bytes).unwrap();
        assert!(!f.has_symtab());
        let Verdict::Shared(s) = compare(&f, &f, None, None, false) else {
            panic!("zlib does not match itself");
        };
        assert_eq!(s.evidence, Evidence::Sections);
        let total: u64 = f.private.iter().map(|s| s.size).sum();
        assert_eq!(s.bytes, total);
        assert_eq!(s.old_of(f.private[0].addr), Some(f.private[0].addr));
    }

    #[test]
    fn a_grown_section_is_named() {
        let bytes = zlib();
        let old = FileView::parse(&bytes).unwrap();
        let idx = old
            .elf
            .section_headers
            .iter()
            .position(|s| old.elf.shdr_strtab.get_at(s.sh_name) == Some(".bss"))
            .unwrap();
        // sh_size is at offset 32 of a 64-byte section header.
        let at = old.elf.header.e_shoff as usize + idx * 64 + 32;
        let mut grown = bytes.clone();
        grown[at..at + 8].copy_from_slice(&16u64.to_le_bytes());
        let new = FileView::parse(&grown).unwrap();
        match compare(&old, &new, None, None, false) {
            Verdict::Differs(d, _) => {
                assert_eq!(d, vec![".bss: 16 bytes, was 8".to_string()])
            }
            v => panic!("{v:?}"),
        }
    }
}
