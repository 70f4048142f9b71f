//! The socket folder: created private, refused when someone else owns it.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The folder for this process's socket, following the rule shared with hotctl.
pub fn resolve() -> PathBuf {
    hotagent_protocol::socket_dir(
        std::env::var_os("HOTAGENT_SOCKET_DIR"),
        std::env::var_os("XDG_RUNTIME_DIR"),
        crate::sys::process::euid(),
    )
}

/// Creates `dir` (mode 0700) if needed and checks that it is a real folder owned by `uid`:
/// anyone who owns the folder could swap our socket for theirs.
pub fn prepare(dir: &Path, uid: u32) -> Result<(), String> {
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return Err(format!(
            "cannot create socket folder {}: {e}",
            dir.display()
        ));
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a folder", dir.display()));
    }
    if meta.uid() != uid {
        return Err(format!(
            "socket folder {} belongs to uid {}, not to us (uid {uid}); refusing to use it",
            dir.display(),
            meta.uid()
        ));
    }
    Ok(())
}

/// PLACEHOLDER until the sweep lands: removes nothing.
pub fn sweep_stale(_dir: &Path, _uid: u32) -> usize {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_folder_and_refuses_foreign_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let me = crate::sys::process::euid();
        prepare(&dir, me).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let err = prepare(&dir, me.wrapping_add(1)).unwrap_err();
        assert!(err.contains("refusing"), "{err}");
        let file = tmp.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(prepare(&file, me).is_err());
    }
}
