//! The longest time any thread is held by a switch: the per-thread switch (int3 first, each
//! thread looked at once) beside the full stop it replaced (`HOTAGENT_FULL_STOP=1`, every thread
//! parked until the last has been scheduled), the floor row, in the same run.

use super::{us, Counts};
use hotagent_tests::*;
use std::fmt::Write as _;

/// Per reload and rollback: (held, wall, trap) from the report, each sorted.
struct Holds {
    held: Vec<u64>,
    wall: Vec<u64>,
    trap: Vec<u64>,
}

fn holds(n: &Counts, t: &Target, v2: &std::path::Path) -> Holds {
    let mut h = Holds {
        held: Vec::new(),
        wall: Vec::new(),
        trap: Vec::new(),
    };
    for _ in 0..n.pause_cycles {
        for p in [reload(t, v2, &["--no-probe"]).pause, rollback(t).pause] {
            h.held.push(p.held_us);
            h.wall.push(p.longest_us);
            h.trap.push(p.trap_us);
        }
    }
    for v in [&mut h.held, &mut h.wall, &mut h.trap] {
        v.sort_unstable();
    }
    h
}

fn at(v: &[u64], p: f64) -> u64 {
    v[((v.len() - 1) as f64 * p).round() as usize]
}

pub fn per_thread_against_full_stop(n: &Counts) -> String {
    let cfg = Config::DEFAULT;
    let v2 = cfg.path("libfoo_v2.so");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = format!(
        "Longest time any thread was held per reload and rollback ({cores} cores). Per thread, \
         held is the CPU time (`CLOCK_THREAD_CPUTIME_ID`, read in the handler) the thread spent \
         in our look or `int3` handler: the time it could not run its own code because of us \
         (the kernel's signal delivery and return, a few µs, not counted). Beside it the wall \
         time it spent inside the look handler, which also counts being descheduled while the \
         other threads ran on {cores} cores, and the CPU time of the `int3` handler (0: no thread \
         reached an entry while its first byte was `int3`). With the full stop, every thread was \
         parked for the whole time shown.\n\n\
         | threads | switch | held median | held p95 | held max | wall in handler p95 | wall max \
         | int3 handler max |\n|---|---|---|---|---|---|---|---|\n"
    );
    for (busy, idle) in [("2", "0"), ("16", "0"), ("64", "0"), ("2", "62")] {
        for (how, full) in [("per thread", false), ("full stop (floor)", true)] {
            let mut b = Target::builder(cfg.path("threads"))
                .arg(busy)
                .arg(format!("idle={idle}"));
            if full {
                b = b.env("HOTAGENT_FULL_STOP", "1");
            }
            let t = b.spawn();
            let h = holds(n, &t, &v2);
            let (wall_p95, wall_max, trap_max) = if full {
                ("–".to_string(), "–".to_string(), "–".to_string())
            } else {
                (
                    us(at(&h.wall, 0.95)),
                    us(at(&h.wall, 1.0)),
                    us(at(&h.trap, 1.0)),
                )
            };
            let _ = writeln!(
                out,
                "| {busy} busy + {idle} idle | {how} | {} | {} | {} | {wall_p95} | {wall_max} | \
                 {trap_max} |",
                us(at(&h.held, 0.5)),
                us(at(&h.held, 0.95)),
                us(at(&h.held, 1.0)),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nThreads that block every signal still get the full stop (they cannot be looked at, \
         and a blocked SIGTRAP would kill them): see the row with 4 of them above."
    );
    out
}
