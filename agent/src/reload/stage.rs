//! Staging: a private copy of the checked bytes under a name no loaded module has.
//!
//! `dlopen` hands back the existing module for a path (or file) already loaded, so every
//! generation needs its own file. The copy goes next to the original when that folder is writable,
//! so `$ORIGIN` in the patch's run path still finds its neighbours; otherwise into the agent's own
//! folder. The copy is unlinked as soon as it is loaded: the mapping stays valid, and no file is
//! left behind. Loading the very bytes that were checked also closes the window in which the file
//! could change between check and load.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Writes `bytes` to a fresh file and returns its path.
pub fn stage(
    original: &str,
    bytes: &[u8],
    fallback_dir: &Path,
    pid: u32,
    seq: u64,
) -> std::io::Result<PathBuf> {
    let orig = Path::new(original);
    let name = orig
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "patch.so".into());
    let staged_name = format!(".{name}.hotagent-{pid}-{seq}");
    let beside = orig.parent().map(|d| d.join(&staged_name));
    let mut last_err = None;
    for candidate in beside
        .into_iter()
        .chain(std::iter::once(fallback_dir.join(&staged_name)))
    {
        match write_new(&candidate, bytes) {
            Ok(()) => return Ok(candidate),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("no folder to stage the library in")))
}

fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(path)?;
    // No fsync: the loader reads the copy through the page cache, and it is unlinked right after.
    let res = f.write_all(bytes);
    if res.is_err() {
        let _ = std::fs::remove_file(path);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_beside_or_in_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let orig = dir.path().join("libfoo.so");
        let p = stage(
            orig.to_str().unwrap(),
            b"abc",
            Path::new("/nonexistent"),
            1,
            2,
        )
        .unwrap();
        assert_eq!(p, dir.path().join(".libfoo.so.hotagent-1-2"));
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        // Same sequence number again: the name is taken, so the fallback folder is used.
        let fb = tempfile::tempdir().unwrap();
        let q = stage(orig.to_str().unwrap(), b"x", fb.path(), 1, 2).unwrap();
        assert_eq!(q, fb.path().join(".libfoo.so.hotagent-1-2"));
    }
}
