//! Many processes at once: `--pid` repeated, `--exe`, `--all`, a bounded parallel rollout with
//! canaries, a failure budget and all-or-nothing; real targets sharing one socket folder.

use hotagent_tests::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const CFG: Config = Config::DEFAULT;

/// Targets in one socket folder: `n` of `basic` (loads libfoo.so), and `zuser` (does not).
struct Fleet {
    dir: tempfile::TempDir,
    basics: Vec<Target>,
    zuser: Target,
}

fn fleet(n: usize) -> Fleet {
    let dir = scratch();
    let start = |exe: &str| {
        Target::builder(CFG.path(exe))
            .socket_dir(dir.path())
            .spawn()
    };
    let basics = (0..n).map(|_| start("basic")).collect();
    let zuser = start("zuser");
    Fleet { dir, basics, zuser }
}

impl Fleet {
    fn ctl(&self, args: &[&str]) -> CtlOutput {
        hotctl_in(self.dir.path(), None, args)
    }
}

fn lib(name: &str) -> String {
    path_str(&CFG.path(name)).to_string()
}

fn json(out: &CtlOutput) -> Value {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{out}"))
}

/// The result row of `pid` in a fleet document.
fn row(doc: &Value, pid: u32) -> &Value {
    doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pid"] == pid)
        .unwrap_or_else(|| panic!("no row for {pid}: {doc}"))
}

fn generation(t: &Target) -> u32 {
    status(t).generation
}

/// A target put on probation for long: the agent refuses any reload of it (OnProbation).
fn on_probation(t: &Target) {
    reload(t, &CFG.path("libfoo_v2.so"), &["--probation", "10m"]);
}

#[test]
fn all_switches_those_with_the_module_and_skips_the_others() {
    let mut f = fleet(3);
    let out = f.ctl(&["reload", &lib("libfoo_v2.so"), "--all"]);
    assert!(out.success(), "{out}");
    for t in &mut f.basics {
        t.expect("version", 2);
        let line = format!("pid {:<7} switched  generation 1", t.pid());
        assert!(out.stdout.contains(&line), "{line:?}\n{out}");
    }
    let skipped = format!("pid {:<7} skipped   generation 0", f.zuser.pid());
    assert!(out.stdout.contains(&skipped), "{skipped:?}\n{out}");
    assert_eq!(generation(&f.zuser), 0);
    assert!(
        out.stdout.ends_with("3 switched, 1 skipped, 0 failed\n"),
        "{out}"
    );
    // A pipe gets no progress bar: nothing but (nothing) on stderr, no terminal controls.
    assert!(out.stderr.is_empty(), "{out}");

    // Rollback of all: the skipped one has nothing to roll back, and is skipped again.
    let out = f.ctl(&["rollback", "--all", "--json"]);
    assert!(out.success(), "{out}");
    let doc = json(&out);
    assert_eq!(doc["summary"]["rolled_back"], 3, "{doc}");
    assert_eq!(doc["summary"]["skipped"], 1, "{doc}");
    for t in &mut f.basics {
        t.expect("version", 1);
    }
}

#[test]
fn repeated_pid_and_exe_select_and_json_has_one_row_each() {
    let mut f = fleet(3);
    let (a, b) = (f.basics[0].pid().to_string(), f.basics[1].pid().to_string());
    let out = f.ctl(&[
        "reload",
        &lib("libfoo_v2.so"),
        "--pid",
        &a,
        "--pid",
        &b,
        "--json",
    ]);
    assert!(out.success(), "{out}");
    let doc = json(&out);
    assert_eq!(doc["verb"], "reload");
    assert_eq!(doc["results"].as_array().unwrap().len(), 2, "{doc}");
    for t in &f.basics[..2] {
        let r = row(&doc, t.pid());
        assert_eq!(r["outcome"], "switched", "{doc}");
        assert_eq!(r["generation"], 1, "{doc}");
        assert_eq!(r["report"]["generation"], 1, "{doc}");
        assert_eq!(r["exe"], path_str(&CFG.path("basic")), "{doc}");
    }
    assert_eq!(doc["summary"]["switched"], 2);
    assert_eq!(doc["summary"]["failed"], 0);
    assert!(doc["stopped"].is_null());
    assert_eq!(generation(&f.basics[2]), 0);
    f.basics[2].expect("version", 1);

    // --exe by file name: every basic, not zuser; status reports each one's generation.
    let out = f.ctl(&["status", "--exe", "basic", "--json"]);
    assert!(out.success(), "{out}");
    let doc = json(&out);
    let gens: Vec<(u64, u64)> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["pid"].as_u64().unwrap(),
                r["generation"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut want: Vec<(u64, u64)> = f
        .basics
        .iter()
        .zip([1, 1, 0])
        .map(|(t, g)| (t.pid() as u64, g))
        .collect();
    want.sort();
    assert_eq!(gens, want, "{doc}");

    // --exe by path reloads the three; the zuser is not touched at all.
    let out = f.ctl(&["reload", &lib("libfoo_v3.so"), "--exe", &lib("basic")]);
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.ends_with("3 switched, 0 skipped, 0 failed\n"),
        "{out}"
    );
    for t in &mut f.basics {
        t.expect("version", 3);
    }
    assert!(!out.stdout.contains(&f.zuser.pid().to_string()), "{out}");

    // One process selected behaves as before: the plain report, no fleet summary.
    let one = f.basics[0].pid().to_string();
    let out = f.ctl(&["status", "--pid", &one]);
    assert!(out.stdout.starts_with(&format!("pid {one}: ")), "{out}");
    let out = f.ctl(&["status", "--exe", "zuser"]);
    assert!(
        out.stdout.starts_with(&format!("pid {}: ", f.zuser.pid())),
        "{out}"
    );
}

#[test]
fn one_failing_target_fails_the_run_and_the_others_switch() {
    let mut f = fleet(3);
    on_probation(&f.basics[1]);
    let out = f.ctl(&["reload", &lib("libfoo_v3.so"), "--all", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert_eq!(
        out.stderr.trim(),
        "hotctl: 1 of 4 processes failed",
        "{out}"
    );
    let doc = json(&out);
    let bad = row(&doc, f.basics[1].pid());
    assert_eq!(bad["outcome"], "failed", "{doc}");
    assert_eq!(bad["error"]["code"], "on_probation", "{doc}");
    assert_eq!(bad["generation"], 1, "{doc}");
    for i in [0, 2] {
        assert_eq!(row(&doc, f.basics[i].pid())["outcome"], "switched", "{doc}");
        f.basics[i].expect("version", 3);
    }
    assert_eq!(doc["summary"]["skipped"], 1, "{doc}");
}

/// Pids in the order the rollout takes them.
fn by_pid(targets: &[Target]) -> Vec<&Target> {
    let mut v: Vec<&Target> = targets.iter().collect();
    v.sort_by_key(|t| t.pid());
    v
}

#[test]
fn max_fail_zero_stops_after_the_first_failure() {
    let f = fleet(4);
    let order = by_pid(&f.basics);
    // The second in line refuses; one at a time, nothing after it may start.
    on_probation(order[1]);
    let out = f.ctl(&[
        "reload",
        &lib("libfoo_v3.so"),
        "--exe",
        "basic",
        "--parallel",
        "1",
        "--max-fail",
        "0",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let doc = json(&out);
    assert_eq!(row(&doc, order[0].pid())["outcome"], "switched", "{doc}");
    assert_eq!(row(&doc, order[1].pid())["outcome"], "failed", "{doc}");
    for t in &order[2..] {
        let r = row(&doc, t.pid());
        assert_eq!(r["outcome"], "not_attempted", "{doc}");
        assert_eq!(r["generation"], 0, "{doc}");
        assert_eq!(generation(t), 0);
    }
    assert_eq!(doc["stopped"], "more than 0 failed", "{doc}");
}

#[test]
fn all_or_nothing_rolls_every_switched_process_back() {
    let mut f = fleet(3);
    let order: Vec<u32> = by_pid(&f.basics).iter().map(|t| t.pid()).collect();
    // The last in line refuses, after the others switched.
    let last = f.basics.iter().position(|t| t.pid() == order[2]).unwrap();
    on_probation(&f.basics[last]);
    let out = f.ctl(&[
        "reload",
        &lib("libfoo_v3.so"),
        "--exe",
        "basic",
        "--parallel",
        "1",
        "--all-or-nothing",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    for (i, t) in f.basics.iter_mut().enumerate() {
        if i == last {
            assert_eq!(generation(t), 1, "the refusing one stays where it was");
            continue;
        }
        assert_eq!(generation(t), 0, "{out}");
        t.expect("version", 1);
        let line = format!("pid {:<7} rolled back  generation 0", t.pid());
        assert!(out.stdout.contains(&line), "{line:?}\n{out}");
    }
    assert!(
        out.stdout
            .ends_with("0 switched, 2 rolled back, 0 skipped, 1 failed\n"),
        "{out}"
    );
}

#[test]
fn canary_bakes_before_the_rest() {
    let mut f = fleet(3);
    let order: Vec<u32> = by_pid(&f.basics).iter().map(|t| t.pid()).collect();
    let start = Instant::now();
    let out = f.ctl(&[
        "reload",
        &lib("libfoo_v2.so"),
        "--exe",
        "basic",
        "--canary",
        "1",
        "--bake",
        "200ms",
        "--json",
    ]);
    assert!(out.success(), "{out}");
    assert!(start.elapsed() >= Duration::from_millis(200), "no bake");
    let doc = json(&out);
    let first = row(&doc, order[0]);
    assert_eq!(first["canary"], true, "{doc}");
    for pid in &order[1..] {
        assert_eq!(row(&doc, *pid)["canary"], false, "{doc}");
        assert_eq!(row(&doc, *pid)["outcome"], "switched", "{doc}");
    }
    for t in &mut f.basics {
        t.expect("version", 2);
    }

    // A canary that fails stops the rollout: nothing else is touched.
    let canary = f.basics.iter().position(|t| t.pid() == order[0]).unwrap();
    rollback(&f.basics[canary]);
    on_probation(&f.basics[canary]);
    let out = f.ctl(&[
        "reload",
        &lib("libfoo_v3.so"),
        "--exe",
        "basic",
        "--canary",
        "1",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let doc = json(&out);
    assert_eq!(doc["stopped"], "a canary failed", "{doc}");
    for pid in &order[1..] {
        assert_eq!(row(&doc, *pid)["outcome"], "not_attempted", "{doc}");
        assert_eq!(row(&doc, *pid)["generation"], 1, "{doc}");
    }
}

#[test]
fn the_bake_waits_out_the_canary_probation() {
    let f = fleet(2);
    let order = by_pid(&f.basics);
    let start = Instant::now();
    let out = f.ctl(&[
        "reload",
        &lib("libfoo_v2.so"),
        "--exe",
        "basic",
        "--canary",
        "1",
        "--probation",
        "300ms",
        "--json",
    ]);
    // Nothing crashes here: the bake waits for the probation to pass, then the rest go.
    assert!(out.success(), "{out}");
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "no wait for the probation"
    );
    let doc = json(&out);
    assert_eq!(row(&doc, order[0].pid())["canary"], true, "{doc}");
    let s = status(order[0]);
    assert!(
        s.generations.iter().all(|g| g.probation.is_none()),
        "the canary's probation had ended before the rest: {s:?}"
    );
}
