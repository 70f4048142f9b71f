//! Where the repository, the release artifacts and the fixture cache are.

use std::path::{Path, PathBuf};

/// The repository root (the parent of `tests/`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("tests/ has a parent folder")
        .to_path_buf()
}

/// `$CARGO_TARGET_DIR` (relative to the repository root when relative), else `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// Where the fixture sources live.
pub fn fixtures_src() -> PathBuf {
    repo_root().join("tests").join("fixtures")
}

/// The newest modification time of any file under `dir`.
fn newest_under(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_under(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// The tests do not depend on the cdylib and hotctl through cargo, so `cargo test` alone would
/// happily test yesterday's agent: refuse artifacts older than their sources.
fn release_artifact(name: &str, crates: &[&str]) -> PathBuf {
    let path = target_dir().join("release").join(name);
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo build --release` first (make test does)",
                path.display()
            )
        });
    let sources = crates
        .iter()
        .filter_map(|c| newest_under(&repo_root().join(c).join("src")))
        .max();
    if sources.is_some_and(|s| s > built) {
        panic!(
            "{} is older than its sources: run `cargo build --release` first (make test does)",
            path.display()
        );
    }
    path
}

/// `target/release/libhotagent.so`.
pub fn agent_so() -> PathBuf {
    release_artifact("libhotagent.so", &["agent", "protocol"])
}

/// `target/release/hotctl`.
pub fn hotctl_bin() -> PathBuf {
    release_artifact("hotctl", &["control", "protocol"])
}

/// A cdylib of a workspace crate in `target/release/` (e.g. `libshadowy_rs.so` from
/// `tests/fixtures/rust_shadow`), refused when older than its crate's or `api/`'s sources.
pub fn release_cdylib(name: &str, crate_dir: &str) -> PathBuf {
    release_artifact(name, &[crate_dir, "api"])
}
