//! Symbol versions as real libraries use them, and what a refused load leaves behind.
//!
//! - The base version (index 1, `VER_FLG_BASE`, which names the file) is no version: zlib's
//!   `inflateEnd` and every function a version script leaves out of its nodes carry it. Debian's
//!   own `libz.so.1`, copied byte for byte, reloads cleanly; so does a build with a version
//!   script shaped like zlib's whose versions are numbered apart from the running one's (old and
//!   new are paired by version *name*), hidden (`@`) and default (`@@`) versions included.
//! - The dry run decides as the reload does: the reload's lookups in the new library are made by
//!   the probe (and checked), or answered from the file with `--no-probe`.
//! - A reload refused after its library was loaded unloads it again: no mapping, no memfd, no
//!   generation number or `name#N` label used up. A library the loader will not unload stays,
//!   named as a refused load, never as a generation.

use crate::common::{basic, expect_foo_calls, refused, V1, V2};
use hotagent_tests::protocol::{ErrorCode, ReloadReport};
use hotagent_tests::*;
use std::path::{Path, PathBuf};

const CFG: Config = Config::DEFAULT;

/// The mappings of the agent's staged copies in the target (`/memfd:hotagent:...`).
fn staged_mappings(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("read the target's maps")
        .lines()
        .filter(|l| l.contains("memfd:hotagent"))
        .count()
}

/// The target's descriptors that name one of the agent's staged copies.
fn staged_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the target's descriptors")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().contains("memfd:hotagent"))
        .count()
}

/// (name, version) of every symbol a report names, sorted: what a dry run and a reload compare.
fn pairs(r: &ReloadReport) -> Vec<(String, Option<String>)> {
    let mut v: Vec<_> = r
        .symbols
        .iter()
        .map(|s| (s.name.clone(), s.version.clone()))
        .collect();
    v.sort();
    v
}

/// Debian's libz.so.1, copied byte for byte into `dir`.
fn distribution_libz(dir: &Path) -> PathBuf {
    let real = std::fs::canonicalize("/lib/x86_64-linux-gnu/libz.so.1")
        .or_else(|_| std::fs::canonicalize("/usr/lib/x86_64-linux-gnu/libz.so.1"))
        .expect("zlib1g is installed (libz.so.1)");
    let copy = dir.join("libz.so.1");
    copy_atomic(&real, &copy);
    copy
}

/// Regression: the base version was taken for a version ("libz.so.1") and passed to `dlvsym`,
/// so a byte-identical copy of the distribution's zlib was refused after loading ("dlsym cannot
/// find its inflateEnd") while the dry run accepted it.
#[test]
fn distribution_libz_copy_reloads_cleanly() {
    let dir = scratch();
    let libz = distribution_libz(dir.path());
    let mut t = Target::spawn(CFG.path("zuser"));
    let version = t.cmd("version");
    let crc = t.cmd("crc");
    t.expect("round hello zlib", "hello zlib");

    let probed = reload(&t, &libz, &["--dry-run"]);
    let unprobed = reload(&t, &libz, &["--dry-run", "--no-probe"]);
    let real = reload(&t, &libz, &[]);
    assert_eq!(real.generation, 1);
    assert_eq!(
        pairs(&probed),
        pairs(&real),
        "the dry run decides as the reload"
    );
    assert_eq!(pairs(&unprobed), pairs(&real));
    let symbols = pairs(&real);
    for (name, version) in [
        ("inflateEnd", None),
        ("compress", None),
        ("crc32_z", Some("ZLIB_1.2.9")),
        ("compressBound", Some("ZLIB_1.2.0")),
    ] {
        assert!(
            symbols.contains(&(name.to_string(), version.map(str::to_string))),
            "{name} {version:?} among {symbols:?}"
        );
    }
    assert!(
        !symbols
            .iter()
            .any(|(_, v)| v.as_deref() == Some("libz.so.1")),
        "the base version named as a version: {symbols:?}"
    );

    // Every call now runs the copy, and answers as before.
    t.expect("version", &version);
    t.expect("crc", &crc);
    t.expect("round after the reload", "after the reload");
    rollback(&t);
    t.expect("round after the rollback", "after the rollback");
    assert_eq!(status(&t).generation, 0);
}

/// A build with a version script shaped like zlib's (functions in no node, nodes inheriting one
/// another, one function under a hidden old and a default new version), reloaded by a rebuild
/// whose versions carry other indices: each function pairs with the one of the same name and
/// version name, and every call switches.
#[test]
fn version_script_build_pairs_versions_by_name() {
    let mut t = Target::spawn(CFG.path("zlike"));
    t.expect("all", "101 102 103 104 105");
    let v2 = CFG.path("libzlike_v2.so");
    let probed = reload(&t, &v2, &["--dry-run"]);
    let unprobed = reload(&t, &v2, &["--dry-run", "--no-probe"]);
    let real = reload(&t, &v2, &[]);
    assert_eq!(pairs(&probed), pairs(&real));
    assert_eq!(pairs(&unprobed), pairs(&real));
    let some = |v: &str| Some(v.to_string());
    assert_eq!(
        pairs(&real),
        vec![
            ("zl_base".to_string(), None),
            ("zl_bound".to_string(), some("ZL_1.0")),
            ("zl_flags".to_string(), some("ZL_1.1")),
            ("zl_pick".to_string(), some("ZL_1.0")),
            ("zl_pick".to_string(), some("ZL_1.2")),
        ],
        "zl_extra is only in v2; the base version is none"
    );
    t.expect("all", "201 202 203 204 205");
    rollback(&t);
    t.expect("all", "101 102 103 104 105");
    // A byte-identical copy of the running build is a clean reload too.
    let dir = scratch();
    let copy = dir.path().join("libzlike.so");
    copy_atomic(&CFG.path("libzlike.so"), &copy);
    assert_eq!(reload(&t, &copy, &[]).generation, 1);
    t.expect("all", "101 102 103 104 105");
}

/// Regression: the probe made the reload's lookups but never looked at the answers, so a dry
/// run accepted a library whose IFUNC resolver picks the code it replaces, and only the real
/// reload refused it (after loading it). Now the probe refuses it, dry run included.
#[test]
fn probe_refuses_a_lookup_that_resolves_back() {
    let mut t = basic(CFG);
    refused(
        &mut t,
        &CFG.path("libfoo_backref.so"),
        &[],
        &[ErrorCode::LoadFailed],
        &["libfoo_backref.so", "foo_version", "resolves back into"],
    );
    assert_eq!(staged_mappings(t.pid()), 0);
}

/// Without the probe, where an IFUNC resolver points is unknown until the library is loaded: the
/// dry run says so instead of silently accepting.
#[test]
fn no_probe_dry_run_names_what_it_cannot_see() {
    let t = basic(CFG);
    let r = reload(
        &t,
        &CFG.path("libfoo_backref.so"),
        &["--dry-run", "--no-probe"],
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("IFUNC") && w.contains("foo_version")),
        "{:?}",
        r.warnings
    );
}

/// Regression: a reload refused after `dlopen` left the library mapped (five mappings a try),
/// its memfd open, and reports named those leftovers `name#1` like the real generation 1.
#[test]
fn load_refused_after_dlopen_leaves_nothing_behind() {
    let mut t = basic(CFG);
    let (maps, fds) = (staged_mappings(t.pid()), staged_descriptors(t.pid()));
    assert_eq!(maps, 0);
    let bad = CFG.path("libfoo_backref.so");
    for _ in 0..3 {
        let msg = expect_fail(&t, &["reload", path_str(&bad), "--no-probe"]);
        assert!(msg.contains("resolves back into"), "{msg}");
        assert!(!msg.contains("stays mapped"), "{msg}");
        assert_eq!(
            staged_mappings(t.pid()),
            maps,
            "a mapping of the refused copy remains"
        );
        assert_eq!(staged_descriptors(t.pid()), fds, "its memfd remains open");
        expect_foo_calls(&mut t, &V1);
    }
    let st = status(&t);
    assert_eq!((st.generation, st.generations.len()), (0, 0), "{st:?}");
    assert!(st.refused_loads.is_empty(), "{st:?}");

    // The next reload is generation 1, and only it is called so.
    let r = reload(&t, &CFG.path("libfoo_v2.so"), &[]);
    assert_eq!(r.generation, 1);
    let modules: Vec<&String> = r.symbols.iter().flat_map(|s| &s.modules).collect();
    assert!(
        modules
            .iter()
            .all(|m| !m.contains('#') || *m == "libfoo_v2.so#1"),
        "{modules:?}"
    );
    expect_foo_calls(&mut t, &V2);
    assert!(staged_mappings(t.pid()) > 0);
    rollback(&t);
    expect_foo_calls(&mut t, &V1);
}

/// A library the loader will not unload (`-z nodelete`) stays mapped after its refusal: the error
/// and `status` say so, as a refused load; it takes no generation number or label, and the next
/// reload is generation 1.
#[test]
fn refused_load_the_loader_keeps_is_named_as_such() {
    let mut t = basic(CFG);
    let pinned = CFG.path("libfoo_backref_pinned.so");
    let msg = expect_fail(&t, &["reload", path_str(&pinned), "--no-probe"]);
    assert!(
        msg.contains("resolves back into")
            && msg.contains("would not unload it")
            && msg.contains("refused load"),
        "{msg}"
    );
    let kept = staged_mappings(t.pid());
    assert!(kept > 0, "the loader kept it mapped");
    let st = status(&t);
    assert_eq!((st.generation, st.generations.len()), (0, 0), "{st:?}");
    assert_eq!(st.refused_loads.len(), 1, "{st:?}");
    assert_eq!(st.refused_loads[0].path, path_str(&pinned));
    expect_foo_calls(&mut t, &V1);

    let r = reload(&t, &CFG.path("libfoo_v2.so"), &[]);
    assert_eq!(r.generation, 1);
    assert!(
        r.symbols
            .iter()
            .flat_map(|s| &s.modules)
            .all(|m| !m.contains('#') || m == "libfoo_v2.so#1"),
        "{:?}",
        r.symbols
    );
    expect_foo_calls(&mut t, &V2);
    let text = hotctl(&t, &["status"]);
    assert!(text.success(), "{text}");
    assert!(text.stdout.contains("refused load"), "{text}");
    rollback(&t);
    expect_foo_calls(&mut t, &V1);
}

/// A refused library whose constructor started a thread running its code is not unloaded (the
/// thread would jump into unmapped memory and take the target down): it stays mapped, named as a
/// refused load, and the target keeps running.
#[test]
fn refused_load_with_a_running_thread_stays_mapped() {
    let mut t = basic(CFG);
    let bad = CFG.path("libfoo_backref_thread.so");
    let msg = expect_fail(&t, &["reload", path_str(&bad), "--no-probe"]);
    assert!(
        msg.contains("resolves back into") && msg.contains("started thread"),
        "{msg}"
    );
    // The thread returns into the library every millisecond: give it many chances to crash.
    for _ in 0..50 {
        expect_foo_calls(&mut t, &V1);
    }
    t.assert_alive();
    let st = status(&t);
    assert_eq!((st.generation, st.refused_loads.len()), (0, 1), "{st:?}");
    assert!(staged_mappings(t.pid()) > 0);
    assert_eq!(reload(&t, &CFG.path("libfoo_v2.so"), &[]).generation, 1);
    expect_foo_calls(&mut t, &V2);
}
