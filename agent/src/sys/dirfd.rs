//! The socket folder's system calls, through [`raw`] like the rest of the lifeline: a forked child
//! creates its socket after patches may have replaced `openat`, `bind` or `unlink` in libc.
//!
//! Everything works relative to a descriptor of the folder opened without following a symlink,
//! so that what was checked is what is used: a folder swapped after the check is not reached.

use super::fd;
use super::raw::{self, Errno};
use std::ffi::CStr;

pub use super::fd::{Fd, FileStat};

/// Opens a folder for reading, refusing a symlink in the last component (`ENOTDIR` or `ELOOP`,
/// as for any non-folder: [`lstat_path`] tells which).
pub fn open_dir_nofollow(path: &CStr) -> Result<Fd, Errno> {
    fd::open_at(
        libc::AT_FDCWD,
        path,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    )
}

/// `fstat` of a descriptor.
pub fn fstat(fd: &Fd) -> Result<FileStat, Errno> {
    fd::fstat(fd.raw())
}

/// `lstat` of `name` inside the folder `dir`.
pub fn stat_in(dir: &Fd, name: &CStr) -> Result<FileStat, Errno> {
    fd::stat_at(dir.raw(), name, libc::AT_SYMLINK_NOFOLLOW)
}

/// `stat` of an absolute path (symlinks followed).
pub fn stat_path(path: &CStr) -> Result<FileStat, Errno> {
    fd::stat_at(libc::AT_FDCWD, path, 0)
}

/// `lstat` of a path (a symlink in the last component is not followed).
pub fn lstat_path(path: &CStr) -> Result<FileStat, Errno> {
    fd::stat_at(libc::AT_FDCWD, path, libc::AT_SYMLINK_NOFOLLOW)
}

/// Removes the file `name` (not a folder) inside `dir`.
pub fn unlink_in(dir: &Fd, name: &CStr) -> Result<(), Errno> {
    // SAFETY: name is NUL-terminated and alive for the call.
    unsafe {
        raw::syscall(
            libc::SYS_unlinkat,
            &[dir.raw() as usize, name.as_ptr() as usize, 0],
        )
    }
    .map(drop)
}

/// Sets the permission bits of `name` inside `dir`.
pub fn chmod_in(dir: &Fd, name: &CStr, mode: u32) -> Result<(), Errno> {
    // SAFETY: name is NUL-terminated and alive for the call.
    unsafe {
        raw::syscall(
            libc::SYS_fchmodat,
            &[dir.raw() as usize, name.as_ptr() as usize, mode as usize],
        )
    }
    .map(drop)
}

/// Fills `buf` with the folder's next entries (`getdents64`); 0 at the end.
pub fn read_entries(dir: &Fd, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: buf is valid for writes of its length.
    unsafe {
        raw::syscall(
            libc::SYS_getdents64,
            &[dir.raw() as usize, buf.as_mut_ptr() as usize, buf.len()],
        )
    }
}

/// The (name, `d_type`) of each `linux_dirent64` in what [`read_entries`] returned.
pub fn entries(buf: &[u8]) -> impl Iterator<Item = (&[u8], u8)> {
    // d_ino: u64, d_off: i64, d_reclen: u16, d_type: u8, then the NUL-terminated name.
    const NAME: usize = 19;
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NAME {
            return None;
        }
        let reclen = u16::from_ne_bytes([rest[16], rest[17]]) as usize;
        if reclen < NAME || reclen > rest.len() {
            return None;
        }
        let (record, tail) = rest.split_at(reclen);
        rest = tail;
        let name = &record[NAME..];
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        Some((&name[..len], record[18]))
    })
}

/// A Unix stream socket, close-on-exec (and non-blocking if asked).
pub fn unix_socket(nonblocking: bool) -> Result<Fd, Errno> {
    let mut ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    if nonblocking {
        ty |= libc::SOCK_NONBLOCK;
    }
    // SAFETY: no memory arguments.
    let fd = unsafe { raw::syscall(libc::SYS_socket, &[libc::AF_UNIX as usize, ty as usize, 0]) }?;
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { Fd::from_raw(fd as i32) })
}

/// A `sockaddr_un` for `path` and its length; `ENAMETOOLONG` when it does not fit.
fn address(path: &[u8]) -> Result<(libc::sockaddr_un, libc::socklen_t), Errno> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if path.is_empty() || path.len() >= addr.sun_path.len() || path.contains(&0) {
        return Err(libc::ENAMETOOLONG);
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(path) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + path.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// `connect(2)` to the socket file at `path`.
pub fn connect(fd: &Fd, path: &[u8]) -> Result<(), Errno> {
    let (addr, len) = address(path)?;
    // SAFETY: addr is a valid sockaddr_un of `len` bytes, alive for the call.
    unsafe {
        raw::syscall(
            libc::SYS_connect,
            &[
                fd.raw() as usize,
                &addr as *const libc::sockaddr_un as usize,
                len as usize,
            ],
        )
    }
    .map(drop)
}

/// `bind(2)` to a new socket file at `path`, then `listen(2)`.
pub fn bind_listen(fd: &Fd, path: &[u8], backlog: i32) -> Result<(), Errno> {
    let (addr, len) = address(path)?;
    // SAFETY: addr is a valid sockaddr_un of `len` bytes, alive for the call.
    unsafe {
        raw::syscall(
            libc::SYS_bind,
            &[
                fd.raw() as usize,
                &addr as *const libc::sockaddr_un as usize,
                len as usize,
            ],
        )
    }?;
    // SAFETY: no memory arguments.
    unsafe { raw::syscall(libc::SYS_listen, &[fd.raw() as usize, backlog as usize]) }.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn cstr(p: &std::path::Path) -> std::ffi::CString {
        std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap()
    }

    #[test]
    fn lists_a_folder_and_sees_file_kinds() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a"), b"").unwrap();
        std::os::unix::fs::symlink("a", tmp.path().join("l")).unwrap();
        let dir = open_dir_nofollow(&cstr(tmp.path())).unwrap();
        assert!(fstat(&dir).unwrap().is_dir());
        let mut buf = [0u8; 1024];
        let n = read_entries(&dir, &mut buf).unwrap();
        let mut names: Vec<Vec<u8>> = entries(&buf[..n]).map(|(n, _)| n.to_vec()).collect();
        names.sort();
        assert_eq!(names, [&b"."[..], b"..", b"a", b"l"]);
        assert!(stat_in(&dir, c"l").unwrap().is_symlink());
        assert_eq!(stat_in(&dir, c"nope"), Err(libc::ENOENT));
        unlink_in(&dir, c"a").unwrap();
        assert_eq!(stat_in(&dir, c"a"), Err(libc::ENOENT));
    }

    #[test]
    fn a_symlinked_folder_is_not_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        assert!(open_dir_nofollow(&cstr(&link)).is_err());
        assert!(lstat_path(&cstr(&link)).unwrap().is_symlink());
    }

    #[test]
    fn too_long_addresses_are_refused() {
        let sock = unix_socket(true).unwrap();
        assert_eq!(connect(&sock, &[b'x'; 200]), Err(libc::ENAMETOOLONG));
        assert_eq!(connect(&sock, b""), Err(libc::ENAMETOOLONG));
    }
}
