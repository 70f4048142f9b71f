//! Persistence (issue 11 part 3): `reload --persist` records a patch in the journal, a later
//! start of the same executable applies it before main; everything that makes a journal entry
//! untrustworthy or dangerous (changed patch, a journal others could write, a crash on
//! probation, an application that killed the process) makes the next start skip it with one
//! warning line. Every test has its own state folder, passed to the target and to hotctl.

use hotagent_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CFG: Config = Config::DEFAULT;

/// A state folder and a folder for this test's patch copies.
struct Setup {
    state: tempfile::TempDir,
    patches: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            state: scratch(),
            patches: scratch(),
        }
    }

    fn state(&self) -> &Path {
        self.state.path()
    }

    /// A copy of fixture `name` in this test's own folder: the test may change it.
    fn patch(&self, name: &str) -> PathBuf {
        let dst = self.patches.path().join(name);
        copy_atomic(&CFG.path(name), &dst);
        dst
    }

    fn start(&self, exe: &str) -> Target {
        Target::builder(CFG.path(exe))
            .env("HOTAGENT_STATE_DIR", self.state())
            .spawn()
    }

    /// `hotctl ARGS` with this state folder, with a deadline.
    fn hotctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = hotctl_state(self.state(), args);
        (out.success(), out.stdout, out.stderr)
    }

    fn persisted(&self) -> serde_json::Value {
        let (ok, out, err) = self.hotctl(&["persisted", "--json"]);
        assert!(ok, "hotctl persisted failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    fn entry_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.state().join("entries"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The `first N` line firstcall prints before anything else.
fn first(t: &mut Target) -> String {
    t.read_line("first call")
}

/// Waits until the target's stderr holds `needle`; then asserts it holds exactly one `hotagent:`
/// warning line.
#[track_caller]
fn one_warning(t: &Target, needle: &str) -> String {
    let until = Instant::now() + DEADLINE;
    loop {
        let text = t.stderr_text();
        if text.contains(needle) {
            let lines: Vec<&str> = text.lines().filter(|l| l.contains("hotagent:")).collect();
            assert_eq!(lines.len(), 1, "want one warning line: {text:?}");
            return lines[0].to_string();
        }
        assert!(
            Instant::now() < until,
            "no warning with {needle:?}: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A live `reload --persist` of a copy of libfoo_v2 into firstcall; the target is stopped after.
fn record_foo_v2(s: &Setup, name: &str) -> (PathBuf, PathBuf) {
    let patch = s.patch(name);
    let mut t = s.start("firstcall");
    assert_eq!(first(&mut t), "first 1");
    let r = reload(&t, &patch, &["--persist"]);
    assert_eq!(r.generation, 1);
    let entry = PathBuf::from(r.persisted.expect("the report names the journal entry"));
    assert!(entry.starts_with(s.state()), "{}", entry.display());
    t.expect("version", 2);
    t.kill();
    (patch, entry)
}

#[test]
fn a_persisted_patch_is_applied_before_main_and_status_says_so() {
    let s = Setup::new();
    let (patch, _) = record_foo_v2(&s, "libfoo_v2.so");
    let mut t = s.start("firstcall");
    // The very first call of the new process already reaches the new code.
    assert_eq!(first(&mut t), "first 2");
    let st = status(&t);
    assert_eq!(st.generation, 1);
    assert!(st.generations[0].applied_at_startup, "{st:?}");
    assert_eq!(st.generations[0].path, path_str(&patch));
    let text = hotctl(&t, &["status"]);
    assert!(text.stdout.contains("applied at start-up"), "{text}");
    assert!(
        !t.stderr_text().contains("hotagent:"),
        "{}",
        t.stderr_text()
    );
    // v2 adds 100: the new code, not only its version.
    t.expect("add 2 3", 105);
    t.assert_alive();
}

#[test]
fn a_changed_patch_file_is_skipped_with_one_warning() {
    let s = Setup::new();
    let (patch, _) = record_foo_v2(&s, "libfoo_v2.so");
    let mut bytes = std::fs::read(&patch).unwrap();
    bytes.extend_from_slice(b"changed");
    write_atomic(&patch, &bytes);
    let mut t = s.start("firstcall");
    assert_eq!(first(&mut t), "first 1");
    let w = one_warning(&t, "changed since it was recorded");
    assert!(w.contains(path_str(&patch)), "{w}");
    assert_eq!(status(&t).generation, 0);
}

#[test]
fn a_journal_others_can_write_is_ignored() {
    let s = Setup::new();
    record_foo_v2(&s, "libfoo_v2.so");
    let entries = s.state().join("entries");
    std::fs::set_permissions(&entries, std::fs::Permissions::from_mode(0o707)).unwrap();
    let mut t = s.start("firstcall");
    assert_eq!(first(&mut t), "first 1");
    one_warning(&t, "writable by others");
    assert_eq!(status(&t).generation, 0);
}

#[test]
fn a_journal_entry_owned_by_another_user_is_ignored() {
    let Some(user) = test_user() else {
        eprintln!("skipped: needs root to own a file as another user");
        return;
    };
    let s = Setup::new();
    let (_, entry) = record_foo_v2(&s, "libfoo_v2.so");
    std::os::unix::fs::chown(&entry, Some(user.uid), Some(user.gid)).unwrap();
    let mut t = s.start("firstcall");
    assert_eq!(first(&mut t), "first 1");
    one_warning(&t, &format!("owned by uid {}", user.uid));
    assert_eq!(status(&t).generation, 0);
}

#[test]
fn a_crash_marked_entry_is_never_applied() {
    let s = Setup::new();
    let (_, entry) = record_foo_v2(&s, "libfoo_v2.so");
    // What the probation handler does: one open(O_CREAT) of marks/<id>.crashed.
    let id = entry.file_stem().unwrap().to_str().unwrap();
    std::fs::File::create(s.state().join("marks").join(format!("{id}.crashed"))).unwrap();
    let mut t = s.start("firstcall");
    assert_eq!(first(&mut t), "first 1");
    one_warning(&t, "crashed on probation");
    assert_eq!(s.persisted()["entries"][0]["state"], "crashed");
}

#[test]
fn an_application_that_kills_the_start_is_marked_failed_and_not_retried() {
    let s = Setup::new();
    let (patch, _) = record_foo_v2(&s, "libcrash_when_ctor.so");
    // Its constructor crashes this start, before main.
    let mut dying = Target::builder(CFG.path("firstcall"))
        .env("HOTAGENT_STATE_DIR", s.state())
        .env("HOTAGENT_TEST_CRASH", "1")
        .agent_off()
        .spawn();
    let until = Instant::now() + DEADLINE;
    while dying.is_alive() {
        assert!(Instant::now() < until, "the crashing start did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The next start finds its attempt marker: the entry is failed, and never applied again.
    let mut t = s.start("firstcall");
    assert_eq!(first(&mut t), "first 1");
    let w = one_warning(&t, "killed process");
    assert!(w.contains(path_str(&patch)), "{w}");
    let doc = s.persisted();
    assert_eq!(doc["entries"][0]["state"], "failed", "{doc}");
    t.kill();
    let mut again = s.start("firstcall");
    assert_eq!(first(&mut again), "first 1");
    one_warning(&again, "failed earlier");
}

#[test]
fn on_next_start_defers_a_grown_variable_to_the_next_start() {
    let s = Setup::new();
    let patch = s.patch("libgrow_nohook.so");
    let mut t = s.start("grow");
    t.expect("bump", 1);
    let r = reload(&t, &patch, &["--persist", "--on-next-start"]);
    assert!(r.deferred, "{r:?}");
    assert_eq!(r.generation, 0);
    assert!(r.persisted.is_some());
    assert!(
        r.warnings.iter().any(|w| w.contains("changed size")),
        "{:?}",
        r.warnings
    );
    // Nothing switched.
    t.expect("version", 1);
    t.expect("bump", 2);
    assert_eq!(status(&t).generation, 0);
    // The history says it waits for the next start, not that it was refused.
    let h = hotctl_json(&t, &["history", "--json"]);
    let last = h["events"]
        .as_array()
        .and_then(|e| e.last())
        .cloned()
        .unwrap_or_else(|| panic!("no history event: {h}"));
    assert_eq!(last["outcome"], "deferred_to_next_start", "{h}");
    assert!(last.get("generation").is_none(), "{last}");
    t.kill();
    let mut next = s.start("grow");
    // The new build, on its own storage (20: no committed hook ran).
    next.expect("version", 20);
    next.expect("bump", 1);
    let st = status(&next);
    assert!(st.generations[0].applied_at_startup, "{st:?}");
    assert!(
        !next.stderr_text().contains("hotagent:"),
        "{}",
        next.stderr_text()
    );
}

#[test]
fn persist_with_a_refusal_a_fresh_start_does_not_lift_is_an_error_and_records_nothing() {
    let s = Setup::new();
    // A missing symbol: no start lifts it.
    let bad = s.patch("libbad_undef.so");
    let mut t = s.start("firstcall");
    assert_eq!(first(&mut t), "first 1");
    let out = hotctl(
        &t,
        &["reload", path_str(&bad), "--persist", "--on-next-start"],
    );
    assert!(!out.success(), "{out}");
    assert!(s.entry_files().is_empty(), "{:?}", s.entry_files());
    t.expect("version", 1);
    // A grown variable without --on-next-start: refused as before, nothing recorded.
    let grown = s.patch("libgrow_nohook.so");
    let mut g = s.start("grow");
    let out = hotctl(&g, &["reload", path_str(&grown), "--persist"]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("changed size"), "{out}");
    assert!(s.entry_files().is_empty(), "{:?}", s.entry_files());
    g.expect("version", 1);
}

#[test]
fn persisted_lists_and_forget_removes() {
    let s = Setup::new();
    let (ok, _, err) = s.hotctl(&["persisted"]);
    assert!(!ok && err.contains("no persisted patches in"), "{err}");
    let (patch, _) = record_foo_v2(&s, "libfoo_v2.so");
    let (ok, text, _) = s.hotctl(&["persisted"]);
    assert!(ok);
    assert!(
        text.contains(path_str(&patch)) && text.contains("active") && text.contains("firstcall"),
        "{text}"
    );
    let doc = s.persisted();
    assert_eq!(doc["entries"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["entries"][0]["module"], "libfoo.so");
    let (ok, out, _) = s.hotctl(&["forget", "libfoo_v2.so"]);
    assert!(ok && out.contains("forgot 1 persisted patch"), "{out}");
    assert!(s.persisted()["entries"].as_array().unwrap().is_empty());
    let (ok, _, err) = s.hotctl(&["forget", "libfoo_v2.so"]);
    assert!(!ok && err.contains("no persisted patch named"), "{err}");
    // And a start after forget runs the old code.
    let mut t = s.start("firstcall");
    assert_eq!(first(&mut t), "first 1");
    t.kill();
    record_foo_v2(&s, "libfoo_v2.so");
    let (ok, out, _) = s.hotctl(&["forget", "--all"]);
    assert!(ok && out.contains("forgot 1"), "{out}");
}
