//! Measurements, not tests: ignored by default, run with
//! `cargo test --release -p hotagent-tests -- --ignored measure::` (numbers on stderr).
//! Nothing here asserts a timing.

use hotagent_tests::*;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// How long other threads are held while entries are written: with 2, 16 and 64 threads calling
/// the replaced function flat out (on a 2-core machine the stop then waits for the scheduler to
/// run each of them), and with 2 such threads beside 14 and 62 idle ones (a server's pool).
#[test]
#[ignore]
fn entry_pause() {
    let cfg = Config::DEFAULT;
    let v2 = cfg.path("libfoo_v2.so");
    for (busy, idle) in [
        ("2", "0"),
        ("16", "0"),
        ("64", "0"),
        ("2", "14"),
        ("2", "62"),
    ] {
        let threads = format!("{busy} busy + {idle} idle");
        let mut t = Target::builder(cfg.path("threads"))
            .arg(busy)
            .arg(format!("idle={idle}"))
            .spawn();
        let mut pauses = Vec::new();
        let mut rounds = Vec::new();
        for _ in 0..40 {
            let r = reload(&t, &v2, &["--no-probe"]);
            pauses.push(r.pause.longest_us);
            rounds.push(u64::from(r.pause.rounds));
            let rb = rollback(&t);
            pauses.push(rb.pause.longest_us);
            rounds.push(u64::from(rb.pause.rounds));
        }
        pauses.sort_unstable();
        rounds.sort_unstable();
        eprintln!(
            "entry pause, {threads:>18} threads: median {} µs, p95 {} µs, max {} µs; stops per switch: median {}, max {}",
            percentile(&pauses, 0.5),
            percentile(&pauses, 0.95),
            pauses[pauses.len() - 1],
            percentile(&rounds, 0.5),
            rounds[rounds.len() - 1],
        );
        t.assert_alive();
    }
}

/// A call through a pointer to the old entry (which jumps) against a call through the GOT
/// (switched to the new code directly).
#[test]
#[ignore]
fn entry_jump_call_cost() {
    let cfg = Config::DEFAULT;
    let mut t = Target::builder(cfg.path("threads")).arg("0").spawn();
    let n = 50_000_000;
    let before = t.cmd(&format!("bench {n}"));
    reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    let after = t.cmd(&format!("bench {n}"));
    eprintln!("call cost before reload (both direct): {before}");
    eprintln!("call cost after reload (got: GOT to v2; ptr: old entry, jump to v2): {after}");
}
