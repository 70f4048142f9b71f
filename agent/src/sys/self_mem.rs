//! Writing loaded code and read-only data through `/proc/self/mem`, which leaves their protection
//! as it is. Enters the kernel through `sys::raw`, never through libc (`open` and `pwrite` may be
//! a patch's).

use super::code_window::CodeWindow;
use super::raw;
use std::io;

/// This process's memory as a file: writes go through the kernel, which allows them on read-only
/// private mappings (it breaks copy-on-write for us) without touching their protection. Opened
/// afresh by each user: a descriptor kept across `fork` would write into the parent.
#[derive(Debug)]
pub struct ProcMem(i32);

impl ProcMem {
    pub fn as_raw_fd(&self) -> i32 {
        self.0
    }
}

impl Drop for ProcMem {
    fn drop(&mut self) {
        // SAFETY: the descriptor `open_proc_mem` opened for this value alone; dropped once.
        unsafe { raw::close(self.0) };
    }
}

/// Opens `/proc/self/mem` for writing (see `ProcMem`).
pub fn open_proc_mem() -> io::Result<ProcMem> {
    raw::open(c"/proc/self/mem", libc::O_RDWR)
        .map(ProcMem)
        .map_err(io::Error::from_raw_os_error)
}

/// Writes `bytes` at `addr` through `/proc/self/mem` (see `open_proc_mem`).
pub fn write_through_proc_mem(file: &ProcMem, addr: u64, bytes: &[u8]) -> io::Result<()> {
    poke_proc_mem(file.as_raw_fd(), addr, bytes).map_err(io::Error::from_raw_os_error)
}

/// `pwrite` of `bytes` at `addr` of `/proc/self/mem` (open as `fd`), reporting the raw errno:
/// allocates nothing, so it may run while other threads are parked.
pub fn poke_proc_mem(fd: i32, addr: u64, bytes: &[u8]) -> Result<(), i32> {
    match raw::pwrite(fd, bytes, addr) {
        Ok(n) if n == bytes.len() => Ok(()),
        Ok(_) => Err(libc::EIO),
        Err(e) => Err(e),
    }
}

/// Why neither path could write loaded code: what `/proc/self/mem` said (`None`: it could not be
/// opened), then what `mprotect` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("/proc/self/mem: {}; mprotect: {}", proc_mem_text(*.proc_mem), io::Error::from_raw_os_error(*.mprotect))]
pub struct PokeError {
    pub proc_mem: Option<i32>,
    pub mprotect: i32,
}

fn proc_mem_text(errno: Option<i32>) -> String {
    errno.map_or_else(
        || "cannot be opened".to_string(),
        |e| io::Error::from_raw_os_error(e).to_string(),
    )
}

/// Writes `bytes` into loaded code or read-only data at the start of `window`: through
/// `/proc/self/mem` (`fd`, or -1 when it could not be opened), else by making the page writable
/// for the instant and putting the loader's protection back. Ok(true) when `/proc/self/mem` took
/// it; the error names why both failed.
pub fn poke_code(fd: i32, window: &CodeWindow, bytes: &[u8]) -> Result<bool, PokeError> {
    let proc_mem = if fd >= 0 {
        match poke_proc_mem(fd, window.start(), bytes) {
            Ok(()) => return Ok(true),
            Err(e) => Some(e),
        }
    } else {
        None
    };
    window
        .poke(0, bytes)
        .map(|()| false)
        .map_err(|mprotect| PokeError { proc_mem, mprotect })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both refusals keep their errno (they used to be flattened into one string) and the
    /// message reads as before.
    #[test]
    fn a_refused_poke_keeps_both_causes() {
        let code = [crate::image::Layout::new(
            "nowhere".into(),
            0,
            false,
            [(1, 4, 0, 0x1000)],
            0x1000,
        )];
        let window = CodeWindow::within(&code, 8, 1).unwrap();
        let e = poke_code(-1, &window, &[0]).unwrap_err();
        assert_eq!(e.proc_mem, None);
        assert_eq!(e.mprotect, libc::ENOMEM);
        assert_eq!(
            e.to_string(),
            format!(
                "/proc/self/mem: cannot be opened; mprotect: {}",
                io::Error::from_raw_os_error(libc::ENOMEM)
            )
        );
    }
}
