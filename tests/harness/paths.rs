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

fn release_artifact(name: &str) -> PathBuf {
    let path = target_dir().join("release").join(name);
    if !path.is_file() {
        panic!(
            "{} is missing: run `cargo build --release` first (make test does)",
            path.display()
        );
    }
    path
}

/// `target/release/libhotagent.so`.
pub fn agent_so() -> PathBuf {
    release_artifact("libhotagent.so")
}

/// `target/release/hotctl`.
pub fn hotctl_bin() -> PathBuf {
    release_artifact("hotctl")
}
