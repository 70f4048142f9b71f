//! `make soak`: long runs that must stay correct. Threads hammer the replaced function (through
//! the GOT and through a pointer taken at start-up) while reloads and rollbacks go on, and the
//! demo server serves clients flat out through as many reloads; then the target's memory per
//! generation. Exit status 1 on any wrong answer, failed request or crash.
//!
//! `SOAK_CYCLES` (default 500) reload + rollback cycles each, `SOAK_THREADS` (default 8) hammering
//! threads.

use crate::load::{demo_server, load};
use hotagent_tests::*;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::flat::Flat;

pub fn run() -> i32 {
    let cycles: usize = env_parse("SOAK_CYCLES").unwrap_or(500);
    let threads: usize = env_parse("SOAK_THREADS").unwrap_or(8);
    let mut out = String::from("# hotagent soak\n\n");
    let mut ok = true;
    // `SOAK_ONLY=hammer` or `serve`: one of the two runs (a 10,000-cycle run of both is long).
    let only = std::env::var("SOAK_ONLY").unwrap_or_default();
    if only.is_empty() || only == "hammer" {
        ok &= hammer(cycles, threads, &mut out);
    }
    if only.is_empty() || only == "serve" {
        ok &= serve(cycles, &mut out);
    }
    let dir = target_dir().join("bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("soak.md"), &out);
    print!("{out}");
    eprintln!("soak: {}", if ok { "passed" } else { "FAILED" });
    i32::from(!ok)
}

/// A cycle's reload: no probe, and no `--settle` watch. The watch is hotctl waiting 100 ms for a
/// target that dies right after its switch; the soak checks for that itself (every answer, every
/// request, the target alive), so the wait only made a cycle 200 ms longer and a 10,000-cycle
/// serve run hours long.
const CYCLE: &[&str] = &["--no-probe", "--settle", "0"];
/// A cycle's rollback, without the settle watch either.
const BACK: &[&str] = &["--settle", "0"];

/// The process's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    crate::proc_sample(pid).2
}

/// `calls=N bad=M ... errors=E` → (N, M, E).
fn counters(line: &str) -> (u64, u64, u64) {
    let f = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX)
    };
    (f("calls="), f("bad="), f("errors="))
}

fn hammer(cycles: usize, threads: usize, out: &mut String) -> bool {
    let cfg = Config::DEFAULT;
    let mut t = Target::builder(cfg.path("threads"))
        .arg(threads.to_string())
        .arg("sleepers")
        .spawn();
    let v2 = cfg.path("libfoo_v2.so");
    let start = Instant::now();
    let _ = writeln!(
        out,
        "## {threads} threads calling libfoo flat out, {cycles} reload + rollback cycles\n\n\
         | cycles | calls | wrong answers | errors in sleeping threads | RSS | reload (agent, median of 10) |\n|---|---|---|---|---|---|"
    );
    let mut ok = true;
    let mut flat = Flat::default();
    for i in 1..=cycles {
        let r = reload(&t, &v2, CYCLE);
        rollback_with(&t, BACK);
        flat.cycle(i, r.elapsed_us, || rss_kib(t.pid()));
        if Flat::sample_at(i, cycles) {
            let (calls, bad, errors) = counters(&t.cmd("stats"));
            ok &= bad == 0 && errors == 0 && t.is_alive();
            let row = format!(
                "| {i} | {calls} | {bad} | {errors} | {} KiB | {} µs |",
                rss_kib(t.pid()),
                flat.median()
            );
            // Progress, for a run that takes long: the table itself is printed at the end.
            eprintln!("{row}");
            let _ = writeln!(out, "{row}");
        }
    }
    t.expect("version", 1);
    t.expect("ptr", 1);
    let (verdict, flat_ok) = flat.verdict(cycles, rss_kib(t.pid()));
    let _ = writeln!(out, "\n{verdict}\n\nTook {:?}.\n", start.elapsed());
    ok && flat_ok
}

fn serve(cycles: usize, out: &mut String) -> bool {
    let demo = target_dir().join("demo");
    let dir = tempfile::tempdir().expect("socket folder");
    let (mut server, port) = demo_server(0, true, dir.path());
    wait_for_agent(dir.path(), server.id(), || Ok(())).expect("the demo server's agent");
    let agent = AgentRef {
        dir: dir.path().to_path_buf(),
        pid: server.id(),
    };
    let _ = writeln!(
        out,
        "## The demo server under 4 clients, {cycles} reload + rollback cycles\n\n\
         | cycles | RSS | reload (agent, median of 10) |\n|---|---|---|"
    );
    let mut flat = Flat::default();
    let stop = AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        let gen = s.spawn(|| load(port, 4, &stop));
        for i in 1..=cycles {
            let r = reload(&agent, &demo.join("v2/libgreet.so"), CYCLE);
            rollback_with(&agent, BACK);
            flat.cycle(i, r.elapsed_us, || rss_kib(server.id()));
            if Flat::sample_at(i, cycles) {
                let row = format!(
                    "| {i} | {} KiB | {} µs |",
                    rss_kib(server.id()),
                    flat.median()
                );
                // Progress, as for the hammer: the table itself is printed at the end.
                eprintln!("serve {row}");
                let _ = writeln!(out, "{row}");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        gen.join().expect("load")
    });
    let (verdict, flat_ok) = flat.verdict(cycles, rss_kib(server.id()));
    let alive = server.try_wait().ok().flatten().is_none();
    let _ = server.kill();
    let _ = server.wait();
    let _ = writeln!(
        out,
        "\n{} requests served, {} failed, {} wrong; request counter {} → {}; server alive: {alive}.\n\n\
         {verdict} A reload of bytes a loaded generation holds reuses that copy, so cycles \
         between two builds load nothing new.\n",
        seen.ok, seen.failed, seen.wrong, seen.first_req, seen.last_req
    );
    alive && seen.failed == 0 && seen.wrong == 0 && flat_ok
}
