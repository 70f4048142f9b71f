//! `hotctl try CANDIDATE... -- CHECK`: each candidate is reloaded into the running `basic`, judged
//! by a real shell check that asks the target's agent (through the real hotctl) which build is
//! current, and rolled back; the target is then back at generation 0 and answers as v1, unless
//! `--keep` left the first candidate that passed.

use crate::common::{assert_foo, basic, V1, V2};
use hotagent_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CFG: Config = Config::DEFAULT;

/// A check that passes when the agent says the candidate is the current generation's build and
/// the candidate is not listed in `DIR/reject`; it appends what it saw to `DIR/seen` first.
fn status_check(dir: &Path) -> String {
    let d = dir.display();
    let hotctl = hotctl_bin();
    format!(
        r#"echo "$HOTAGENT_PID $HOTAGENT_GENERATION $HOTAGENT_CANDIDATE" >> {d}/seen
echo "check output for $HOTAGENT_CANDIDATE"
st=$({hotctl} --pid "$HOTAGENT_PID" status --json) || exit 7
printf '%s' "$st" | grep -qF "\"generation\":$HOTAGENT_GENERATION," || exit 8
printf '%s' "$st" | grep -qF "\"path\":\"$HOTAGENT_CANDIDATE\"" || exit 9
! grep -qxF "$HOTAGENT_CANDIDATE" {d}/reject 2>/dev/null"#,
        hotctl = hotctl.display()
    )
}

fn real(name: &str) -> PathBuf {
    std::fs::canonicalize(CFG.path(name)).expect("fixture built")
}

fn try_run(t: &Target, dir: &Path, pre: &[&str], check: &[&str]) -> CtlOutput {
    let script = status_check(dir);
    let mut args = vec!["try"];
    args.extend_from_slice(pre);
    args.push("--");
    if check.is_empty() {
        args.extend_from_slice(&["sh", "-c", &script]);
        hotctl(t, &args)
    } else {
        args.extend_from_slice(check);
        hotctl(t, &args)
    }
}

fn seen(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("seen"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[track_caller]
fn assert_back_at_v1(t: &mut Target) {
    t.assert_alive();
    assert_foo(t, &V1);
    let st = status(t);
    assert_eq!(st.generation, 0, "{st:?}");
}

#[test]
fn every_candidate_passes_and_the_target_is_back_at_its_start() {
    let dir = scratch();
    let mut t = basic(CFG);
    let (v2, v3) = (real("libfoo_v2.so"), real("libfoo_v3.so"));
    let out = try_run(&t, dir.path(), &[path_str(&v2), path_str(&v3)], &[]);
    assert!(out.success(), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with(&format!("passed  {}", v2.display())),
        "{out}"
    );
    assert!(lines[0].contains("(generation 1, check "), "{out}");
    assert!(
        lines[1].starts_with(&format!("passed  {}", v3.display())),
        "{out}"
    );
    assert_eq!(
        lines[2],
        "2 of 2 candidates passed; the target is back at generation 0"
    );
    // The check's own output went to hotctl's stderr, never its stdout.
    assert!(out.stderr.contains("check output for"), "{out}");
    assert!(!out.stdout.contains("check output for"), "{out}");
    assert_back_at_v1(&mut t);
}

#[test]
fn the_check_sees_pid_generation_and_candidate() {
    let dir = scratch();
    let mut t = basic(CFG);
    // A generation already stacked: the candidate is checked at generation 2, and the try
    // ends back at 1, not 0.
    reload(&t, &CFG.path("libfoo_partial.so"), &[]);
    let v2 = real("libfoo_v2.so");
    let out = try_run(&t, dir.path(), &[path_str(&v2)], &[]);
    assert!(out.success(), "{out}");
    assert_eq!(
        seen(dir.path()),
        [format!("{} 2 {}", t.pid(), v2.display())]
    );
    assert!(out.stdout.contains("back at generation 1"), "{out}");
    assert_eq!(status(&t).generation, 1);
    t.expect("version", 42);
}

#[test]
fn a_failing_check_fails_its_candidate_and_the_next_is_still_tried() {
    let dir = scratch();
    let mut t = basic(CFG);
    let (v2, v3) = (real("libfoo_v2.so"), real("libfoo_v3.so"));
    std::fs::write(dir.path().join("reject"), format!("{}\n", v3.display())).unwrap();
    let out = try_run(&t, dir.path(), &[path_str(&v3), path_str(&v2)], &[]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "failed  {}  check exited with status 1 (generation 1, check ",
            v3.display()
        )),
        "{out}"
    );
    assert!(lines[1].starts_with("passed  "), "{out}");
    assert!(lines[2].starts_with("1 of 2 candidates passed"), "{out}");
    assert!(out.stderr.contains("not every candidate passed"), "{out}");
    assert_eq!(seen(dir.path()).len(), 2);
    assert_back_at_v1(&mut t);
}

#[test]
fn a_candidate_that_fails_to_load_is_refused_and_the_next_is_tried() {
    let dir = scratch();
    let mut t = basic(CFG);
    let (bad, v2) = (real("libbad_undef.so"), real("libfoo_v2.so"));
    let out = try_run(
        &t,
        dir.path(),
        &[path_str(&bad), path_str(&v2), "--json"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{out}");
    let doc: Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    let first = &doc["candidates"][0];
    assert_eq!(first["path"], path_str(&bad));
    assert_eq!(first["passed"], false);
    let reason = first["reason"].as_str().unwrap();
    assert!(reason.starts_with("refused: "), "{reason}");
    assert!(reason.contains("nobody_defines_this_function"), "{reason}");
    assert!(
        first["check_ms"].is_null() && first["generation"].is_null(),
        "{doc}"
    );
    assert_eq!(doc["candidates"][1]["passed"], true, "{doc}");
    // Only the loaded candidate reached the check.
    assert_eq!(
        seen(dir.path()),
        [format!("{} 1 {}", t.pid(), v2.display())]
    );
    assert_back_at_v1(&mut t);
}

#[test]
fn a_hanging_check_is_killed_at_the_check_timeout() {
    let dir = scratch();
    let mut t = basic(CFG);
    let v2 = real("libfoo_v2.so");
    let pidfile = dir.path().join("bg.pid");
    let script = format!("sleep 100 & echo $! > {}; wait", pidfile.display());
    let started = Instant::now();
    let out = try_run(
        &t,
        dir.path(),
        &[path_str(&v2), "--check-timeout", "300ms"],
        &["sh", "-c", &script],
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(took < Duration::from_secs(10), "took {took:?}: {out}");
    assert!(out.stdout.contains("check timed out after 300 ms"), "{out}");
    // The check's background child was in its process group, and died with it.
    let bg: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{bg}/cmdline")).exists()
        && std::fs::read_to_string(format!("/proc/{bg}/cmdline"))
            .is_ok_and(|c| c.starts_with("sleep"))
    {
        assert!(Instant::now() < deadline, "sleep {bg} outlived its check");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_back_at_v1(&mut t);
}

#[test]
fn keep_leaves_the_first_passing_candidate_and_tries_no_further() {
    let dir = scratch();
    let mut t = basic(CFG);
    let (v2, v3, partial) = (
        real("libfoo_v2.so"),
        real("libfoo_v3.so"),
        real("libfoo_partial.so"),
    );
    std::fs::write(dir.path().join("reject"), format!("{}\n", v3.display())).unwrap();
    let out = try_run(
        &t,
        dir.path(),
        &[path_str(&v3), path_str(&v2), path_str(&partial), "--keep"],
        &[],
    );
    assert!(out.success(), "{out}");
    let last = out.stdout.lines().last().unwrap();
    assert_eq!(
        last,
        format!(
            "1 of 2 candidates passed, 1 candidate not tried; kept {} at generation 1",
            v2.display()
        )
    );
    assert_eq!(seen(dir.path()).len(), 2, "{out}");
    assert_foo(&mut t, &V2);
    let st = status(&t);
    assert_eq!(st.generation, 1);
    assert_eq!(st.generations[0].path, path_str(&v2));
}

#[test]
fn keep_with_no_passing_candidate_fails_and_changes_nothing() {
    let dir = scratch();
    let mut t = basic(CFG);
    let v2 = real("libfoo_v2.so");
    let out = try_run(&t, dir.path(), &[path_str(&v2), "--keep"], &["false"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(out.stderr.contains("no candidate passed"), "{out}");
    assert_back_at_v1(&mut t);
}

#[test]
fn json_is_one_document_of_the_promised_shape() {
    let dir = scratch();
    let mut t = basic(CFG);
    let (v2, v3) = (real("libfoo_v2.so"), real("libfoo_v3.so"));
    std::fs::write(dir.path().join("reject"), format!("{}\n", v3.display())).unwrap();
    let out = try_run(
        &t,
        dir.path(),
        &["--json", path_str(&v2), path_str(&v3)],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{out}");
    let doc: Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["candidates", "generation", "kept"]);
    assert_eq!(doc["generation"], 0);
    assert!(doc["kept"].is_null());
    let c = doc["candidates"].as_array().unwrap();
    assert_eq!(c.len(), 2);
    for v in c {
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "check_exit",
                "check_ms",
                "generation",
                "passed",
                "path",
                "reason"
            ]
        );
        assert_eq!(v["generation"], 1);
        assert!(v["check_ms"].is_u64());
    }
    assert_eq!(c[0]["path"], path_str(&v2));
    assert_eq!(c[0]["passed"], true);
    assert!(c[0]["reason"].is_null());
    assert_eq!(c[0]["check_exit"], 0);
    assert_eq!(c[1]["passed"], false);
    assert_eq!(c[1]["check_exit"], 1);
    assert_eq!(c[1]["reason"], "check exited with status 1");
    assert!(out.stderr.contains("check output for"), "{out}");
    assert_back_at_v1(&mut t);
}

/// Someone else rolls the candidate back while its check runs: hotctl's own rollback is then
/// refused ("nothing to roll back"), and the try stops there, says so and exits 1.
#[test]
fn a_failed_rollback_stops_the_try() {
    let dir = scratch();
    let mut t = basic(CFG);
    let (v2, v3) = (real("libfoo_v2.so"), real("libfoo_v3.so"));
    let script = format!(
        r#"echo "$HOTAGENT_CANDIDATE" >> {d}/seen; {hotctl} --pid "$HOTAGENT_PID" rollback"#,
        d = dir.path().display(),
        hotctl = hotctl_bin().display()
    );
    let out = try_run(
        &t,
        dir.path(),
        &[path_str(&v2), path_str(&v3)],
        &["sh", "-c", &script],
    );
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains(&format!("rolling back {} failed", v2.display())),
        "{out}"
    );
    assert!(out.stderr.contains("nothing to roll back"), "{out}");
    assert!(
        out.stderr.contains("the target is at generation 0"),
        "{out}"
    );
    assert_eq!(seen(dir.path()), [path_str(&v2)], "v3 must not be tried");
    assert!(out.stdout.contains("1 candidate not tried"), "{out}");
    assert_back_at_v1(&mut t);
}

#[test]
fn usage_errors_exit_2_and_change_nothing() {
    let mut t = basic(CFG);
    let v2 = real("libfoo_v2.so");
    for args in [
        &["try", "--", "true"][..],
        &["try", path_str(&v2)][..],
        &["try", path_str(&v2), "--"][..],
    ] {
        let out = hotctl(&t, args);
        assert_eq!(out.status.code(), Some(2), "{out}");
        assert!(out.stdout.is_empty(), "{out}");
    }
    assert_back_at_v1(&mut t);
}
