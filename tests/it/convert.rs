//! Per-object conversion of C++ objects (issue 10, `hotagent_convert_class`): after the switch,
//! each object still on the old vtable is converted by the patch's upgrade exactly once, on its
//! first call — through its vtable or through an old method's entry — then runs the new code;
//! a rollback converts them back on their first call. Objects made after the reload are new.

use hotagent_tests::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const CFG: Config = Config::DEFAULT;

fn lib(name: &str) -> PathBuf {
    CFG.path(name)
}

/// `check`'s answer, as numbers by name.
struct Check {
    line: String,
}

impl Check {
    fn of(t: &mut Target) -> Check {
        Check {
            line: t.cmd("check"),
        }
    }
    fn get(&self, key: &str) -> i64 {
        let mut words = self.line.split_whitespace();
        while let Some(w) = words.next() {
            if w == key {
                if let Some(v) = words.next().and_then(|v| v.parse().ok()) {
                    return v;
                }
            }
        }
        panic!("no {key} in {:?}", self.line)
    }
}

/// The calls the driver threads have made so far (`check`'s `calls`).
fn wait_calls(t: &mut Target, more_than: i64) -> i64 {
    let start = Instant::now();
    loop {
        let c = Check::of(t).get("calls");
        if c > more_than || start.elapsed() > Duration::from_secs(20) {
            return c;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The seed's own example (shared/seeds/003), output for output: `make example-vtable` runs
/// it and compares every line with examples/vtable/expected.txt (addresses aside).
#[test]
fn the_seeds_example_runs_output_for_output() {
    let text = run_example("vtable");
    for line in [
        "convert object(",
        ") from version 1 to 2",
        "m_data->b:77",
        ") from version 2 to 1",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
}

/// Eight threads call 1000 objects flat out (through the vtable, and directly: the program's
/// PLT, the library's own calls) through a reload and a rollback: each object is converted
/// exactly once each way, no call ever finds a layout it did not expect, no bump is lost, and
/// objects made after the reload are never upgraded (but are converted back).
#[test]
fn eight_threads_over_1000_objects_convert_each_once_each_way() {
    let mut t = Target::spawn(lib("counter"));
    t.expect("make 1000", 1000);
    t.expect("run 8", "running 8");
    let before = wait_calls(&mut t, 10_000);

    let r = reload(&t, &lib("libcounter_v2.so"), &[]);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("objects of _ZTV7Counter become _ZTV7Counter")),
        "{:?}",
        r.warnings
    );
    assert!(r.phases.prepare_us > 0, "{:?}", r.phases);
    wait_calls(&mut t, before + 10_000);
    let up = Check::of(&mut t);
    assert_eq!(up.get("ups"), 1000, "{}", up.line);
    assert_eq!(up.get("v2"), 1000, "{}", up.line);
    assert_eq!(up.get("wrong"), 0, "{}", up.line);
    // Made by the new code: new objects, never converted.
    t.expect("make 10", 1010);
    assert_eq!(Check::of(&mut t).get("ups"), 1000);

    let mid = Check::of(&mut t).get("calls");
    rollback(&t);
    wait_calls(&mut t, mid + 10_000);
    let stopped = t.cmd("stop");
    let down = Check::of(&mut t);
    assert_eq!(down.get("v1"), 1010, "{}", down.line);
    assert_eq!(down.get("downs"), 1010, "{}", down.line);
    assert_eq!(down.get("ups"), 1000, "{}", down.line);
    assert_eq!(down.get("wrong"), 0, "{}", down.line);
    assert_eq!(
        down.get("total"),
        down.get("calls"),
        "a bump was lost: {} ({stopped})",
        down.line
    );
    t.expect("delete 3", "deleted 3");
    t.assert_alive();
}

/// A `-Bsymbolic-functions` library's own direct calls of a method (and a thread that never
/// leaves the old library's loop) reach only the old entry: it converts the object first.
#[test]
fn direct_calls_into_an_old_method_convert_first() {
    let mut t = Target::spawn(lib("counter_symbolic"));
    t.expect("make 100", 100);
    t.expect("run 4", "running 4");
    let before = wait_calls(&mut t, 10_000);
    reload(&t, &lib("libcountersym_v2.so"), &[]);
    wait_calls(&mut t, before + 20_000);
    t.cmd("stop");
    let up = Check::of(&mut t);
    assert_eq!(up.get("ups"), 100, "{}", up.line);
    assert_eq!(up.get("wrong"), 0, "{}", up.line);
    assert_eq!(up.get("total"), up.get("calls"), "{}", up.line);
    rollback(&t);
    let down = Check::of(&mut t);
    assert_eq!(down.get("v1"), 100, "{}", down.line);
    assert_eq!(down.get("downs"), 100, "{}", down.line);
    assert_eq!(down.get("wrong"), 0, "{}", down.line);
}

/// A refused converter: exit status 1, the reason in the one error line, nothing switched.
#[track_caller]
fn refused(t: &impl HasAgent, patch: &str, why: &[&str]) {
    let path = lib(patch);
    let out = hotctl(t, &["reload", path_str(&path)]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let line = check_failure(&out);
    for part in why {
        assert!(line.contains(part), "{part:?} missing: {out}");
    }
    assert_eq!(status(t).generation, 0);
}

#[test]
fn converters_for_a_missing_vtable_another_shape_or_multiple_inheritance_are_refused() {
    let mut t = Target::spawn(lib("counter"));
    t.expect("make 3", 3);
    refused(
        &t,
        "libcounter_missing.so",
        &["no vtable _ZTV7Missing", "libcounter.so"],
    );
    let c = Check::of(&mut t);
    assert_eq!(
        (c.get("v1"), c.get("ups"), c.get("wrong")),
        (3, 0, 0),
        "{}",
        c.line
    );

    let mut m = Target::spawn(lib("multi"));
    m.expect("make", 0);
    let (left, right) = (m.cmd("left 0"), m.cmd("right 0"));
    refused(
        &m,
        "libmulti_v2.so",
        &[
            "_ZTV4Both",
            "multiple or virtual inheritance",
            "not supported",
        ],
    );
    m.expect("left 0", left);
    m.expect("right 0", right);
}

/// Without a downgrade, objects on the new layout can never go back: the rollback is refused,
/// and generation 1 keeps running.
#[test]
fn a_rollback_without_a_downgrade_is_refused() {
    let mut t = Target::spawn(lib("counter"));
    t.expect("make 5", 5);
    reload(&t, &lib("libcounter_oneway.so"), &[]);
    assert_eq!(Check::of(&mut t).get("ups"), 5);
    let out = hotctl(&t, &["rollback"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    for part in ["no downgrade converter", "generation 1 still runs"] {
        assert!(out.stderr.contains(part), "{part:?} missing: {out}");
    }
    assert_eq!(status(&t).generation, 1);
    let c = Check::of(&mut t);
    assert_eq!((c.get("v2"), c.get("wrong")), (5, 0), "{}", c.line);
}
