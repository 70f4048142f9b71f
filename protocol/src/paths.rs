//! Where agents put their sockets. Agent and hotctl must agree exactly, so the rule lives here once.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Socket files are named `<pid>.sock`.
pub const SOCKET_SUFFIX: &str = ".sock";

/// The socket folder: `$HOTAGENT_SOCKET_DIR`, else `$XDG_RUNTIME_DIR/hotagent`, else
/// `/tmp/hotagent-<uid>`. Empty or relative values count as unset: a relative folder would name
/// one place for the agent and another for hotctl, each taken from its own working folder.
pub fn socket_dir(
    hotagent_dir: Option<OsString>,
    xdg_runtime: Option<OsString>,
    uid: u32,
) -> PathBuf {
    let set = |v: Option<OsString>| v.filter(|s| Path::new(s).is_absolute());
    if let Some(dir) = set(hotagent_dir) {
        return PathBuf::from(dir);
    }
    if let Some(xdg) = set(xdg_runtime) {
        return PathBuf::from(xdg).join("hotagent");
    }
    registry_dir(uid)
}

/// Where every agent of `uid` also registers, whatever folder its environment chose, so that a
/// hotctl started with another environment (no `XDG_RUNTIME_DIR`, another one) still finds it.
/// A fixed path needs no shared variable; root lists them all by this prefix.
pub const REGISTRY_PREFIX: &str = "/tmp/hotagent-";

/// `/tmp/hotagent-<uid>`: the registry folder of `uid`, and the last choice of [`socket_dir`].
pub fn registry_dir(uid: u32) -> PathBuf {
    PathBuf::from(format!("{REGISTRY_PREFIX}{uid}"))
}

/// The uid a registry folder is named after, if `dir` is exactly one (`/tmp/hotagent-<uid>`,
/// digits as a uid prints).
pub fn registry_uid(dir: &Path) -> Option<u32> {
    let digits = dir.to_str()?.strip_prefix(REGISTRY_PREFIX)?;
    let uid: u32 = digits.parse().ok()?;
    (registry_dir(uid) == dir).then_some(uid)
}

/// The socket of process `pid` inside `dir`.
pub fn socket_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("{pid}{SOCKET_SUFFIX}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence() {
        let d = socket_dir(Some("/a".into()), Some("/run/user/1".into()), 7);
        assert_eq!(d, PathBuf::from("/a"));
        let d = socket_dir(None, Some("/run/user/1".into()), 7);
        assert_eq!(d, PathBuf::from("/run/user/1/hotagent"));
        // Relative values are ignored like empty ones.
        let d = socket_dir(Some("rel/dir".into()), Some("run".into()), 7);
        assert_eq!(d, PathBuf::from("/tmp/hotagent-7"));
        let d = socket_dir(Some("".into()), None, 7);
        assert_eq!(d, PathBuf::from("/tmp/hotagent-7"));
        assert_eq!(
            socket_path(&d, 42),
            PathBuf::from("/tmp/hotagent-7/42.sock")
        );
    }

    #[test]
    fn registry_names() {
        assert_eq!(registry_uid(Path::new("/tmp/hotagent-7")), Some(7));
        assert_eq!(registry_uid(&registry_dir(1000)), Some(1000));
        assert_eq!(registry_uid(Path::new("/tmp/hotagent-07")), None);
        assert_eq!(registry_uid(Path::new("/tmp/hotagent-7/")), None);
        assert_eq!(registry_uid(Path::new("/tmp/hotagent-x")), None);
        assert_eq!(registry_uid(Path::new("/run/hotagent-7")), None);
    }
}
