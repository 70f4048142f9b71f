//! The loaded modules as layouts, and finding the one a reload replaces.

use super::error::ReloadError;
use super::names::{ModuleNames, Names};
use crate::image::{Layout, Memory};
use crate::sys::mem::LiveMemory;
use crate::sys::phdr::{LoaderLock, ModuleInfo};

/// Layouts for the loader's module list; the executable gets its real path.
pub fn layouts(mods: &[ModuleInfo], exe: &str, page: u64) -> Vec<Layout> {
    mods.iter()
        .enumerate()
        .map(|(i, m)| {
            let is_main = i == 0 && m.name.is_empty();
            let path = if is_main {
                exe.to_string()
            } else {
                m.name.clone()
            };
            let phdrs = m
                .phdrs
                .iter()
                .map(|p| (p.p_type, p.p_flags, p.p_vaddr, p.p_memsz));
            Layout::new(path, m.base, is_main, phdrs, page)
        })
        .collect()
}

/// Readable memory of every module in `layouts` (made from the list read under `lock`).
pub fn live_memory<'l>(lock: &'l LoaderLock, layouts: &[Layout]) -> LiveMemory<'l> {
    LiveMemory::new(lock, layouts.iter().flat_map(|l| l.readable()).collect())
}

/// The module named `want` (a soname, a file name or a path), excluding `excluded` paths (staged
/// copies of earlier generations, which carry the same soname).
pub fn find<'l>(
    layouts: &'l [Layout],
    mem: &impl Memory,
    names: &mut ModuleNames,
    want: &str,
    excluded: &[String],
) -> Result<&'l Layout, ReloadError> {
    names.retain(layouts);
    let mut hits = Vec::new();
    for l in layouts
        .iter()
        .filter(|l| !excluded.contains(&l.path) && !l.path.is_empty())
    {
        let Names { soname, real_exe } = names.of(mem, l);
        // The executable is named by the path it was started with; its real name works too.
        let real = real_exe;
        let matches = soname.as_deref() == Some(want)
            || l.file_name() == want
            || l.path == want
            || real
                .as_deref()
                .is_some_and(|r| r == want || crate::image::file_name(r) == want);
        if matches {
            hits.push(l);
        }
    }
    match hits.as_slice() {
        [one] if one.is_main => Err(ReloadError::ModuleNotFound(format!(
            "{want} is the main executable; only shared libraries can be replaced"
        ))),
        [one] => Ok(one),
        [] => {
            let loaded: Vec<_> = layouts
                .iter()
                .filter(|l| !l.is_main && !excluded.contains(&l.path))
                .map(|l| l.file_name())
                .collect();
            Err(ReloadError::ModuleNotFound(format!(
                "no loaded module matches {want} (loaded: {}); name one with --replace",
                loaded.join(", ")
            )))
        }
        many => {
            let paths: Vec<_> = many.iter().map(|l| l.path.as_str()).collect();
            Err(ReloadError::ModuleNotFound(format!(
                "{want} matches several loaded modules ({}); pass --replace with a full path",
                paths.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{exports, Image, SlotKind, SymKind};
    use crate::sys::{dl, page, phdr};

    /// The reader over this very test process: libc's `abs` is found where the loader says it
    /// is, with its version, and the executable's GOT holds slots naming libc functions.
    #[test]
    fn reads_the_live_process() {
        phdr::with_modules_locked(|mods| {
            let layouts = layouts(&mods, "/proc/self/exe", page::page_size());
            let mem = live_memory(mods.lock(), &layouts);
            let libc = find(
                &layouts,
                &mem,
                &mut ModuleNames::default(),
                "libc.so.6",
                &[],
            )
            .expect("libc is loaded");
            let image = Image::new(&mem, libc).unwrap();
            let abs = exports(&image, |n| n == b"abs");
            assert_eq!(abs.len(), 1, "{abs:?}");
            assert_eq!(abs[0].kind, SymKind::Function);
            assert_eq!(abs[0].version.as_deref(), Some("GLIBC_2.2.5"));
            assert!(abs[0].default_version);
            assert_eq!(Some(abs[0].addr), dl::default_symbol("abs"));
            let main = Image::new(&mem, &layouts[0]).unwrap();
            let bound = main
                .relocations()
                .filter(|r| SlotKind::from_type(r.r_type).is_some() && r.sym != 0)
                .count();
            assert!(bound > 0, "the test binary imports through GOT slots");
            let err = find(
                &layouts,
                &mem,
                &mut ModuleNames::default(),
                "libnope.so",
                &[],
            )
            .unwrap_err();
            assert!(
                err.to_string()
                    .contains("no loaded module matches libnope.so"),
                "{err}"
            );
        });
    }
}
