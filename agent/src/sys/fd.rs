//! Descriptors of the agent's own and what `stat` says about files, through raw system calls:
//! the socket folder (`dirfd`), the patch file and its sealed copy (`sealed`) and the control
//! channel all use these, whatever a patch did to libc's `openat` or `fstat`.

use super::raw::{self, Errno};
use std::ffi::CStr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

/// A descriptor of ours, closed on drop.
#[derive(Debug)]
pub struct Fd(i32);

impl Fd {
    /// Takes ownership of `fd`.
    ///
    /// # Safety
    /// `fd` is open and nobody else closes it.
    pub unsafe fn from_raw(fd: i32) -> Fd {
        Fd(fd)
    }

    pub fn raw(&self) -> i32 {
        self.0
    }

    /// Gives up the descriptor without closing it: it stays open for good, or the program has
    /// closed it already (and may have reused its number, which we must then not close).
    pub fn disown(&mut self) {
        self.0 = -1;
    }

    /// Hands the descriptor over to std (e.g. to make a `UnixListener` of it).
    pub fn into_owned(self) -> OwnedFd {
        let fd = self.0;
        std::mem::forget(self);
        // SAFETY: fd is open and ours alone; forgetting `self` gives up our claim to close it.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }
}

impl From<OwnedFd> for Fd {
    fn from(fd: OwnedFd) -> Fd {
        Fd(fd.into_raw_fd())
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: ours alone (`from_raw`'s promise) and not disowned; dropped once.
            unsafe { raw::close(self.0) };
        }
    }
}

/// `accept4(2)` on `listener`, the connection owned (see `raw::accept`).
pub fn accept(listener: i32) -> Result<Fd, Errno> {
    raw::accept(listener).map(Fd)
}

/// A connected pair of Unix stream sockets, owned (see `raw::socketpair`).
pub fn socketpair() -> Result<(Fd, Fd), Errno> {
    raw::socketpair().map(|(a, b)| (Fd(a), Fd(b)))
}

/// `raw::recv_with_fd`, the descriptor passed along owned.
pub fn recv_with_fd(fd: i32, buf: &mut [u8]) -> Result<(usize, Option<Fd>), Errno> {
    raw::recv_with_fd(fd, buf).map(|(n, passed)| (n, passed.map(Fd)))
}

/// `openat(dir, path, flags | O_CLOEXEC)`; `dir` is `AT_FDCWD` for a path from here.
pub fn open_at(dir: i32, path: &CStr, flags: i32) -> Result<Fd, Errno> {
    raw::open_at(dir, path, flags).map(Fd)
}

/// What the agent needs of a `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub mode: u32,
    pub uid: u32,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
}

impl FileStat {
    /// `st_mode & S_IFMT`.
    pub fn format(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.format() == libc::S_IFDIR
    }
    pub fn is_socket(&self) -> bool {
        self.format() == libc::S_IFSOCK
    }
    pub fn is_symlink(&self) -> bool {
        self.format() == libc::S_IFLNK
    }
    pub fn is_regular(&self) -> bool {
        self.format() == libc::S_IFREG
    }
}

/// `newfstatat(dir, name, flags)`.
pub fn stat_at(dir: i32, name: &CStr, flags: i32) -> Result<FileStat, Errno> {
    // SAFETY: stat is plain data, fully written by the kernel on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: name is NUL-terminated and st is a writable `struct stat`, the kernel's layout
    // for newfstatat on x86_64 and aarch64.
    unsafe {
        raw::syscall(
            libc::SYS_newfstatat,
            &[
                dir as usize,
                name.as_ptr() as usize,
                &mut st as *mut libc::stat as usize,
                flags as usize,
            ],
        )
    }?;
    Ok(FileStat {
        mode: st.st_mode,
        uid: st.st_uid,
        size: st.st_size as u64,
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// `fstat` of a descriptor number.
pub fn fstat(fd: i32) -> Result<FileStat, Errno> {
    stat_at(fd, c"", libc::AT_EMPTY_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_and_stats() {
        let f = open_at(libc::AT_FDCWD, c"/proc/self/exe", libc::O_RDONLY).unwrap();
        let st = fstat(f.raw()).unwrap();
        assert!(st.is_regular() && st.size > 0, "{st:?}");
        let lst = stat_at(libc::AT_FDCWD, c"/proc/self/exe", libc::AT_SYMLINK_NOFOLLOW).unwrap();
        assert!(lst.is_symlink(), "{lst:?}");
        assert!(stat_at(libc::AT_FDCWD, c"/", 0).unwrap().is_dir());
        assert_eq!(fstat(-1), Err(libc::EBADF));
    }
}
