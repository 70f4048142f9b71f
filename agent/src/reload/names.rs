//! What names each loaded module, read once while it stays loaded.
//!
//! Finding the module a reload replaces compared `want` with every loaded module's soname, and
//! reading a soname meant reading the module's dynamic section from memory (`Image::new`), for
//! every module on every reload, plus a `readlink` of `/proc/self/exe`: about a third of the
//! check phase. A module's soname and path never change while it is loaded, so they are kept
//! here by base, with the raw `_DYNAMIC` array as `index.rs` keeps it: a module unloaded and
//! another mapped at the same base is read afresh.

use super::index::fingerprint;
use crate::image::{Image, Layout, Memory};
use std::collections::HashMap;

/// The names of one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub soname: Option<String>,
    /// For the executable, the real path `/proc/self/exe` names.
    pub real_exe: Option<String>,
}

#[derive(Debug)]
struct Known {
    path: String,
    fingerprint: Vec<u8>,
    names: Names,
    /// The functions the agent cannot live without that the module itself defines, by name
    /// and address: read through `dlsym` (never under the loader's list lock), so filled
    /// after the module was recognised by [`ModuleNames::of`].
    lifeline: Option<Vec<(&'static str, u64)>>,
}

/// The names of the modules seen so far, by base.
#[derive(Debug, Default)]
pub struct ModuleNames {
    modules: HashMap<u64, Known>,
    /// Modules read afresh (a miss or a changed module), for the tests.
    reads: u64,
}

impl ModuleNames {
    /// The names of `layout`, from memory only when the module at its base is not the one
    /// read before.
    pub fn of<M: Memory>(&mut self, mem: &M, layout: &Layout) -> Names {
        let print = fingerprint(mem, layout);
        if let (Some(known), Some(print)) = (self.modules.get(&layout.base), &print) {
            if known.path == layout.path && known.fingerprint == *print {
                return known.names.clone();
            }
        }
        self.reads += 1;
        let names = Names {
            soname: Image::new(mem, layout)
                .ok()
                .and_then(|i| i.soname().map(|s| String::from_utf8_lossy(s).into_owned())),
            real_exe: layout.is_main.then(crate::sys::process::real_exe),
        };
        match print {
            Some(fingerprint) => {
                self.modules.insert(
                    layout.base,
                    Known {
                        path: layout.path.clone(),
                        fingerprint,
                        names: names.clone(),
                        lifeline: None,
                    },
                );
            }
            // Nothing to recognise it by next time: read it again then.
            None => {
                self.modules.remove(&layout.base);
            }
        }
        names
    }

    /// The lifeline functions `layout` defines, from `read` the first time after
    /// [`ModuleNames::of`] recognised the module (a module not recognised is read every time).
    pub fn lifeline(
        &mut self,
        layout: &Layout,
        read: impl FnOnce() -> Vec<(&'static str, u64)>,
    ) -> Vec<(&'static str, u64)> {
        let known = self
            .modules
            .get_mut(&layout.base)
            .filter(|k| k.path == layout.path);
        match known {
            Some(Known {
                lifeline: Some(l), ..
            }) => l.clone(),
            Some(k) => {
                self.reads += 1;
                k.lifeline.insert(read()).clone()
            }
            None => {
                self.reads += 1;
                read()
            }
        }
    }

    /// Forgets the modules no longer in `layouts`.
    pub fn retain(&mut self, layouts: &[Layout]) {
        self.modules
            .retain(|base, k| layouts.iter().any(|l| l.base == *base && l.path == k.path));
    }

    #[cfg(test)]
    fn reads(&self) -> u64 {
        self.reads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::synthetic::Synthetic;
    use crate::image::{SliceMemory, R_GLOB_DAT, R_JUMP_SLOT};

    const BASE: u64 = 0x40_0000;

    fn mem(syn: &Synthetic) -> SliceMemory<'_> {
        SliceMemory {
            base: syn.base,
            bytes: &syn.bytes,
        }
    }

    /// Read once while the module stays; a module unloaded and another mapped at the same
    /// base under the same path is read afresh, not named by the first one's cache entry.
    #[test]
    fn a_module_replaced_at_the_same_base_is_read_afresh() {
        let first = Synthetic::new(BASE, &[("foo", R_GLOB_DAT, 0x1000)]);
        let mut names = ModuleNames::default();
        let a = names.of(&mem(&first), &first.layout);
        let again = names.of(&mem(&first), &first.layout);
        assert_eq!((a.clone(), names.reads()), (again, 1));
        let second = Synthetic::new(
            BASE,
            &[("foo", R_GLOB_DAT, 0x1000), ("bar", R_JUMP_SLOT, 0x2000)],
        );
        assert_eq!(first.layout.path, second.layout.path);
        let lifeline = || vec![("malloc", BASE + 0x10)];
        assert_eq!(names.lifeline(&first.layout, lifeline), lifeline());
        assert_eq!(names.lifeline(&first.layout, Vec::new), lifeline());
        assert_eq!(names.reads(), 2);
        names.of(&mem(&second), &second.layout);
        assert_eq!(
            names.reads(),
            3,
            "the replaced module was named from the cache"
        );
        assert!(
            names.lifeline(&second.layout, Vec::new).is_empty(),
            "the replaced module's lifeline came from the first one"
        );
        assert_eq!(names.reads(), 4);
        names.retain(&[]);
        names.of(&mem(&second), &second.layout);
        assert_eq!(names.reads(), 5, "a module no longer loaded was kept");
    }

    /// The live process: libc's soname comes out of the cache as it came out of memory.
    #[test]
    fn names_libc_in_this_process() {
        use crate::reload::modules;
        use crate::sys::{page, phdr};
        phdr::with_modules_locked(|mods| {
            let layouts = modules::layouts(&mods, "/proc/self/exe", page::page_size());
            let mem = modules::live_memory(mods.lock(), &layouts);
            let mut names = ModuleNames::default();
            let libc = modules::find(&layouts, &mem, &mut names, "libc.so.6", &[]).unwrap();
            let reads = names.reads();
            assert_eq!(names.of(&mem, libc).soname.as_deref(), Some("libc.so.6"));
            modules::find(&layouts, &mem, &mut names, "libc.so.6", &[]).unwrap();
            assert_eq!(names.reads(), reads, "a second find read the modules again");
        });
    }
}
