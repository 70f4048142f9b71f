//! Builds the real libraries and the patches of the suite into `target/realworld/<name>/`,
//! each once per test run and only when a command line or an input's bytes changed (a stamp
//! next to the artifact holds their hash), so a second `make realworld` compiles nothing.
//!
//! - SQLite (`libsqlite3.so.0`, Debian's defines): A = 3.41.2; A' = the same source with
//!   `sqlite3_sourceid` answering its id plus ` hotfix` (SQL: `sqlite_source_id()`); B = 3.46.0,
//!   whose private state differs; and a patch carrying only the fixed `sqlite3_sourceid`.
//! - zlib 1.3.1 (`libz.so.1`, linked with zlib's own version script `zlib.map`): A; A' = the
//!   same source with `deflateInit2_` storing every new stream (level 0) — observable in any
//!   compressed output, and still a valid stream.
//! - A libc patch: `strcoll` collating case-insensitively (redis's `SORT ... ALPHA`).

use crate::sources::{crate_dir, Pinned, SQLITE_A, SQLITE_B, ZLIB};
use anyhow::{bail, Context, Result};
use hotagent_tests::{repo_root, target_dir};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

/// The fixed `sqlite3_sourceid` answers the source id with this suffix. (Not the version
/// string: python's `sqlite3` module parses that as numbers when it is imported.)
pub const SQLITE_FIX_SUFFIX: &str = " hotfix";

/// Roughly Debian 12's `sqlite3` package: what its `libsqlite3.so.0` and python's `_sqlite3`
/// (load_extension, column metadata, URIs) rely on.
const SQLITE_DEFINES: &[&str] = &[
    "-DSQLITE_THREADSAFE=1",
    "-DSQLITE_SECURE_DELETE",
    "-DSQLITE_ENABLE_COLUMN_METADATA",
    "-DSQLITE_ENABLE_FTS3",
    "-DSQLITE_ENABLE_FTS3_PARENTHESIS",
    "-DSQLITE_ENABLE_FTS3_TOKENIZER",
    "-DSQLITE_ENABLE_RTREE=1",
    "-DSQLITE_SOUNDEX=1",
    "-DSQLITE_ENABLE_UNLOCK_NOTIFY",
    "-DSQLITE_OMIT_LOOKASIDE=1",
    "-DSQLITE_ENABLE_DBSTAT_VTAB",
    "-DSQLITE_ENABLE_UPDATE_DELETE_LIMIT=1",
    "-DSQLITE_ENABLE_LOAD_EXTENSION",
    "-DSQLITE_ENABLE_JSON1",
    "-DSQLITE_LIKE_DOESNT_MATCH_BLOBS",
    "-DSQLITE_USE_URI=1",
    "-DSQLITE_MAX_SCHEMA_RETRY=25",
    "-DSQLITE_ENABLE_PREUPDATE_HOOK",
    "-DSQLITE_ENABLE_SESSION",
    "-DSQLITE_ENABLE_STMTVTAB",
    "-DSQLITE_MAX_VARIABLE_NUMBER=250000",
    "-DSQLITE_ENABLE_MATH_FUNCTIONS",
    "-DHAVE_USLEEP=1",
];

/// zlib's own `configure` on Linux.
const ZLIB_DEFINES: &[&str] = &[
    "-D_LARGEFILE64_SOURCE=1",
    "-DHAVE_HIDDEN",
    "-DHAVE_UNISTD_H",
];

const ZLIB_SOURCES: &[&str] = &[
    "adler32.c",
    "crc32.c",
    "deflate.c",
    "infback.c",
    "inffast.c",
    "inflate.c",
    "inftrees.c",
    "trees.c",
    "zutil.c",
    "compress.c",
    "uncompr.c",
    "gzclose.c",
    "gzlib.c",
    "gzread.c",
    "gzwrite.c",
];

/// Which build of a library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// The version the target starts with.
    A,
    /// The same source with one function changed.
    Fixed,
    /// Another version (SQLite only).
    Upgrade,
}

impl Build {
    fn tag(self) -> &'static str {
        match self {
            Build::A => "a",
            Build::Fixed => "a-fixed",
            Build::Upgrade => "b",
        }
    }
}

fn out_dir(name: &str) -> PathBuf {
    target_dir().join("realworld").join(name)
}

fn fixture(name: &str) -> PathBuf {
    repo_root()
        .join("tests")
        .join("realworld")
        .join("fixtures")
        .join(name)
}

/// Runs `f` once per test run for `key`; later callers get the same path (or the same failure).
fn once(key: &'static str, f: impl FnOnce() -> Result<PathBuf>) -> PathBuf {
    type Cell = Arc<OnceLock<Result<PathBuf, String>>>;
    static MEMO: OnceLock<Mutex<HashMap<&'static str, Cell>>> = OnceLock::new();
    let cell = MEMO
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default()
        .clone();
    match cell.get_or_init(|| f().map_err(|e| format!("{e:#}"))) {
        Ok(path) => path.clone(),
        Err(why) => panic!("building {key} failed: {why}"),
    }
}

/// Writes `text` to `path` unless it already holds exactly that.
fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

/// `source` with `old` replaced by `new` exactly once: a pinned source that no longer holds
/// `old` is an error, never a silently unpatched build.
fn patched(source: &str, old: &str, new: &str, what: &str) -> Result<String> {
    let n = source.matches(old).count();
    if n != 1 {
        bail!("{what}: expected one {old:?}, found {n}");
    }
    Ok(source.replacen(old, new, 1))
}

/// `gcc ARGS -o OUT`, skipped when the stamp next to `out` matches the arguments and the bytes
/// of `inputs`. Builds into a temporary name renamed into place, so concurrent runs never see
/// half a library.
fn cc(out: &Path, args: &[String], inputs: &[PathBuf]) -> Result<()> {
    let compiler = std::env::var("CC").unwrap_or_else(|_| "gcc".to_string());
    let mut hasher = DefaultHasher::new();
    compiler.hash(&mut hasher);
    args.hash(&mut hasher);
    for input in inputs {
        std::fs::read(input)
            .with_context(|| format!("read {}", input.display()))?
            .hash(&mut hasher);
    }
    let stamp = format!("{:016x}\n", hasher.finish());
    let stamp_file = out.with_extension("stamp");
    if out.is_file() && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(&stamp) {
        return Ok(());
    }
    let dir = out.parent().context("output without a folder")?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".build-{}.so", std::process::id()));
    let output = Command::new(&compiler)
        .args(args)
        .arg("-o")
        .arg(&tmp)
        .output()
        .with_context(|| format!("run {compiler}"))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "{compiler} {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::rename(&tmp, out)?;
    write_if_changed(&stamp_file, &stamp)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn sqlite_source(krate: Pinned) -> Result<PathBuf> {
    Ok(crate_dir(krate)?.join("sqlite3"))
}

/// The folder holding `libsqlite3.so.0` of `build` (the folder for `LD_LIBRARY_PATH`).
pub fn sqlite(build: Build) -> PathBuf {
    let key = match build {
        Build::A => "sqlite-a",
        Build::Fixed => "sqlite-a-fixed",
        Build::Upgrade => "sqlite-b",
    };
    once(key, || {
        let dir = out_dir(&format!("sqlite-{}", build.tag()));
        std::fs::create_dir_all(&dir)?;
        let krate = if build == Build::Upgrade {
            SQLITE_B
        } else {
            SQLITE_A
        };
        let src = sqlite_source(krate)?;
        let mut amalgamation = src.join("sqlite3.c");
        if build == Build::Fixed {
            let text = std::fs::read_to_string(&amalgamation)
                .with_context(|| format!("read {}", amalgamation.display()))?;
            let fixed = patched(
                &text,
                // The line start: the same text appears once more inside a comment.
                "\nSQLITE_API const char *sqlite3_sourceid(void){ return SQLITE_SOURCE_ID; }",
                &format!(
                    "\nSQLITE_API const char *sqlite3_sourceid(void){{ return SQLITE_SOURCE_ID \"{SQLITE_FIX_SUFFIX}\"; }}"
                ),
                "sqlite3.c",
            )?;
            amalgamation = dir.join("sqlite3.c");
            write_if_changed(&amalgamation, &fixed)?;
        }
        let mut args = strings(&["-O2", "-fPIC", "-shared", "-Wl,-soname,libsqlite3.so.0"]);
        args.extend(strings(SQLITE_DEFINES));
        args.push(format!("-I{}", path_arg(&src)));
        args.push(path_arg(&amalgamation));
        args.push("-lm".into());
        let out = dir.join("libsqlite3.so.0");
        cc(&out, &args, &[amalgamation, src.join("sqlite3.h")])?;
        Ok(dir)
    })
}

/// A patch of `libsqlite3.so.0` carrying only the fixed `sqlite3_sourceid`.
pub fn sqlite_partial_fix() -> PathBuf {
    once("sqlite-partial", || {
        let src = sqlite_source(SQLITE_A)?;
        let c = fixture("sqlite_fix.c");
        let out = out_dir("sqlite-partial").join("libsqlite3_fix.so");
        let args = vec![
            "-O2".into(),
            "-fPIC".into(),
            "-shared".into(),
            "-Wl,-soname,libsqlite3_fix.so".into(),
            format!("-I{}", path_arg(&src)),
            format!("-DFIX_SUFFIX=\"{SQLITE_FIX_SUFFIX}\""),
            path_arg(&c),
        ];
        cc(&out, &args, &[c.clone(), src.join("sqlite3.h")])?;
        Ok(out)
    })
}

/// The folder holding `libz.so.1` of `build` (A or Fixed).
pub fn zlib(build: Build) -> PathBuf {
    let key = match build {
        Build::A => "zlib-a",
        Build::Fixed => "zlib-a-fixed",
        Build::Upgrade => panic!("the suite has one zlib version"),
    };
    once(key, || {
        let dir = out_dir(&format!("zlib-{}", build.tag()));
        std::fs::create_dir_all(&dir)?;
        let src = crate_dir(ZLIB)?.join("src").join("zlib");
        let map = src.join("zlib.map");
        let mut inputs: Vec<PathBuf> = ZLIB_SOURCES.iter().map(|f| src.join(f)).collect();
        if build == Build::Fixed {
            let deflate = src.join("deflate.c");
            let text = std::fs::read_to_string(&deflate)
                .with_context(|| format!("read {}", deflate.display()))?;
            let fixed = patched(
                &text,
                // deflateInit2_'s, not deflateParams' (the same lines follow its zfree default).
                "zcfree;\n#endif\n\n#ifdef FASTEST\n    if (level != 0) level = 1;\n#else\n    if (level == Z_DEFAULT_COMPRESSION) level = 6;",
                "zcfree;\n#endif\n\n#ifdef FASTEST\n    if (level != 0) level = 1;\n#else\n    level = 0;  /* the suite's fix: store */",
                "deflate.c",
            )?;
            // Next to its headers would be simplest, but the registry's copy is not ours to
            // edit: the patched file lives in the output folder and finds them with -I.
            let copy = dir.join("deflate.c");
            write_if_changed(&copy, &fixed)?;
            inputs[2] = copy;
        }
        let mut args = strings(&["-O2", "-fPIC", "-shared", "-Wl,-soname,libz.so.1"]);
        args.push(format!("-Wl,--version-script,{}", path_arg(&map)));
        args.extend(strings(ZLIB_DEFINES));
        args.push(format!("-I{}", path_arg(&src)));
        args.extend(inputs.iter().map(|p| path_arg(p)));
        let mut deps = inputs.clone();
        deps.push(map);
        for h in [
            "zlib.h",
            "zconf.h",
            "zutil.h",
            "deflate.h",
            "inflate.h",
            "gzguts.h",
        ] {
            deps.push(src.join(h));
        }
        cc(&dir.join("libz.so.1"), &args, &deps)?;
        Ok(dir)
    })
}

/// A patch of libc whose `strcoll` collates case-insensitively (ties by byte order).
pub fn strcoll_patch() -> PathBuf {
    once("strcoll-patch", || {
        let c = fixture("strcoll_fix.c");
        let out = out_dir("libc-strcoll").join("libc_strcoll.so");
        let args = vec![
            "-O2".into(),
            "-fPIC".into(),
            "-shared".into(),
            "-Wall".into(),
            "-Wl,-soname,libc_strcoll.so".into(),
            path_arg(&c),
        ];
        cc(&out, &args, std::slice::from_ref(&c))?;
        Ok(out)
    })
}
