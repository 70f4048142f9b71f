//! Whole real libraries reloaded with their private state shared: Debian's own libcrypto.so.3
//! and libsqlite3.so.0 (byte-identical copies) inside Debian's python3. The private-state
//! analysis (decoding the new build, proving the layouts) is part of the check phase, the
//! redirect part of the load phase; the floor is a bare `dlopen` of the same file in the same
//! kind of process.

use super::{stats, us, Counts};
use hotagent_tests::*;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

const PYTHON: &str = "/usr/bin/python3";

struct Case {
    lib: &'static str,
    system: &'static str,
    driver: &'static str,
    /// What the driver is told first, so the library is in use.
    warm: &'static str,
    /// Python that loads the library the same way, for the floor.
    import: &'static str,
}

const CASES: [Case; 2] = [
    Case {
        lib: "libcrypto.so.3",
        system: "/lib/x86_64-linux-gnu/libcrypto.so.3",
        driver: "openssl_driver.py",
        warm: "begin",
        import: "import hashlib",
    },
    Case {
        lib: "libsqlite3.so.0",
        system: "/lib/x86_64-linux-gnu/libsqlite3.so.0",
        driver: "sqlite_driver.py",
        warm: "count",
        import: "import sqlite3",
    },
];

fn driver(name: &str) -> std::path::PathBuf {
    repo_root().join("tests/realworld/drivers").join(name)
}

/// Median µs of a bare `dlopen` of `copy` in a fresh python3 that already uses the library.
fn bare_dlopen_us(case: &Case, copy: &Path, runs: usize) -> u64 {
    let script = format!(
        "{}; import ctypes, sys, time\nt = time.perf_counter_ns()\nctypes.CDLL(sys.argv[1])\nprint((time.perf_counter_ns() - t) // 1000)",
        case.import
    );
    let mut v: Vec<u64> = (0..runs)
        .filter_map(|_| {
            let out = Command::new(PYTHON)
                .args(["-I", "-c", &script])
                .arg(copy)
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        })
        .collect();
    stats(&mut v).0
}

pub fn whole_libraries(n: &Counts) -> String {
    let mut out = String::from(
        "A byte-identical copy of Debian's own library reloaded whole inside Debian's python3 \
         while the library is in use (`--settle 0`, probe on), then rolled back; medians of \
         the cycles. *check* includes the private-state analysis (decoding the new build, \
         proving the layouts by sections: these files are stripped), *load* the `dlopen` of the \
         sealed copy plus the redirect of its references; the floor is a bare `dlopen` of the \
         same file in a fresh python3 that uses the library.\n\n\
         | library | references redirected | dry run | reload | check | probe | load | bare dlopen (floor) | entries | rollback |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    if !Path::new(PYTHON).exists() {
        out.push_str("\n(skipped: no /usr/bin/python3 on this machine)\n");
        return out;
    }
    for case in &CASES {
        if !Path::new(case.system).exists() {
            let _ = writeln!(out, "| {} | (not installed) |||||||||", case.lib);
            continue;
        }
        let dir = tempfile::tempdir().expect("a folder");
        let copy = dir.path().join(case.lib);
        std::fs::copy(case.system, &copy).expect("copy the library");
        let db = dir.path().join("bench.db");
        let mut t = Target::builder(PYTHON)
            .arg("-I")
            .arg(driver(case.driver))
            .arg(&db)
            .spawn();
        let _ = t.cmd(case.warm);
        let (mut dry, mut total, mut rb) = (Vec::new(), Vec::new(), Vec::new());
        let mut phases: [Vec<u64>; 4] = Default::default();
        let mut redirected = String::new();
        for _ in 0..n.cycles.max(1) {
            dry.push(reload(&t, &copy, &["--dry-run", "--settle", "0"]).elapsed_us);
            let r = reload(&t, &copy, &["--settle", "0"]);
            if let Some(line) = r.warnings.iter().find(|w| w.starts_with("private state")) {
                redirected = line
                    .rsplit_once("; ")
                    .map_or(line.as_str(), |(_, tail)| tail)
                    .to_string();
            }
            total.push(r.elapsed_us);
            let p = &r.phases;
            for (i, v) in [p.check_us, p.probe_us, p.load_us, p.entries_us]
                .into_iter()
                .enumerate()
            {
                phases[i].push(v);
            }
            rb.push(rollback(&t).elapsed_us);
        }
        let _ = t.cmd(case.warm);
        let floor = bare_dlopen_us(case, &copy, n.cycles.clamp(3, 9));
        let ph: Vec<String> = phases.iter_mut().map(|v| us(stats(v).0)).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            case.lib,
            redirected,
            us(stats(&mut dry).0),
            us(stats(&mut total).0),
            ph[0],
            ph[1],
            ph[2],
            us(floor),
            ph[3],
            us(stats(&mut rb).0),
        );
    }
    out
}
