//! Code and read-only data of loaded modules that the agent may rewrite in place, as a type: a
//! window is only made from the program-header layouts of loaded modules, so the `mprotect`
//! path of a code write cannot be pointed at memory the agent does not know to be a module's.

use super::mprotect::poke_code_mprotect;
use crate::image::Layout;

/// `[start, start + len)`, inside one segment of one loaded module, with the protection its
/// program headers give those pages (what a write puts back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeWindow {
    start: u64,
    len: u64,
    prot: i32,
}

impl CodeWindow {
    /// The window `[addr, addr + len)` when it lies in one segment of a module of `layouts`
    /// (read from the loader's list): code, read-only data or (a data word a redirect rewrites)
    /// writable data. `None` for memory no module's program headers map.
    pub fn within(layouts: &[Layout], addr: u64, len: u64) -> Option<CodeWindow> {
        let last = addr.checked_add(len.max(1) - 1)?;
        let layout = layouts.iter().find(|l| l.same_segment(addr, last))?;
        let prot = layout.protection(addr)?;
        Some(CodeWindow {
            start: addr,
            len,
            prot: prot.to_mprotect(),
        })
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    /// Writes `bytes` at `offset` into the window by making its pages writable for the instant
    /// (keeping them executable) and putting the loader's protection back. Allocates nothing.
    /// EFAULT when the bytes would leave the window. No thread may be executing those bytes:
    /// entry switching writes while the others are parked or out of the entry, private-data
    /// redirects before any thread runs the new copy.
    pub fn poke(&self, offset: u64, bytes: &[u8]) -> Result<(), i32> {
        let end = offset.checked_add(bytes.len() as u64).ok_or(libc::EFAULT)?;
        if end > self.len {
            return Err(libc::EFAULT);
        }
        // SAFETY: the range lies in one non-writable segment of a loaded module (how the window
        // was made) and `prot` is what its program headers give it; see above for the threads.
        unsafe { poke_code_mprotect(self.start + offset, bytes, self.prot) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        // PT_LOAD r-x at 0x1000..0x3000, PT_LOAD rw- at 0x3000..0x4000.
        Layout::new(
            "libx.so".into(),
            0,
            false,
            [(1, 5, 0x1000, 0x2000), (1, 6, 0x3000, 0x1000)],
            0x1000,
        )
    }

    /// Windows exist only inside one segment of a module; pokes cannot leave them.
    #[test]
    fn a_window_is_only_known_code() {
        let l = [layout()];
        let w = CodeWindow::within(&l, 0x1ff0, 5).unwrap();
        assert_eq!(w.prot, libc::PROT_READ | libc::PROT_EXEC);
        assert_eq!(CodeWindow::within(&l, 0x2ffe, 5), None, "crosses into data");
        let data = CodeWindow::within(&l, 0x3010, 5).unwrap();
        assert_eq!(data.prot, libc::PROT_READ | libc::PROT_WRITE);
        assert_eq!(CodeWindow::within(&l, 0x9000, 5), None, "no module");
        assert_eq!(w.poke(1, &[0; 5]), Err(libc::EFAULT));
        assert_eq!(w.poke(u64::MAX, &[0]), Err(libc::EFAULT));
    }
}
