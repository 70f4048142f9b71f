//! Shadow variables (issue 10): a patch adds a per-object field without changing the objects'
//! layout, through `hotagent_shadow_*` of the real agent, from many threads at once.
//!
//! The fixture (tests/fixtures/shadowy.c) keeps a table of `struct conn` objects; v1 of its
//! library keeps no statistics, v2 counts each object's requests in a shadow block (id COUNT)
//! and marks it seen in another (id SEEN), and frees the count when the object is closed.

use hotagent_tests::*;

const CFG: Config = Config::DEFAULT;
const CONNS: usize = 256;
const THREADS: usize = 8;
const ROUNDS: usize = 200;

fn start_on_v2() -> Target {
    let mut t = Target::spawn(CFG.path("shadowy"));
    t.expect(&format!("open {CONNS}"), "ok");
    t.expect("version", 1);
    t.expect("count 0", -2);
    reload(&t, &CFG.path("libshadowy_v2.so"), &[]);
    t.expect("version", 2);
    t
}

/// 8 threads request on all 256 objects at once: each object's count is exact (no lost update,
/// no block handed out twice for one key), and no two objects share a block.
#[test]
fn counts_are_exact_per_object_from_eight_threads() {
    let mut t = start_on_v2();
    t.expect("count 7", -1); // no block before the first request
    t.expect(&format!("hammer {THREADS} {ROUNDS}"), "ok");
    let n = THREADS * ROUNDS;
    t.expect("counts", format!("{n} {n}"));
    t.expect("blocks", CONNS);
    t.expect("seen 200", 1);
    // A second wave finds the same blocks (never moved, never re-made zeroed).
    t.expect(&format!("hammer {THREADS} {ROUNDS}"), "ok");
    t.expect("counts", format!("{} {}", 2 * n, 2 * n));
    t.expect("blocks", CONNS);
    t.assert_alive();
}

/// A freed object's block is gone: the next get is NULL even when malloc hands the new object
/// the same address, and its next request starts from a fresh zeroed block. Other objects keep
/// theirs.
#[test]
fn a_freed_block_is_gone_and_comes_back_zeroed() {
    let mut t = start_on_v2();
    for _ in 0..3 {
        t.expect("request 5", "ok");
    }
    t.expect("request 6", "ok");
    t.expect("count 5", 3);
    t.expect("close 5", "ok");
    t.expect("count 5", -1);
    t.expect("request 5", "ok");
    t.expect("count 5", 1);
    t.expect("count 6", 1);
}

/// `hotagent_shadow_free_all(COUNT)` frees the count of every object, and only that id.
#[test]
fn free_all_frees_one_id_for_every_object() {
    let mut t = start_on_v2();
    t.expect("hammer 4 3", "ok");
    t.expect("counts", "12 12");
    t.expect("forget", "ok");
    t.expect("counts", "-1 -1");
    t.expect("seen 0", 1);
    t.expect(&format!("seen {}", CONNS - 1), 1);
    t.expect("hammer 4 1", "ok");
    t.expect("counts", "4 4");
}

/// A fork while other threads hold a shard's lock must not leave that lock held in the child (no
/// thread there would ever release it): the agent takes every shard's lock before a fork and
/// releases it in both processes. Each child frees a count in every shard and makes a new one.
#[test]
fn a_child_forked_while_threads_use_shadows_can_use_them() {
    let mut t = start_on_v2();
    t.expect("forks 2 100", "100 0");
    t.expect("hammer 2 3", "ok");
    t.expect("counts", "6 6");
}

/// The same statistics from a patch written in Rust on `hotagent_api::shadow`'s typed wrappers
/// (tests/fixtures/rust_shadow, built by `cargo build --release`): exact counts from 8 threads,
/// distinct blocks, free, free_all, and a rollback to the C v1.
#[test]
fn a_rust_patch_uses_the_crates_shadow_wrappers() {
    let patch = release_cdylib("libshadowy_rs.so", "tests/fixtures/rust_shadow");
    let mut t = Target::spawn(CFG.path("shadowy"));
    t.expect(&format!("open {CONNS}"), "ok");
    t.expect("count 0", -2);
    // Rust's std brings thread-local storage C v1 has not; v1 keeps no state worth keeping.
    reload(&t, &patch, &["--fresh-state"]);
    t.expect("version", 3);
    t.expect("count 0", -1);
    t.expect(&format!("hammer {THREADS} {ROUNDS}"), "ok");
    let n = THREADS * ROUNDS;
    t.expect("counts", format!("{n} {n}"));
    t.expect("blocks", CONNS);
    t.expect("close 9", "ok");
    t.expect("count 9", -1);
    t.expect("request 9", "ok");
    t.expect("count 9", 1);
    t.expect("forget", "ok");
    t.expect("counts", "-1 -1");
    t.expect("seen 9", 1);
    rollback(&t);
    t.expect("version", 1);
    t.finish().assert_clean();
}

/// The blocks live in the agent, not in the patch: a rollback leaves them, and the next reload
/// of the patch finds the counts where they were.
#[test]
fn blocks_outlive_a_rollback_and_a_new_reload() {
    let mut t = start_on_v2();
    t.expect("hammer 2 5", "ok");
    t.expect("counts", "10 10");
    rollback(&t);
    t.expect("version", 1);
    t.expect("count 3", -2);
    reload(&t, &CFG.path("libshadowy_v2.so"), &[]);
    t.expect("counts", "10 10");
    t.expect("blocks", CONNS);
    t.finish().assert_clean();
}

/// `make example-shadow` (examples/shadow/run.sh): the example builds, reloads, counts, frees and
/// rolls back, and says so. `-o build` keeps make from running cargo inside this cargo run (the
/// harness has checked that the release artifacts are current).
#[test]
fn make_example_shadow_passes() {
    let stdout = run_example("shadow");
    for want in [
        "[alice] hello (v1)",
        "[alice] hello (v2: request 1 on this connection)",
        "[alice] again (v2: request 2 on this connection)",
        "[bob] hi (v2: request 1 on this connection)",
        "closed alice (v2: 2 requests, shadow freed)",
        "[alice] back (v2: request 1 on this connection)",
        "[bob] bye (v1)",
        "EXAMPLE PASSED",
    ] {
        assert!(stdout.contains(want), "{want:?} missing from:\n{stdout}");
    }
}
