//! A patch file opened once and copied, in the kernel, into a sealed memfd: what the agent checks
//! is exactly what it loads, and no name another user can write stands between the two.
//!
//! Every call is a raw system call (`sys::raw`): a loaded patch may have replaced libc's `open`,
//! `read` or `mmap`, and later reloads must not depend on it.

use super::fd;
use super::raw::{self, syscall, Errno};

/// The seals that make a memfd immutable: no shrinking (a mapping cannot SIGBUS), no growing, no
/// writing, and no removing or adding seals.
const ALL_SEALS: i32 =
    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;

/// One kernel call, retried when a signal (the agent's own stop signal) interrupts it.
///
/// # Safety
/// As for [`syscall`]: the arguments must be valid for system call `n`.
unsafe fn call(n: i64, args: &[usize]) -> Result<usize, Errno> {
    loop {
        // SAFETY: forwarded contract.
        match unsafe { syscall(n, args) } {
            Err(libc::EINTR) => continue,
            other => return other,
        }
    }
}

pub use super::fd::{Fd, FileStat};

/// Opens `path` for reading without following a symbolic link in its last component, without
/// blocking (a FIFO opens at once) and without becoming the controlling terminal.
pub fn open_nofollow(path: &str) -> Result<Fd, Errno> {
    let c = std::ffi::CString::new(path).map_err(|_| libc::EINVAL)?;
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY;
    fd::open_at(libc::AT_FDCWD, &c, flags)
}

/// A descriptor of our own for what `fd` names (a descriptor a client passed, which its
/// registry closes): `F_DUPFD_CLOEXEC`.
pub fn dup(fd: i32) -> Result<Fd, Errno> {
    // SAFETY: no memory arguments.
    let new = unsafe {
        call(
            libc::SYS_fcntl,
            &[fd as usize, libc::F_DUPFD_CLOEXEC as usize, 0],
        )
    }?;
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { Fd::from_raw(new as i32) })
}

/// `fstat` of a descriptor number.
pub fn stat(fd: i32) -> Result<FileStat, Errno> {
    fd::fstat(fd)
}

/// `MFD_EXEC` (Linux 6.3): the copy is code to be mapped executable, whatever the system's
/// `vm.memfd_noexec` default is. Older kernels refuse the unknown flag with `EINVAL`.
const MFD_EXEC: u32 = 0x0010;

/// A new, empty memfd that accepts seals and may be mapped executable, named `name` in
/// `/proc/PID/maps` (`/memfd:NAME`).
pub fn memfd(name: &str) -> Result<Fd, Errno> {
    let c = std::ffi::CString::new(name).map_err(|_| libc::EINVAL)?;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    let create = |flags: u32| {
        // SAFETY: c is a NUL-terminated string alive for the call.
        unsafe {
            call(
                libc::SYS_memfd_create,
                &[c.as_ptr() as usize, flags as usize],
            )
        }
    };
    let fd = match create(flags | MFD_EXEC) {
        Err(libc::EINVAL) => create(flags),
        other => other,
    }?;
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { Fd::from_raw(fd as i32) })
}

/// Copies up to `len` bytes from the start of `src` to the start of the fresh `dst` inside the
/// kernel (`copy_file_range`, else `sendfile`); returns how many were copied (fewer when `src`
/// ended early).
pub fn copy(src: &Fd, dst: &Fd, len: u64) -> Result<u64, Errno> {
    const CHUNK: u64 = 1 << 30;
    let mut done = 0u64;
    let mut in_kernel_fs = true;
    while done < len {
        let chunk = (len - done).min(CHUNK) as usize;
        let mut off_in = done as i64;
        let n = if in_kernel_fs {
            let mut off_out = done as i64;
            // SAFETY: both offsets are valid i64s alive for the call; no flags.
            let r = unsafe {
                call(
                    libc::SYS_copy_file_range,
                    &[
                        src.raw() as usize,
                        &mut off_in as *mut i64 as usize,
                        dst.raw() as usize,
                        &mut off_out as *mut i64 as usize,
                        chunk,
                        0,
                    ],
                )
            };
            match r {
                // Across file systems (tmpfs is never the patch's), or a kernel without it.
                Err(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                    in_kernel_fs = false;
                    // sendfile writes at the file position: put it where copying goes on.
                    // SAFETY: no memory arguments.
                    unsafe {
                        call(
                            libc::SYS_lseek,
                            &[dst.raw() as usize, done as usize, libc::SEEK_SET as usize],
                        )
                    }?;
                    continue;
                }
                r => r?,
            }
        } else {
            // SAFETY: off_in is a valid i64 alive for the call.
            unsafe {
                call(
                    libc::SYS_sendfile,
                    &[
                        dst.raw() as usize,
                        src.raw() as usize,
                        &mut off_in as *mut i64 as usize,
                        chunk,
                    ],
                )
            }?
        };
        if n == 0 {
            break;
        }
        done += n as u64;
    }
    Ok(done)
}

/// Whether `fd` has at least one byte at offset `at` (a file that grew while it was copied).
pub fn has_byte_at(fd: &Fd, at: u64) -> Result<bool, Errno> {
    let mut b = [0u8; 1];
    // SAFETY: b is valid for writes of one byte.
    let n = unsafe {
        call(
            libc::SYS_pread64,
            &[fd.raw() as usize, b.as_mut_ptr() as usize, 1, at as usize],
        )
    }?;
    Ok(n > 0)
}

/// A memfd whose seals forbid any change: its bytes are fixed for as long as it lives.
#[derive(Debug)]
pub struct Sealed {
    fd: Fd,
    len: u64,
    dev: u64,
    ino: u64,
}

/// Seals `fd`, which holds `len` bytes; gives it back with the error if the kernel refuses.
pub fn seal(fd: Fd, len: u64) -> Result<Sealed, (Fd, Errno)> {
    // SAFETY: no memory arguments.
    let added = unsafe {
        call(
            libc::SYS_fcntl,
            &[
                fd.raw() as usize,
                libc::F_ADD_SEALS as usize,
                ALL_SEALS as usize,
            ],
        )
    };
    if let Err(e) = added {
        return Err((fd, e));
    }
    // SAFETY: no memory arguments.
    let seals = unsafe {
        call(
            libc::SYS_fcntl,
            &[fd.raw() as usize, libc::F_GET_SEALS as usize],
        )
    };
    let st = stat(fd.raw());
    match (seals, st) {
        (Ok(s), Ok(st)) if s as i32 & ALL_SEALS == ALL_SEALS && st.size == len => Ok(Sealed {
            fd,
            len,
            dev: st.dev,
            ino: st.ino,
        }),
        (Err(e), _) | (_, Err(e)) => Err((fd, e)),
        _ => Err((fd, libc::EPERM)),
    }
}

impl Sealed {
    /// Reads up to `buf.len()` bytes at offset `at` (0 at the end): through the descriptor, so
    /// a big copy is never mapped whole (its pages would count in the target's RSS).
    pub fn read_at(&self, buf: &mut [u8], at: u64) -> Result<usize, Errno> {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        unsafe {
            call(
                libc::SYS_pread64,
                &[
                    self.fd.raw() as usize,
                    buf.as_mut_ptr() as usize,
                    buf.len(),
                    at as usize,
                ],
            )
        }
    }

    /// The name the loader opens it by.
    pub fn path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.raw())
    }

    /// Whether its descriptor number still names this memfd (the program may close descriptors
    /// it did not open, and the number be reused).
    pub fn still_ours(&self) -> bool {
        stat(self.fd.raw()).is_ok_and(|st| st.dev == self.dev && st.ino == self.ino)
    }

    /// Moves it to the lowest free descriptor number above its current one.
    pub fn renumber(&mut self) -> Result<(), Errno> {
        // SAFETY: no memory arguments.
        let fd = unsafe {
            call(
                libc::SYS_fcntl,
                &[
                    self.fd.raw() as usize,
                    libc::F_DUPFD_CLOEXEC as usize,
                    self.fd.raw() as usize + 1,
                ],
            )
        }?;
        // Dropping the old Fd closes the old number.
        // SAFETY: the kernel just gave us this descriptor.
        self.fd = unsafe { Fd::from_raw(fd as i32) };
        Ok(())
    }

    /// Maps its bytes read-only; unmapped when the mapping is dropped.
    pub fn map(&self) -> Result<Mapping<'_>, Errno> {
        if self.len == 0 {
            return Ok(Mapping {
                addr: 0,
                len: 0,
                _sealed: std::marker::PhantomData,
            });
        }
        let len = usize::try_from(self.len).map_err(|_| libc::EFBIG)?;
        // SAFETY: a fresh mapping chosen by the kernel; nothing of ours is replaced.
        let addr = unsafe {
            call(
                libc::SYS_mmap,
                &[
                    0,
                    len,
                    libc::PROT_READ as usize,
                    libc::MAP_PRIVATE as usize,
                    self.fd.raw() as usize,
                    0,
                ],
            )
        }?;
        Ok(Mapping {
            addr,
            len,
            _sealed: std::marker::PhantomData,
        })
    }

    /// Keeps the descriptor open for the rest of the process's life: the loaded module's name
    /// is `/proc/self/fd/N`, and a later copy given the same number would make `dlopen` hand back
    /// this module instead of loading the new one.
    pub fn keep(mut self) {
        self.fd.disown();
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        // The program (a patch's constructor, say) closed our number and may have opened a file
        // of its own under it: closing that would close the program's file.
        if !self.still_ours() {
            self.fd.disown();
        }
    }
}

/// Closes the copy a [`Sealed::keep`] kept, named by its module's path `/proc/self/fd/N`, once
/// the loader has unloaded that module; other paths are left alone.
///
/// The number is ours: `keep` left it open for the module and nothing else closes it. The
/// program could still have closed it and reused the number (as for any kept copy, this is not
/// checked: its identity is not kept with the module; see `purge.rs`).
pub fn close_kept(path: &str) {
    let Some(fd) = path
        .strip_prefix("/proc/self/fd/")
        .and_then(|n| n.parse::<i32>().ok())
    else {
        return;
    };
    // SAFETY: the copy `keep` disowned for the module loaded from it, which is unloaded now: no
    // loader mapping and no agent code uses the number after this (the caller's contract).
    unsafe { raw::close(fd) };
}

/// The read-only bytes of a [`Sealed`] memfd.
#[derive(Debug)]
pub struct Mapping<'a> {
    addr: usize,
    len: usize,
    _sealed: std::marker::PhantomData<&'a Sealed>,
}

impl Mapping<'_> {
    pub fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: addr..addr+len is a readable mapping alive as long as self; the memfd behind
        // it is sealed against writing and shrinking, so the bytes never change nor vanish.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }
}

impl Drop for Mapping<'_> {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: the mapping was made by `map` and nothing borrows it any longer.
            let _ = unsafe { call(libc::SYS_munmap, &[self.addr, self.len]) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn copies_seals_and_maps() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"hello sealed world").unwrap();
        let src = open_nofollow(f.path().to_str().unwrap()).unwrap();
        let st = stat(src.raw()).unwrap();
        assert!(st.is_regular());
        let dst = memfd("test").unwrap();
        assert_eq!(copy(&src, &dst, st.size).unwrap(), 18);
        assert!(!has_byte_at(&src, 18).unwrap());
        let mut sealed = seal(dst, st.size).unwrap();
        assert_eq!(sealed.map().unwrap().bytes(), b"hello sealed world");
        // Sealed: no write gets through.
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(sealed.path())
            .unwrap();
        let e = w.write_all(b"changed").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        let before = sealed.path();
        sealed.renumber().unwrap();
        assert_ne!(sealed.path(), before);
        assert!(sealed.still_ours());
        assert_eq!(std::fs::read(sealed.path()).unwrap(), b"hello sealed world");
    }

    #[test]
    fn refuses_to_follow_a_final_link() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        assert_eq!(
            open_nofollow(link.to_str().unwrap()).unwrap_err(),
            libc::ELOOP
        );
    }
}
