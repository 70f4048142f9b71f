//! Staging: the patch file opened once, its bytes copied inside the kernel into a sealed memfd,
//! which is what the checks read and what `dlopen` loads (as `/proc/self/fd/N`).
//!
//! Why not a file on disk: a copy written next to the patch has a name, and another user who can
//! write that folder (world-writable, not sticky) could rename their own library over it between
//! our write and our `dlopen` — their constructor would then run inside the target, as its user.
//! A memfd has no name in any folder, and its seals (no write, no shrink, no grow, no more seals)
//! fix its bytes once checked. A target that dropped its privileges can stage too: it needs no
//! folder it may write.
//!
//! The path is opened once, without following a symbolic link in its last component and without
//! blocking, and what was opened is checked: only a regular file is copied (a FIFO would block
//! the read forever, a device like `/dev/zero` never ends), at most [`MAX_FILE`] bytes, and a
//! file that grows or shrinks while it is copied is refused. The bytes never pass through the
//! target's heap.
//!
//! `dlopen` hands back the module already loaded under a name, so each generation's memfd stays
//! open for the life of the process (its number, and so its name, stays taken), and a number that
//! some loaded module already carries (a program may close descriptors it did not open, and the
//! number be reused) is exchanged for a fresh one first.
//!
//! hotctl opens the patch as the operator and passes the descriptor with its request: a target
//! that dropped its privileges (nginx workers as `nobody`) stages a file it could not open
//! itself. Only a raw client that passes none has the path opened here, by the target.
//!
//! `$ORIGIN` in the patch's run path would name `/proc/self/fd`: `origin.rs` resolves it as the
//! patch's own folder and loads such dependencies first.

use super::error::{OsError, ReloadError};
use crate::sys::sealed::{self, Sealed};

/// Patch files larger than this are refused.
pub const MAX_FILE: u64 = 1 << 30;

/// How many descriptor numbers to try for a copy whose name a loaded module already has.
const RENUMBER_TRIES: usize = 64;

/// What a file that is not a regular file is, for the message that refuses it.
fn what_it_is(format: u32) -> &'static str {
    match format {
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a FIFO (named pipe)",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        _ => "not a regular file",
    }
}

/// Copies the patch into a sealed memfd: from `source`, the descriptor the client opened and
/// passed (a target that dropped its privileges may not open the file itself), or else from
/// `path`, opened once here (a raw client that passes none).
pub fn stage(path: &str, source: Option<i32>) -> Result<Sealed, ReloadError> {
    let unreadable = |e: i32| ReloadError::Unreadable {
        path: path.to_string(),
        cause: OsError(e),
    };
    let src = match source {
        Some(fd) => sealed::dup(fd).map_err(unreadable)?,
        None => open_path(path)?,
    };
    copy_sealed(path, &src)
}

fn open_path(path: &str) -> Result<sealed::Fd, ReloadError> {
    let unreadable = |e: i32| ReloadError::Unreadable {
        path: path.to_string(),
        cause: OsError(e),
    };
    sealed::open_nofollow(path).map_err(|e| match e {
        libc::ELOOP => ReloadError::SymbolicLink { path: path.into() },
        libc::ENXIO => ReloadError::NothingBehind { path: path.into() },
        e => unreadable(e),
    })
}

fn copy_sealed(path: &str, src: &sealed::Fd) -> Result<Sealed, ReloadError> {
    let unreadable = |e: i32| ReloadError::Unreadable {
        path: path.to_string(),
        cause: OsError(e),
    };
    let st = sealed::stat(src.raw()).map_err(unreadable)?;
    if !st.is_regular() {
        return Err(ReloadError::NotRegular {
            path: path.into(),
            what: what_it_is(st.format()),
        });
    }
    if st.size == 0 {
        return Err(ReloadError::Empty { path: path.into() });
    }
    if st.size > MAX_FILE {
        return Err(ReloadError::TooLarge {
            path: path.into(),
            size: st.size,
            max: MAX_FILE,
        });
    }
    let internal = |step: &'static str, e: i32| ReloadError::CopyFailed {
        step,
        path: path.into(),
        cause: OsError(e),
    };
    // The kernel takes at most 249 bytes of name.
    let mut name = format!("hotagent:{}", crate::image::file_name(path));
    while name.len() > 240 {
        name.pop();
    }
    let copy = sealed::memfd(&name).map_err(|e| internal("create a memfd", e))?;
    let copied = sealed::copy(src, &copy, st.size).map_err(unreadable)?;
    let grew = sealed::has_byte_at(src, st.size).map_err(unreadable)?;
    let now = sealed::stat(src.raw()).map_err(unreadable)?;
    if copied != st.size || grew || now.size != st.size {
        return Err(ReloadError::ChangedSize {
            path: path.into(),
            size: st.size,
        });
    }
    sealed::seal(copy, st.size).map_err(|(_, e)| internal("seal a memfd", e))
}

/// Makes sure no loaded module carries `copy`'s name yet (`taken` says whether one does): the
/// loader would hand that module back instead of loading the copy.
pub fn fresh_name(copy: &mut Sealed, taken: impl Fn(&str) -> bool) -> Result<(), ReloadError> {
    for _ in 0..RENUMBER_TRIES {
        if !taken(&copy.path()) {
            return Ok(());
        }
        copy.renumber()
            .map_err(|e| ReloadError::CopyUnmovable { cause: OsError(e) })?;
    }
    Err(ReloadError::NoFreshNumber {
        tries: RENUMBER_TRIES,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_a_regular_file_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libx.so");
        std::fs::write(&lib, b"\x7fELF and more").unwrap();
        let copy = stage(lib.to_str().unwrap(), None).unwrap();
        assert_eq!(copy.map().unwrap().bytes(), b"\x7fELF and more");
        // From a descriptor passed instead: what it names is copied, whatever the path says.
        let opened = std::fs::File::open(&lib).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&opened);
        let copy = stage("/not/opened/libx.so", Some(fd)).unwrap();
        assert_eq!(copy.map().unwrap().bytes(), b"\x7fELF and more");
        let folder = std::fs::File::open(dir.path()).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&folder);
        let err = stage("/x/libx.so", Some(fd)).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        assert!(copy.path().starts_with("/proc/self/fd/"));

        let err = |p: &str| stage(p, None).unwrap_err().to_string();
        assert!(err("/dev/zero").contains("is a character device"));
        assert!(err(dir.path().to_str().unwrap()).contains("is a directory"));
        let link = dir.path().join("link.so");
        std::os::unix::fs::symlink(&lib, &link).unwrap();
        assert!(err(link.to_str().unwrap()).contains("is a symbolic link"));
        let fifo = dir.path().join("fifo.so");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        assert!(err(fifo.to_str().unwrap()).contains("is a FIFO"));
        let empty = dir.path().join("empty.so");
        std::fs::write(&empty, b"").unwrap();
        assert!(err(empty.to_str().unwrap()).contains("is empty"));
        assert!(err("/nonexistent/libx.so").contains("no such file"));
    }

    #[test]
    fn a_taken_name_gets_a_fresh_number() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libx.so");
        std::fs::write(&lib, b"x").unwrap();
        let mut copy = stage(lib.to_str().unwrap(), None).unwrap();
        let first = copy.path();
        fresh_name(&mut copy, |n| n == first).unwrap();
        assert_ne!(copy.path(), first);
        assert_eq!(std::fs::read(copy.path()).unwrap(), b"x");
        let err = fresh_name(&mut copy, |_| true).unwrap_err();
        assert!(err.to_string().contains("no fresh descriptor"), "{err}");
    }
}
