//! Pinned upstream sources, taken from crates that bundle them: `libsqlite3-sys` carries
//! SQLite's amalgamation, `libz-sys` zlib's source tree with its version script.
//!
//! Each crate is fetched by cargo itself, through a throwaway one-dependency project under
//! `target/realworld/fetch/` (one project per crate version: two `libsqlite3-sys` in one graph
//! would clash on `links = "sqlite3"`), and found again through `cargo metadata`, so the
//! registry's location (`CARGO_HOME`, its index hash) is cargo's business.

use anyhow::{anyhow, bail, Context, Result};
use hotagent_tests::target_dir;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// A crate pinned to one exact version.
#[derive(Clone, Copy, Debug)]
pub struct Pinned {
    pub name: &'static str,
    pub version: &'static str,
}

/// SQLite 3.41.2: the version of builds A and A'.
pub const SQLITE_A: Pinned = Pinned {
    name: "libsqlite3-sys",
    version: "0.26.0",
};
/// SQLite 3.46.0: the upgrade (build B), whose private state differs.
pub const SQLITE_B: Pinned = Pinned {
    name: "libsqlite3-sys",
    version: "0.30.1",
};
/// zlib 1.3.1 with `zlib.map` (later libz-sys releases no longer ship the version script).
pub const ZLIB: Pinned = Pinned {
    name: "libz-sys",
    version: "1.1.16",
};

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// The unpacked crate's folder, fetched first if needed. Serialised: concurrent `cargo fetch`
/// runs would wait on cargo's package lock anyway.
pub fn crate_dir(krate: Pinned) -> Result<PathBuf> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    let _held = LOCK
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let project = target_dir()
        .join("realworld")
        .join("fetch")
        .join(format!("{}-{}", krate.name, krate.version));
    std::fs::create_dir_all(project.join("src"))
        .with_context(|| format!("create {}", project.display()))?;
    // `[workspace]`: the project lies inside this repository's workspace folder, and must not
    // be taken for a member of it.
    let manifest = format!(
        "[package]\nname = \"realworld-fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
         publish = false\n\n[workspace]\n\n[dependencies]\n{} = \"={}\"\n",
        krate.name, krate.version
    );
    std::fs::write(project.join("Cargo.toml"), manifest)?;
    std::fs::write(project.join("src").join("lib.rs"), "")?;

    let fetch = Command::new(cargo())
        .arg("fetch")
        .current_dir(&project)
        .output()
        .context("run cargo fetch")?;
    if !fetch.status.success() {
        bail!(
            "cargo fetch of {} {} failed:\n{}",
            krate.name,
            krate.version,
            String::from_utf8_lossy(&fetch.stderr)
        );
    }
    let meta = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(&project)
        .output()
        .context("run cargo metadata")?;
    if !meta.status.success() {
        bail!(
            "cargo metadata failed:\n{}",
            String::from_utf8_lossy(&meta.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&meta.stdout).context("cargo metadata's JSON")?;
    let manifest = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == krate.name && p["version"] == krate.version)
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or_else(|| {
            anyhow!(
                "cargo metadata does not list {} {}",
                krate.name,
                krate.version
            )
        })?;
    let dir = PathBuf::from(manifest)
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("manifest path without a folder: {manifest}"))?;
    Ok(dir)
}
