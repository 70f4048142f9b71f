//! `hotctl diff OLD NEW` (issue 12, "Knowing what changed"): functions added, removed and
//! changed — a string literal read rip-relative counts though no code byte differs — and
//! exported data whose size changed; identical builds differ in nothing. Built from libdiff.c.

use hotagent_tests::*;
use serde_json::Value;
use std::path::Path;

const CFG: Config = Config::DEFAULT;

fn diff(old: &str, new: &str, extra: &[&str]) -> CtlOutput {
    let (old, new) = (CFG.path(old), CFG.path(new));
    let mut args = vec!["diff", path_str(&old), path_str(&new)];
    args.extend_from_slice(extra);
    hotctl_in(Path::new("/nonexistent-socket-dir"), None, &args)
}

fn diff_json(old: &str, new: &str) -> Value {
    let out = diff(old, new, &["--json"]);
    assert!(out.success(), "{out}");
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{out}"))
}

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().or_else(|| n["name"].as_str()).unwrap())
        .collect()
}

#[test]
fn diff_counts_a_changed_string_constant_as_a_change() {
    let d = diff_json("libdiff.so", "libdiff_str.so");
    assert_eq!(names(&d["functions"]["changed"]), ["diff_name"], "{d}");
    assert_eq!(d["functions"]["changed"][0]["proven"], true);
    assert_eq!(
        names(&d["functions"]["unchanged"]),
        ["diff_add", "diff_removed", "diff_sum"],
        "{d}"
    );
    for list in [
        &d["functions"]["added"],
        &d["functions"]["removed"],
        &d["data"]["resized"],
    ] {
        assert!(list.as_array().unwrap().is_empty(), "{d}");
    }
}

#[test]
fn diff_names_added_removed_functions_and_grown_data() {
    let d = diff_json("libdiff.so", "libdiff_v2.so");
    assert_eq!(names(&d["functions"]["added"]), ["diff_added"], "{d}");
    assert_eq!(names(&d["functions"]["removed"]), ["diff_removed"], "{d}");
    assert_eq!(
        d["data"]["resized"],
        serde_json::json!([{"name": "diff_table", "old_size": 16, "new_size": 32}])
    );
    assert!(
        !names(&d["functions"]["changed"]).contains(&"diff_add"),
        "{d}"
    );

    let out = diff("libdiff.so", "libdiff_v2.so", &[]);
    assert!(out.success(), "{out}");
    for part in [
        "functions 0 changed, 1 added, 1 removed",
        "data 1 resized",
        "diff_table",
        "16 -> 32 bytes",
    ] {
        assert!(
            out.stdout.contains(part),
            "{part:?} missing:\n{}",
            out.stdout
        );
    }
    let row = |what: &str, name: &str| {
        out.stdout.lines().any(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .starts_with(&[what, name])
        })
    };
    assert!(
        row("added", "diff_added") && row("removed", "diff_removed"),
        "{}",
        out.stdout
    );
}

#[test]
fn diff_of_identical_builds_changes_nothing() {
    let d = diff_json("libdiff.so", "libdiff_same.so");
    assert!(names(&d["functions"]["changed"]).is_empty(), "{d}");
    assert_eq!(names(&d["functions"]["unchanged"]).len(), 4, "{d}");
    let out = diff("libdiff.so", "libdiff_same.so", &[]);
    assert!(
        out.stdout
            .contains("functions 0 changed, 0 added, 0 removed, 4 unchanged"),
        "{out}"
    );
}

#[test]
fn diff_refuses_a_file_that_is_not_elf_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.so");
    std::fs::write(&junk, b"junk").unwrap();
    let lib = CFG.path("libdiff.so");
    let out = hotctl_in(dir.path(), None, &["diff", path_str(&lib), path_str(&junk)]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(
        out.stderr
            .contains(&format!("{} is not an ELF file", path_str(&junk))),
        "{out}"
    );
    let missing = dir.path().join("missing.so");
    let out = hotctl_in(
        dir.path(),
        None,
        &["diff", path_str(&missing), path_str(&lib)],
    );
    assert!(
        out.stderr
            .contains(&format!("cannot read {}", path_str(&missing))),
        "{out}"
    );
}
