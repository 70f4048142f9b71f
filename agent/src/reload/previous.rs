//! The names a patch's hooks see: `hotagent_previous_symbol` answers from the generation before
//! the patch's, and `hotagent_convert_class` finds vtables there and in the patch.
//!
//! Code and read-only data come from the newest generation that replaced the module: that is
//! what runs. Writable data comes from where the running code keeps it: a generation whose
//! private state was shared with the one before it (the usual case, `sharing.rs`) keeps nothing
//! of its own, so its names are answered from below; one that owns its state (`--fresh-state`,
//! or a migrate hook that took over state whose layout changed) answers for it. A variable the
//! executable holds a copy of (a copy relocation) is answered with the copy.

use super::modules;
use super::private::{self, LiveIdentity};
use super::state::Agent;
use crate::hooks::{Symbol, SymbolTable};
use crate::image::Layout;
use crate::sys::{dl, phdr};
use goblin::elf::{section_header as sh, sym, Elf};

/// Every named function and object of an ELF file, at `base`.
pub(super) fn file_symbols(bytes: &[u8], base: u64) -> SymbolTable {
    let Ok(elf) = Elf::parse(bytes) else {
        return SymbolTable::default();
    };
    let debug = private::debug_file_of(bytes);
    let debug_elf = debug.as_deref().and_then(|b| Elf::parse(b).ok());
    let mut out = Vec::new();
    // Globals first: the table keeps the first definition of a name.
    collect(&elf, false, base, &mut out);
    collect(&elf, true, base, &mut out);
    if let Some(d) = &debug_elf {
        collect(d, true, base, &mut out);
    }
    SymbolTable::from_entries(out)
}

fn collect(elf: &Elf<'_>, symtab: bool, base: u64, out: &mut Vec<(Box<[u8]>, Symbol)>) {
    let (syms, strs) = if symtab {
        (&elf.syms, &elf.strtab)
    } else {
        (&elf.dynsyms, &elf.dynstrtab)
    };
    let writable = |shndx: usize| {
        elf.section_headers
            .get(shndx)
            .is_some_and(|s| s.sh_flags & u64::from(sh::SHF_WRITE) != 0)
    };
    // Locals after globals, in two passes over the same table.
    for pass_local in [false, true] {
        for s in syms.iter() {
            let kind = s.st_type();
            if !matches!(
                kind,
                sym::STT_FUNC | sym::STT_OBJECT | sym::STT_GNU_IFUNC | sym::STT_NOTYPE
            ) || s.st_shndx == 0
                || s.st_shndx >= 0xff00
                || s.st_value == 0
                || (s.st_bind() == sym::STB_LOCAL) != pass_local
            {
                continue;
            }
            let Some(name) = strs.get_at(s.st_name).filter(|n| !n.is_empty()) else {
                continue;
            };
            // `name@VERSION` forms never reach hooks, which ask by plain name.
            let name = name.split('@').next().unwrap_or(name);
            out.push((
                name.as_bytes().to_vec().into_boxed_slice(),
                Symbol {
                    addr: base.wrapping_add(s.st_value),
                    size: s.st_size,
                    writable: kind == sym::STT_OBJECT && writable(s.st_shndx),
                },
            ));
        }
    }
}

impl Agent {
    /// The names of `module` as generation `below` (and those under it) left them, and a label
    /// for messages.
    pub(super) fn previous_symbols(
        &self,
        module: &Layout,
        live: &LiveIdentity,
        below: u32,
    ) -> (SymbolTable, String) {
        let mut table = self.original_symbols(module, live);
        let mut label = module.path.clone();
        let snapshot = phdr::snapshot();
        for g in self
            .generations
            .iter()
            .filter(|g| g.number <= below && g.module == module.path)
        {
            let Some(base) = snapshot.iter().find(|m| m.name == g.staged).map(|m| m.base) else {
                continue;
            };
            let Ok(bytes) = std::fs::read(&g.staged) else {
                continue;
            };
            let owns = g.owns.clone();
            table.overlay(file_symbols(&bytes, base), move |name, s| {
                !s.writable || owns.covers(name)
            });
            label = format!("{} (generation {})", g.path, g.number);
        }
        (table, label)
    }

    /// Generation 0's names: from the file when it is proven to be the mapped build, else only
    /// what the loaded module exports.
    fn original_symbols(&self, module: &Layout, live: &LiveIdentity) -> SymbolTable {
        let from_file = std::fs::read(&module.path).ok().filter(|bytes| {
            let id = private::build_id_of(bytes);
            private::prove(&module.path, live, id.as_deref()).is_ok()
        });
        let mut table = match from_file {
            Some(bytes) => file_symbols(&bytes, module.base),
            None => self.exported_symbols(module),
        };
        // The executable's copy is where a copy-relocated variable lives.
        let exe = self.exe_range();
        let copies: Vec<(Box<[u8]>, Symbol)> = self
            .exported_symbols(module)
            .names()
            .filter_map(|(name, s)| {
                let n = std::str::from_utf8(name).ok()?;
                let at = dl::default_symbol(n)?;
                (s.writable && exe.is_some_and(|(lo, hi)| at >= lo && at < hi)).then(|| {
                    (
                        name.to_vec().into_boxed_slice(),
                        Symbol {
                            addr: at,
                            ..s.clone()
                        },
                    )
                })
            })
            .collect();
        table.overlay(SymbolTable::from_entries(copies), |_, _| true);
        table
    }

    /// What the loaded `module` exports, read from memory.
    fn exported_symbols(&self, module: &Layout) -> SymbolTable {
        phdr::with_modules_locked(|mods| {
            let layouts = modules::layouts(&mods, &self.exe, self.page);
            let mem = modules::live_memory(mods.lock(), &layouts);
            let Some(layout) = layouts.iter().find(|l| l.base == module.base) else {
                return SymbolTable::default();
            };
            let Ok(image) = crate::image::Image::new(&mem, layout) else {
                return SymbolTable::default();
            };
            let entries = crate::image::exports(&image, |_| true)
                .into_iter()
                .map(|e| {
                    let writable = layout.protection(e.addr).is_some_and(|p| p.write);
                    (
                        e.name.as_bytes().to_vec().into_boxed_slice(),
                        Symbol {
                            addr: e.addr,
                            size: e.size,
                            writable,
                        },
                    )
                })
                .collect();
            SymbolTable::from_entries(entries)
        })
    }

    /// The executable's address range.
    pub(super) fn exe_range(&self) -> Option<(u64, u64)> {
        phdr::with_modules_locked(|mods| {
            modules::layouts(&mods, &self.exe, self.page)
                .into_iter()
                .find(|l| l.path == self.exe)
                .and_then(|l| l.span())
        })
    }
}

/// What a generation keeps of its own among writable data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Ownership {
    /// Nothing: its private state is the one before it (shared, or never reached).
    #[default]
    Nothing,
    /// Everything (`--fresh-state`, or state taken over by migrate).
    All,
    /// These variables (exported ones whose size changed, taken over by migrate).
    Names(Vec<String>),
}

impl Ownership {
    pub(super) fn covers(&self, name: &[u8]) -> bool {
        match self {
            Ownership::Nothing => false,
            Ownership::All => true,
            Ownership::Names(n) => n.iter().any(|x| x.as_bytes() == name),
        }
    }
}
