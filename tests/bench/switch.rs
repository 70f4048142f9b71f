//! The longest time any thread is held by a switch: the per-thread switch (int3 first, each
//! thread looked at once) beside the full stop it replaced (`HOTAGENT_FULL_STOP=1`, every thread
//! parked until the last has been scheduled), the floor row, in the same run.

use super::{pause_row, pauses, Counts};
use hotagent_tests::*;
use std::fmt::Write as _;

pub fn per_thread_against_full_stop(n: &Counts) -> String {
    let cfg = Config::DEFAULT;
    let v2 = cfg.path("libfoo_v2.so");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = format!(
        "Longest time any thread was held per reload and rollback ({cores} cores): per thread, \
         the longest a thread spent answering a look (the signal's delivery not counted); with \
         the full stop, how long every thread was parked.\n\n\
         | threads | switch | median | p95 | max |\n|---|---|---|---|---|\n"
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
            let (v, _) = pauses(n, &t, &v2);
            pause_row(&mut out, &format!("{busy} busy + {idle} idle | {how}"), &v);
        }
    }
    let _ = writeln!(
        out,
        "\nThreads that block every signal still get the full stop (they cannot be looked at, \
         and a blocked SIGTRAP would kill them): see the row with 4 of them above."
    );
    out
}
