//! `hotctl history` (issue 12, "Knowing what changed"): every reload, refusal and rollback the
//! agent saw, in order, with the staged file's size and SHA-256, the asking client's uid and
//! the outcome; and `list`'s columns (user, what is replaced by what, since when).

use crate::common::basic;
use hotagent_tests::protocol::journal::file_sha256;
use hotagent_tests::*;
use serde_json::Value;
use std::path::Path;

const CFG: Config = Config::DEFAULT;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn euid() -> u64 {
    // SAFETY: geteuid has no preconditions.
    u64::from(unsafe { libc::geteuid() })
}

/// The event's file is `path`: its name, size and hash as `sha256sum` would print it.
#[track_caller]
fn same_file(e: &Value, path: &Path) {
    assert_eq!(e["path"], path_str(path), "{e}");
    assert_eq!(e["size"], std::fs::metadata(path).unwrap().len(), "{e}");
    assert_eq!(e["sha256"], file_sha256(path).unwrap().as_str(), "{e}");
}

/// Two reloads, a refused one between them and a rollback: all four in order, the rolled-back
/// generation still there, each with its file's hash and the client's uid; status and the text
/// output agree.
#[test]
fn history_keeps_every_reload_refusal_and_rollback_in_order() {
    let start = now_ms();
    let mut t = basic(CFG);
    let (v2, v3) = (CFG.path("libfoo_v2.so"), CFG.path("libfoo_v3.so"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("libfoo.so");
    std::fs::write(&bad, b"not a shared library at all").unwrap();

    reload(&t, &v2, &[]);
    let refusal = expect_fail(&t, &["reload", path_str(&bad)]);
    reload(&t, &v3, &[]);
    assert_eq!(rollback(&t).generation, 1);
    t.expect("version", 2);

    let h = hotctl_json(&t, &["history", "--json"]);
    let events = h["events"].as_array().unwrap();
    assert_eq!(h["pid"], t.pid());
    assert_eq!(h["capacity"], 1000);
    let outcomes: Vec<&str> = events
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["switched", "refused", "switched", "rolled_back"],
        "{h}"
    );
    let end = now_ms();
    let mut last = start;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1, "{e}");
        assert_eq!(e["uid"], euid(), "{e}");
        let at = e["unix_ms"].as_u64().unwrap();
        assert!(last <= at && at <= end, "times out of order: {h}");
        last = at;
    }
    let (g1, refused, g2, back) = (&events[0], &events[1], &events[2], &events[3]);
    same_file(g1, &v2);
    assert_eq!((&g1["generation"], &g1["current"]), (&1.into(), &1.into()));
    assert!(g1["module"].as_str().unwrap().contains("libfoo.so"), "{g1}");
    assert!(
        g1["build_id"].as_str().is_some_and(|b| b.len() >= 16),
        "{g1}"
    );
    // Refused after staging: the bytes that were refused are on record, and why.
    same_file(refused, &bad);
    assert_eq!(refused["current"], 1);
    assert_eq!(refused["code"], "bad_elf");
    assert!(
        refusal.contains(refused["reason"].as_str().unwrap()),
        "{refused}"
    );
    same_file(g2, &v3);
    assert_eq!((&g2["generation"], &g2["current"]), (&2.into(), &2.into()));
    // The rolled-back generation stays in the history, with its file.
    same_file(back, &v3);
    assert_eq!(
        (&back["generation"], &back["current"]),
        (&2.into(), &1.into())
    );

    // Status dates the current generation from the same record.
    let s = status(&t);
    assert_eq!(s.generations[0].since_unix_ms, g1["unix_ms"].as_u64());

    let out = hotctl(&t, &["history"]);
    assert!(out.success(), "{out}");
    let text = &out.stdout;
    for part in [
        "4 events (the agent keeps the last 1000)",
        "switched generation 1, now at 1, by uid",
        "refused, now at 1",
        "rolled back generation 2, now at 1",
        g2["sha256"].as_str().unwrap(),
        &format!("{} -> ", path_str(&v3)),
    ] {
        assert!(text.contains(part), "{part:?} missing:\n{text}");
    }
    t.assert_alive();
}

/// A fresh target has an empty history, and a dry run leaves none.
#[test]
fn history_leaves_out_dry_runs() {
    let t = basic(CFG);
    reload(&t, &CFG.path("libfoo_v2.so"), &["--dry-run"]);
    let h = hotctl_json(&t, &["history", "--json"]);
    assert_eq!(h["events"], Value::Array(Vec::new()), "{h}");
    assert_eq!(status(&t).generation, 0);
}

/// `list` names the user, what replaces which module, and since when (the switch's time).
#[test]
fn list_shows_user_replacement_and_since() {
    let t = basic(CFG);
    let v2 = CFG.path("libfoo_v2.so");
    let before = now_ms();
    reload(&t, &v2, &[]);
    let out = hotctl_in(t.socket_dir(), None, &["list", "--json"]);
    assert!(out.success(), "{out}");
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    let me = &list[0];
    assert_eq!(me["pid"], t.pid());
    assert_eq!(me["uid"], euid());
    assert_eq!(
        me["user"],
        if euid() == 0 {
            "root".into()
        } else {
            me["user"].clone()
        }
    );
    assert_eq!(me["generation"], 1);
    assert_eq!(me["replaced"][0]["path"], path_str(&v2), "{me}");
    assert!(me["replaced"][0]["module"]
        .as_str()
        .unwrap()
        .contains("libfoo.so"));
    let since = me["since_unix_ms"].as_u64().unwrap();
    assert!(before <= since && since <= now_ms(), "{me}");

    let out = hotctl_in(t.socket_dir(), None, &["list"]);
    assert!(out.success(), "{out}");
    let header = out.stdout.lines().next().unwrap();
    let cols: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(cols, ["PID", "USER", "GEN", "EXE", "REPLACED", "SINCE"]);
    let row = out.stdout.lines().nth(1).unwrap();
    assert!(row.contains(&format!(" -> {}", path_str(&v2))), "{row}");
    assert!(row.ends_with(" UTC"), "{row}");
}

/// A crash on probation is in the history as the agent's own revert, with the file it undid
/// and the signal and function; the client's uid is on the switch only.
#[test]
fn history_records_a_revert_by_probation() {
    let mut t = Target::builder(CFG.path("prob_server")).arg("0").spawn();
    let v2 = CFG.path("libprob_v2.so");
    reload(&t, &v2, &["--probation", "30s"]);
    // x = 3 faults in v2: the call runs again on v1 and the process goes back to generation 0.
    t.expect("compute 3", "v1 149");
    let events = events_at_least(&t, 2, "no revert recorded");
    assert_eq!(events.len(), 2, "{events:?}");
    let (switched, reverted) = (&events[0], &events[1]);
    assert_eq!(switched["outcome"], "switched");
    assert_eq!(switched["uid"], euid());
    assert_eq!(reverted["outcome"], "reverted");
    assert_eq!(
        (&reverted["generation"], &reverted["current"]),
        (&1.into(), &0.into())
    );
    assert!(
        reverted.get("uid").is_none(),
        "the agent's own act: {reverted}"
    );
    same_file(reverted, &v2);
    let why = reverted["reason"].as_str().unwrap();
    assert!(why.contains("SIGSEGV in prob_compute"), "{why}");
    t.expect("version", 1);
}

/// The history's events once it holds `n` of them (polled for 5 s at most).
#[track_caller]
fn events_at_least(t: &Target, n: usize, missing: &str) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let h = hotctl_json(t, &["history", "--json"]);
        let events = h["events"].as_array().unwrap().clone();
        if events.len() >= n {
            return events;
        }
        assert!(std::time::Instant::now() < deadline, "{missing}: {h}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A probation that ends without a crash is an event of its own, with the file it was about.
#[test]
fn history_records_a_probation_that_passed() {
    let mut t = Target::builder(CFG.path("prob_server")).arg("0").spawn();
    let v2 = CFG.path("libprob_v2.so");
    reload(&t, &v2, &["--probation", "200ms"]);
    let events = events_at_least(&t, 2, "no passed probation recorded");
    assert_eq!(events.len(), 2, "{events:?}");
    let passed = &events[1];
    assert_eq!(passed["outcome"], "passed_probation", "{passed}");
    assert_eq!(
        (&passed["generation"], &passed["current"]),
        (&1.into(), &1.into())
    );
    assert!(passed.get("uid").is_none(), "the agent's own act: {passed}");
    same_file(passed, &v2);
    t.expect("compute 1", "v2 1000000079");
}

/// A persisted patch applied before main is in the next process's history as the agent's own
/// act, with the recorded file's hash.
#[test]
fn history_records_a_patch_applied_at_start_up() {
    let (state, patches) = (scratch(), scratch());
    let patch = patches.path().join("libfoo_v2.so");
    copy_atomic(&CFG.path("libfoo_v2.so"), &patch);
    let start = || {
        Target::builder(CFG.path("firstcall"))
            .env("HOTAGENT_STATE_DIR", state.path())
            .spawn()
    };
    let mut t = start();
    t.read_line("first call");
    reload(&t, &patch, &["--persist"]);
    t.kill();

    let mut t = start();
    t.read_line("first call");
    let h = hotctl_json(&t, &["history", "--json"]);
    let events = h["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{h}");
    let e = &events[0];
    assert_eq!(e["outcome"], "applied_at_startup", "{e}");
    assert_eq!((&e["generation"], &e["current"]), (&1.into(), &1.into()));
    assert!(e.get("uid").is_none(), "{e}");
    same_file(e, &patch);
    t.expect("version", 2);
}

/// The history is bounded: past its capacity the oldest events go, are counted as dropped, and
/// the sequence numbers show the gap. Filled with refused rollbacks (a process at generation 0
/// has nothing to roll back), each one event, sent on the socket to keep the test short.
#[test]
fn history_keeps_the_newest_events_and_counts_the_dropped_ones() {
    let mut t = basic(CFG);
    let first = hotctl_json(&t, &["history", "--json"]);
    let capacity = first["capacity"].as_u64().expect("a capacity") as usize;
    let extra = 5;
    for _ in 0..capacity + extra {
        let resp = raw_request(
            &t,
            &hotagent_tests::protocol::Request::Rollback(Default::default()),
        );
        expect_error(
            &resp,
            &[hotagent_tests::protocol::ErrorCode::NothingToRollBack],
        );
    }
    let h = hotctl_json(&t, &["history", "--json"]);
    let events = h["events"].as_array().expect("events");
    assert_eq!(events.len(), capacity, "{}", h["dropped"]);
    assert_eq!(h["dropped"], extra as u64, "{}", h["dropped"]);
    // The newest are kept, in order and without gaps among them.
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs[0], extra as u64 + 1);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(events.iter().all(|e| e["outcome"] == "refused"));
    // The text output says some were dropped.
    let out = hotctl(&t, &["history"]);
    assert!(
        out.stdout.contains(&format!("{extra} older dropped")),
        "{}",
        out.stdout
    );
    t.expect("version", 1);
}
