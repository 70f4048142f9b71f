//! The socket folder: created private, refused when anyone but us could write in it.
//!
//! Whoever can write in the folder can put a socket of their own where hotctl looks for ours, or
//! delete ours. So the folder must be a real folder (not a symlink), owned by the agent's
//! effective uid, with no group or other write bit (a sticky 1777 folder is refused too: its
//! other users could still create `<pid>.sock` names before we do). The checks are made on a
//! descriptor of the folder opened without following symlinks, and the socket is bound through
//! that descriptor, so a folder renamed or swapped after the check is never used.

use crate::sys::dirfd::{self, Fd};
use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Why the agent will not use a socket folder. The agent stays off (the target runs untouched)
/// and logs this one line.
#[derive(Debug, thiserror::Error)]
pub enum SocketDirError {
    #[error("cannot create socket folder {}: {source}", dir.display())]
    Create {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open socket folder {}: {source}", dir.display())]
    Open {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("socket folder {} is a symlink; refusing to use it", dir.display())]
    Symlink { dir: PathBuf },
    #[error("{} is not a folder; refusing to use it as the socket folder", dir.display())]
    NotAFolder { dir: PathBuf },
    #[error(
        "socket folder {} belongs to uid {owner}, not to us (uid {uid}); refusing to use it",
        dir.display()
    )]
    Owner { dir: PathBuf, owner: u32, uid: u32 },
    #[error(
        "socket folder {} is writable by group or others (mode {mode:04o}); refusing to use it \
         (anyone who can write there could put their socket in place of ours)",
        dir.display()
    )]
    Writable { dir: PathBuf, mode: u32 },
    #[error("cannot listen on {}: {source}", path.display())]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The folder for this process's socket, following the rule shared with hotctl.
pub fn resolve() -> PathBuf {
    hotagent_protocol::socket_dir(
        std::env::var_os("HOTAGENT_SOCKET_DIR"),
        std::env::var_os("XDG_RUNTIME_DIR"),
        crate::sys::process::euid(),
    )
}

/// Creates `dir` (mode 0700) if needed and checks that it is a real folder owned by `uid` that
/// nobody else may write in.
#[cfg(test)]
pub fn prepare(dir: &Path, uid: u32) -> Result<(), SocketDirError> {
    ensure(dir, uid).map(drop)
}

/// [`prepare`], then listens on `<dir>/<pid>.sock` (mode 0600), created through the checked
/// folder's descriptor. A leftover file of that name (a dead process that had our pid) is
/// replaced.
pub fn listen(dir: &Path, pid: u32, uid: u32) -> Result<UnixListener, SocketDirError> {
    let folder = ensure(dir, uid)?;
    let path = hotagent_protocol::socket_path(dir, pid);
    let err = |errno: i32| SocketDirError::Listen {
        path: path.clone(),
        source: std::io::Error::from_raw_os_error(errno),
    };
    let mut name_buf = [0u8; 32];
    let name = socket_name(&mut name_buf, pid);
    if dirfd::stat_in(&folder, name).is_ok_and(|st| !st.is_dir()) {
        let _ = dirfd::unlink_in(&folder, name);
    }
    // Non-blocking: the I/O thread accepts until there is nobody left waiting.
    let sock = dirfd::unix_socket(true).map_err(err)?;
    let mut via_buf = [0u8; 64];
    match via_folder(&mut via_buf, &folder, name) {
        Some(via) => dirfd::bind_listen(&sock, via, 128),
        // No /proc: the plain path, checked a moment ago.
        None => dirfd::bind_listen(&sock, path.as_os_str().as_bytes(), 128),
    }
    .map_err(err)?;
    // The folder already keeps others out; 0600 also keeps the socket private if the folder is
    // ever opened up (0755), whatever the umask made of it.
    dirfd::chmod_in(&folder, name, 0o600).map_err(err)?;
    Ok(UnixListener::from(sock.into_owned()))
}

/// Removes the sockets that dead processes of `uid` left in `dir` (a forking target whose
/// children `_exit` leaves one per child), and returns how many went. A socket is removed only
/// when it is named `<pid>.sock`, is a socket owned by `uid`, no process `pid` exists, and
/// connecting to it is refused (nothing listens: a live listener whose pid was reused is kept);
/// it is also left alone if it changed meanwhile. Nothing is done in a folder that fails the
/// checks of [`prepare`]. One descriptor and stack buffers; every call returns at once (the
/// connect is non-blocking).
pub fn sweep_stale(dir: &Path, uid: u32) -> usize {
    // Without /proc every process would look dead.
    if dirfd::stat_path(c"/proc/self").is_err() {
        return 0;
    }
    let Ok(folder) = open_checked(dir, uid) else {
        return 0;
    };
    let me = crate::sys::process::pid();
    let mut removed = 0;
    let mut buf = [0u8; 4096];
    while let Ok(n) = dirfd::read_entries(&folder, &mut buf) {
        if n == 0 {
            break;
        }
        for (name, kind) in dirfd::entries(&buf[..n]) {
            if kind != libc::DT_SOCK && kind != libc::DT_UNKNOWN {
                continue;
            }
            let pid = pid_of(name).filter(|&pid| pid != me);
            if pid.is_some_and(|pid| remove_if_stale(&folder, pid, uid)) {
                removed += 1;
            }
        }
    }
    removed
}

fn remove_if_stale(folder: &Fd, pid: u32, uid: u32) -> bool {
    let mut proc_buf = [0u8; 32];
    let Some(proc_path) = cstr_in(&mut proc_buf, format_args!("/proc/{pid}")) else {
        return false;
    };
    if dirfd::stat_path(proc_path).is_ok() {
        return false;
    }
    let mut name_buf = [0u8; 32];
    let name = socket_name(&mut name_buf, pid);
    let Ok(before) = dirfd::stat_in(folder, name) else {
        return false;
    };
    if !before.is_socket() || before.uid != uid {
        return false;
    }
    let mut via_buf = [0u8; 64];
    let Some(via) = via_folder(&mut via_buf, folder, name) else {
        return false;
    };
    let refused = dirfd::unix_socket(true)
        .and_then(|sock| dirfd::connect(&sock, via))
        .is_err_and(|errno| errno == libc::ECONNREFUSED);
    // A process that took this pid may have bound a fresh socket since the first look.
    refused
        && dirfd::stat_in(folder, name).is_ok_and(|now| now == before)
        && dirfd::unlink_in(folder, name).is_ok()
}

/// The pid of a file named exactly as an agent names its socket (`<pid>.sock`, no sign, no
/// leading zero), as hotctl reads it.
fn pid_of(name: &[u8]) -> Option<u32> {
    let digits = name.strip_suffix(hotagent_protocol::SOCKET_SUFFIX.as_bytes())?;
    if digits.first().is_none_or(|&d| d == b'0') || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Writes `args` and a NUL into `buf`; the C string, or None if it does not fit.
fn cstr_in<'a>(buf: &'a mut [u8], args: std::fmt::Arguments<'_>) -> Option<&'a CStr> {
    let len = buf.len();
    let mut rest = &mut buf[..];
    rest.write_fmt(args).ok()?;
    rest.write_all(&[0]).ok()?;
    let used = len - rest.len();
    CStr::from_bytes_with_nul(&buf[..used]).ok()
}

fn socket_name(buf: &mut [u8; 32], pid: u32) -> &CStr {
    let suffix = hotagent_protocol::SOCKET_SUFFIX;
    // A u32 and the suffix always fit in 32 bytes.
    cstr_in(buf, format_args!("{pid}{suffix}")).unwrap_or(c"")
}

/// `/proc/self/fd/<folder>/<name>`: a path that reaches the checked folder itself, whatever
/// its path names by now. None without /proc.
fn via_folder<'a>(buf: &'a mut [u8; 64], folder: &Fd, name: &CStr) -> Option<&'a [u8]> {
    let fd = folder.raw();
    let name = name.to_str().ok()?;
    let path = cstr_in(buf, format_args!("/proc/self/fd/{fd}/{name}"))?;
    dirfd::stat_path(c"/proc/self/fd").ok()?;
    Some(path.to_bytes())
}

/// Creates the folder if missing, then [`open_checked`].
fn ensure(dir: &Path, uid: u32) -> Result<Fd, SocketDirError> {
    match open_checked(dir, uid) {
        Err(SocketDirError::Open { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| SocketDirError::Create {
                    dir: dir.to_owned(),
                    source,
                })?;
            open_checked(dir, uid)
        }
        other => other,
    }
}

/// Opens `dir` without following a symlink and checks what was opened: a folder owned by `uid`,
/// with no group or other write bit.
fn open_checked(dir: &Path, uid: u32) -> Result<Fd, SocketDirError> {
    // `a/link/` would follow `link` despite O_NOFOLLOW: drop trailing slashes.
    let clean: PathBuf = dir.components().collect();
    let dir = clean.as_path();
    let owned = || dir.to_owned();
    let path = CString::new(dir.as_os_str().as_bytes()).map_err(|_| SocketDirError::Open {
        dir: owned(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let folder = dirfd::open_dir_nofollow(&path).map_err(|errno| match errno {
        libc::ELOOP | libc::ENOTDIR if dirfd::lstat_path(&path).is_ok_and(|st| st.is_symlink()) => {
            SocketDirError::Symlink { dir: owned() }
        }
        libc::ENOTDIR => SocketDirError::NotAFolder { dir: owned() },
        _ => SocketDirError::Open {
            dir: owned(),
            source: std::io::Error::from_raw_os_error(errno),
        },
    })?;
    let st = dirfd::fstat(&folder).map_err(|errno| SocketDirError::Open {
        dir: owned(),
        source: std::io::Error::from_raw_os_error(errno),
    })?;
    if st.uid != uid {
        return Err(SocketDirError::Owner {
            dir: owned(),
            owner: st.uid,
            uid,
        });
    }
    if st.mode & 0o022 != 0 {
        return Err(SocketDirError::Writable {
            dir: owned(),
            mode: st.mode & 0o7777,
        });
    }
    Ok(folder)
}

#[cfg(test)]
#[path = "socket_dir_tests.rs"]
mod tests;
