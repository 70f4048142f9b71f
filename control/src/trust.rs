//! Whom hotctl talks to. A socket named `<pid>.sock` proves nothing by itself: anyone who can
//! write in the folder can put their own there, and whatever answers on it is believed (a fake
//! "reloaded"), after hotctl has told it which library to load. So before sending a byte:
//!
//! - the folder is opened without following a symlink and must be a folder owned by the invoking
//!   user (effective uid) or root, with no group or other write bit (sticky or not: in a 1777
//!   folder anyone may create a `<pid>.sock` before the agent does);
//! - the socket file, looked up in that opened folder (not by path again), must not be a symlink,
//!   must be a socket, and must belong to the target's uid or root;
//! - the connection goes through the opened folder (`/proc/self/fd/N/<pid>.sock`), and the
//!   listener's credentials (`SO_PEERCRED`: the pid and effective uid of the process that called
//!   `listen`) must be the target's pid, and its uid the target's or root's.
//!
//! "The target's uid" is any uid `/proc/PID/status` lists for it (real, effective, saved,
//! filesystem), read when connecting. The agent listens with the effective uid the process had
//! at start; a process may since have switched its effective uid among those ids (`seteuid`), so
//! any of them may be the one it listened with. A process that started as root and dropped
//! privileges keeps root's socket: root is always accepted. Refused: a listener of any other uid,
//! and one whose pid is not the target's (another process of the same user squatting a name).

use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hotagent_protocol::{socket_path, SOCKET_SUFFIX};

/// Why hotctl will not talk on a socket. Each message names the path and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Distrust {
    #[error("cannot open socket folder {}: {source}", dir.display())]
    FolderOpen { dir: PathBuf, source: io::Error },
    #[error("refusing socket folder {}: it is a symlink", dir.display())]
    FolderSymlink { dir: PathBuf },
    #[error("refusing socket folder {}: it is not a folder", dir.display())]
    FolderNotDir { dir: PathBuf },
    #[error(
        "refusing socket folder {}: it belongs to uid {owner}, not to you (uid {me}) or root",
        dir.display()
    )]
    FolderOwner { dir: PathBuf, owner: u32, me: u32 },
    #[error(
        "refusing socket folder {}: group or others may write in it (mode {mode:04o}), so anyone \
         could have put a socket there",
        dir.display()
    )]
    FolderWritable { dir: PathBuf, mode: u32 },
    #[error("refusing {}: it is a symlink, not an agent's socket", path.display())]
    SocketSymlink { path: PathBuf },
    #[error("refusing {}: it is not a socket", path.display())]
    NotASocket { path: PathBuf },
    #[error(
        "refusing {}: it belongs to uid {owner}, not to process {pid} ({uids}) or root",
        path.display()
    )]
    SocketOwner {
        path: PathBuf,
        pid: u32,
        owner: u32,
        uids: Uids,
    },
    #[error(
        "refusing {}: its listener is pid {peer_pid} with uid {peer_uid}, expected {}",
        path.display(),
        expected(*pid, uids)
    )]
    Peer {
        path: PathBuf,
        pid: u32,
        uids: Option<Uids>,
        peer_pid: i32,
        peer_uid: u32,
    },
    #[error("cannot inspect {}: {source}", path.display())]
    Inspect { path: PathBuf, source: io::Error },
    #[error("cannot identify the listener on {}: {source}", path.display())]
    PeerCred { path: PathBuf, source: io::Error },
}

/// Who should listen on the socket of `pid`, for messages.
fn expected(pid: u32, uids: &Option<Uids>) -> String {
    match uids {
        Some(uids) => format!("pid {pid} with {uids} or root"),
        None => format!("pid {pid}, which is not running"),
    }
}

impl Distrust {
    /// The folder does not exist (which holds no agents, rather than being suspect).
    pub fn is_missing_folder(&self) -> bool {
        matches!(self, Distrust::FolderOpen { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// A process's uids, as `/proc/PID/status` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uids {
    pub real: u32,
    pub effective: u32,
    pub saved: u32,
    pub fs: u32,
}

impl Uids {
    /// Whether `uid` is one of the process's own, or root.
    pub fn admit(&self, uid: u32) -> bool {
        uid == 0 || [self.real, self.effective, self.saved, self.fs].contains(&uid)
    }

    /// The `Uid:` line of a `/proc/PID/status` text.
    pub fn parse(status: &str) -> Option<Uids> {
        let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
        let ids: Vec<u32> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        match ids[..] {
            [real, effective, saved, fs] => Some(Uids {
                real,
                effective,
                saved,
                fs,
            }),
            _ => None,
        }
    }

    /// The uids of process `pid` now; None when it does not exist.
    pub fn of(pid: u32) -> Option<Uids> {
        Uids::parse(&crate::procfs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }
}

impl fmt::Display for Uids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Uids {
            real,
            effective,
            saved,
            fs,
        } = *self;
        if [effective, saved, fs].iter().all(|&u| u == real) {
            write!(f, "uid {real}")
        } else {
            write!(
                f,
                "uids {real}/{effective}/{saved}/{fs} (real/effective/saved/fs)"
            )
        }
    }
}

/// The effective uid of hotctl: whose folders it trusts.
pub fn my_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}

/// What the socket file of a pid is, in a checked folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketFile {
    pub uid: u32,
    dev: u64,
    ino: u64,
}

/// A socket folder, opened and checked. Cloning shares the descriptor.
#[derive(Debug, Clone)]
pub struct Folder {
    fd: Arc<OwnedFd>,
    dir: PathBuf,
}

impl Folder {
    /// Opens `dir` without following a symlink and checks it: a folder of the invoking user or
    /// root that nobody else may write in.
    pub fn open(dir: &Path) -> Result<Folder, Distrust> {
        // `a/link/` would follow `link` despite O_NOFOLLOW: drop trailing slashes.
        let dir: PathBuf = dir.components().collect();
        let c_dir = CString::new(dir.as_os_str().as_bytes()).map_err(|_| Distrust::FolderOpen {
            dir: dir.clone(),
            source: io::ErrorKind::InvalidInput.into(),
        })?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: c_dir is a NUL-terminated string alive for the call.
        let fd = unsafe { libc::open(c_dir.as_ptr(), flags) };
        if fd < 0 {
            let source = io::Error::last_os_error();
            let is_link = fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink());
            return Err(match source.raw_os_error() {
                Some(libc::ELOOP | libc::ENOTDIR) if is_link => Distrust::FolderSymlink { dir },
                Some(libc::ENOTDIR) => Distrust::FolderNotDir { dir },
                _ => Distrust::FolderOpen { dir, source },
            });
        }
        // SAFETY: fd was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let st = stat_at(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH).map_err(|source| {
            Distrust::FolderOpen {
                dir: dir.clone(),
                source,
            }
        })?;
        let me = my_uid();
        // Root also drives other users' agents through their registry folders: such a folder,
        // writable by its owner alone, can only hold that owner's sockets, and the socket and
        // listener checks below still demand the target's own uids.
        let registry_of_owner = me == 0 && hotagent_protocol::registry_uid(&dir) == Some(st.st_uid);
        if st.st_uid != me && st.st_uid != 0 && !registry_of_owner {
            return Err(Distrust::FolderOwner {
                dir,
                owner: st.st_uid,
                me,
            });
        }
        if st.st_mode & 0o022 != 0 {
            return Err(Distrust::FolderWritable {
                dir,
                mode: st.st_mode & 0o7777,
            });
        }
        Ok(Folder {
            fd: Arc::new(fd),
            dir,
        })
    }

    /// `<dir>/<pid>.sock`, for messages.
    pub fn socket(&self, pid: u32) -> PathBuf {
        socket_path(&self.dir, pid)
    }

    /// The socket file of `pid`: None when there is none; an error when it is a symlink, not a
    /// socket, or (when the target's `uids` are known) belongs to neither the target nor root.
    pub fn socket_file(
        &self,
        pid: u32,
        uids: Option<Uids>,
    ) -> Result<Option<SocketFile>, Distrust> {
        let path = self.socket(pid);
        let st = match stat_at(self.fd.as_raw_fd(), &name(pid), libc::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Distrust::Inspect { path, source }),
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFSOCK => {}
            libc::S_IFLNK => return Err(Distrust::SocketSymlink { path }),
            _ => return Err(Distrust::NotASocket { path }),
        }
        if let Some(uids) = uids.filter(|u| !u.admit(st.st_uid)) {
            return Err(Distrust::SocketOwner {
                path,
                pid,
                owner: st.st_uid,
                uids,
            });
        }
        Ok(Some(SocketFile {
            uid: st.st_uid,
            dev: st.st_dev,
            ino: st.st_ino,
        }))
    }

    /// Connects to the socket of `pid` in this very folder, whatever its path names by now.
    pub fn connect(&self, pid: u32) -> io::Result<UnixStream> {
        UnixStream::connect(self.via(pid))
    }

    /// The socket of `pid`, reached through this folder's descriptor.
    pub fn via(&self, pid: u32) -> PathBuf {
        PathBuf::from(format!(
            "/proc/self/fd/{}/{pid}{SOCKET_SUFFIX}",
            self.fd.as_raw_fd()
        ))
    }

    /// Removes the socket of `pid` if a dead process of the invoking user left it: a socket of
    /// ours, no process `pid`, connecting refused (nothing listens), and the same file still.
    /// Returns whether it did.
    pub fn remove_if_stale(&self, pid: u32) -> bool {
        let Ok(Some(before)) = self.socket_file(pid, None) else {
            return false;
        };
        if before.uid != my_uid() || Path::new(&format!("/proc/{pid}")).exists() {
            return false;
        }
        let refused = self
            .connect(pid)
            .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused);
        // A process that took this pid may have bound a fresh socket since the first look.
        if !refused || !matches!(self.socket_file(pid, None), Ok(Some(now)) if now == before) {
            return false;
        }
        // SAFETY: the name is NUL-terminated and alive for the call; the descriptor is ours.
        unsafe { libc::unlinkat(self.fd.as_raw_fd(), name(pid).as_ptr(), 0) == 0 }
    }
}

/// Checks the listener's credentials against the target's pid and uids (None: the target is not
/// running, so no listener can be its).
pub fn check_peer(
    path: &Path,
    pid: u32,
    uids: Option<Uids>,
    (peer_pid, peer_uid): (i32, u32),
) -> Result<(), Distrust> {
    let pid_ok = u32::try_from(peer_pid).is_ok_and(|p| p == pid);
    if pid_ok && uids.is_some_and(|u| u.admit(peer_uid)) {
        return Ok(());
    }
    Err(Distrust::Peer {
        path: path.to_owned(),
        pid,
        uids,
        peer_pid,
        peer_uid,
    })
}

/// `SO_PEERCRED` of a connected Unix socket: the (pid, effective uid) the listener had when it
/// called `listen`.
pub fn peer_cred(stream: &UnixStream) -> io::Result<(i32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if rc == 0 {
        Ok((cred.pid, cred.uid))
    } else {
        Err(io::Error::last_os_error())
    }
}

fn name(pid: u32) -> CString {
    CString::new(format!("{pid}{SOCKET_SUFFIX}")).expect("digits hold no NUL")
}

fn stat_at(dirfd: i32, name: &std::ffi::CStr, flags: i32) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data, fully written by fstatat on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: name is NUL-terminated, st is writable, dirfd is a descriptor of ours.
    if unsafe { libc::fstatat(dirfd, name.as_ptr(), &mut st, flags) } == 0 {
        Ok(st)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
#[path = "trust_tests.rs"]
mod tests;
