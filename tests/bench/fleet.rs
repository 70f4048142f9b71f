//! Many processes at once: one `hotctl reload --all` over a fleet of small targets in one socket
//! folder, against one `hotctl status` per process run one after the other (the floor a script
//! looping over pids would pay just to ask, before changing anything).

use crate::Counts;
use hotagent_tests::*;
use std::time::Instant;

pub fn reload_all(n: &Counts) -> String {
    let dir = scratch();
    let targets: Vec<Target> = (0..n.fleet)
        .map(|_| {
            Target::builder(Config::DEFAULT.path("basic"))
                .socket_dir(dir.path())
                .spawn()
        })
        .collect();
    let lib = Config::DEFAULT.path("libfoo_v2.so");

    let start = Instant::now();
    for t in &targets {
        let out = hotctl(t, &["status"]);
        assert!(out.success(), "{out}");
    }
    let sequential = start.elapsed();

    let start = Instant::now();
    let out = hotctl_in(dir.path(), None, &["reload", path_str(&lib), "--all"]);
    let reload = start.elapsed();
    assert!(out.success(), "{out}");
    let summary = format!("{} switched, 0 skipped, 0 failed", targets.len());
    assert!(out.stdout.ends_with(&format!("{summary}\n")), "{out}");

    let start = Instant::now();
    let out = hotctl_in(dir.path(), None, &["rollback", "--all"]);
    let rollback = start.elapsed();
    assert!(out.success(), "{out}");
    format!(
        "{} `basic` targets in one socket folder. One `hotctl reload --all` (default `--parallel 16`, \
         default settle watch, probe on: discovery, then every switch) and one `hotctl rollback --all`, \
         wall time start to exit; the floor is one `hotctl status --pid P` per process, one after \
         the other.\n\n\
         | processes | reload --all | rollback --all | status per process, sequential (floor) |\n\
         |---|---|---|---|\n| {} | {:.0} ms | {:.0} ms | {:.0} ms |\n",
        targets.len(),
        targets.len(),
        reload.as_secs_f64() * 1e3,
        rollback.as_secs_f64() * 1e3,
        sequential.as_secs_f64() * 1e3,
    )
}
