//! A module's segments and page protections, from its program headers (no `/proc/self/maps`).

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_GNU_RELRO: u32 = 0x6474_e552;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

/// An absolute address range with its `PF_*` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    pub end: u64,
    pub flags: u32,
}

/// Page protection as the loader left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prot {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Prot {
    pub fn to_mprotect(self) -> i32 {
        let mut p = 0;
        if self.read {
            p |= libc::PROT_READ;
        }
        if self.write {
            p |= libc::PROT_WRITE;
        }
        if self.exec {
            p |= libc::PROT_EXEC;
        }
        p
    }
}

/// The last component of a path (the whole string if it has no `/`).
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Where a loaded module lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The path the loader knows; for the executable, `/proc/self/exe`'s target.
    pub path: String,
    pub base: u64,
    pub is_main: bool,
    pub loads: Vec<Segment>,
    pub dynamic: Option<u64>,
    /// The range glibc made read-only after relocation (rounded down at both ends, as glibc does).
    pub relro: Option<(u64, u64)>,
}

impl Layout {
    /// Builds the layout from the loader's view. `phdrs` are `(p_type, p_flags, p_vaddr, p_memsz)`.
    pub fn new(
        path: String,
        base: u64,
        is_main: bool,
        phdrs: impl IntoIterator<Item = (u32, u32, u64, u64)>,
        page: u64,
    ) -> Layout {
        let mut loads = Vec::new();
        let mut dynamic = None;
        let mut relro = None;
        for (p_type, flags, vaddr, memsz) in phdrs {
            let start = base.wrapping_add(vaddr);
            let Some(end) = start.checked_add(memsz) else {
                continue;
            };
            match p_type {
                PT_LOAD if memsz > 0 => loads.push(Segment { start, end, flags }),
                PT_DYNAMIC => dynamic = Some(start),
                PT_GNU_RELRO => {
                    let s = start & !(page - 1);
                    let e = end & !(page - 1);
                    if s < e {
                        relro = Some((s, e));
                    }
                }
                _ => {}
            }
        }
        loads.sort_by_key(|s| s.start);
        Layout {
            path,
            base,
            is_main,
            loads,
            dynamic,
            relro,
        }
    }

    /// The file name part of the path.
    pub fn file_name(&self) -> &str {
        file_name(&self.path)
    }

    fn segment(&self, addr: u64) -> Option<&Segment> {
        self.loads.iter().find(|s| s.start <= addr && addr < s.end)
    }

    /// Is `addr` inside one of this module's segments?
    pub fn contains(&self, addr: u64) -> bool {
        self.segment(addr).is_some()
    }

    /// Do `a` and `b` lie in the same segment?
    pub fn same_segment(&self, a: u64, b: u64) -> bool {
        matches!((self.segment(a), self.segment(b)), (Some(x), Some(y)) if x == y)
    }

    /// Is `addr` inside an executable segment?
    pub fn is_code(&self, addr: u64) -> bool {
        self.segment(addr).is_some_and(|s| s.flags & PF_X != 0)
    }

    /// The protection the page holding `addr` has now, assuming the module is fully loaded.
    pub fn protection(&self, addr: u64) -> Option<Prot> {
        let seg = self.segment(addr)?;
        let in_relro = self.relro.is_some_and(|(s, e)| s <= addr && addr < e);
        Some(Prot {
            read: seg.flags & PF_R != 0,
            write: seg.flags & PF_W != 0 && !in_relro,
            exec: seg.flags & PF_X != 0,
        })
    }

    /// Is `addr` in memory the program may write (a mutable variable rather than read-only data)?
    pub fn is_mutable_data(&self, addr: u64) -> bool {
        self.protection(addr).is_some_and(|p| p.write)
    }

    /// The readable segments, for building a `LiveMemory`.
    pub fn readable(&self) -> impl Iterator<Item = Segment> + '_ {
        self.loads.iter().copied().filter(|s| s.flags & PF_R != 0)
    }

    /// The lowest and highest address the module occupies.
    pub fn span(&self) -> Option<(u64, u64)> {
        Some((
            self.loads.first()?.start,
            self.loads.iter().map(|s| s.end).max()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relro_pages_are_read_only() {
        let l = Layout::new(
            "/x/libfoo.so".into(),
            0x10000,
            false,
            [
                (PT_LOAD, PF_R | PF_X, 0, 0x1000),
                (PT_LOAD, PF_R | PF_W, 0x2000, 0x2100),
                (PT_GNU_RELRO, PF_R, 0x2000, 0x1100),
            ],
            0x1000,
        );
        assert_eq!(l.file_name(), "libfoo.so");
        assert!(l.is_code(0x10010));
        let relro = l.protection(0x12008).unwrap();
        assert!(relro.read && !relro.write);
        // The RELRO end is rounded down: the page after it stays writable.
        assert!(l.protection(0x13010).unwrap().write);
        assert_eq!(l.protection(0x50000), None);
    }
}
