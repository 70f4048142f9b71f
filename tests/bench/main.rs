//! `make bench`: how long a reload takes, what it costs the program, and what the agent costs
//! while idle — measured on real fixtures through the real hotctl, printed as a table and written
//! to `target/bench/report.md` (and `docs/PERFORMANCE.md` with `--write-docs`).
//!
//! `BENCH_QUICK=1` runs every section with tiny counts (the smoke `make test` runs, so the bench
//! cannot rot); figures from a quick run mean nothing. `BENCH_ONLY=WORD` runs only the sections
//! whose title contains WORD (e.g. `BENCH_ONLY=hooks target/release/hotagent-bench`).

mod check;
mod flat;
mod fleet;
mod hooks;
mod load;
mod probation;
mod soak;
mod start2;
mod startup;
mod switch;
mod targets;
mod trying;
mod wall;
mod whole;

use hotagent_tests::*;
use load::{demo_server, load};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Counts {
    cycles: usize,
    targets: usize,
    scaling: &'static [usize],
    scaling_cycles: usize,
    calls: u64,
    execs: usize,
    idle: Duration,
    pause_cycles: usize,
    /// Reload/rollback cycles of the demo server under load.
    switches: usize,
    /// C++ objects per set whose calls are timed, and fresh targets doing it (`hooks`).
    objects: usize,
    conversions: usize,
    /// Targets switched by one `hotctl reload --all` (`fleet`).
    fleet: usize,
}

const FULL: Counts = Counts {
    cycles: 25,
    targets: 4,
    scaling: &[10, 50, 200, 500],
    scaling_cycles: 10,
    calls: 50_000_000,
    execs: 200,
    idle: Duration::from_secs(10),
    pause_cycles: 20,
    switches: 100,
    objects: 100_000,
    conversions: 15,
    fleet: 200,
};

const QUICK: Counts = Counts {
    cycles: 2,
    targets: 1,
    scaling: &[3],
    scaling_cycles: 1,
    calls: 1000,
    execs: 3,
    idle: Duration::from_millis(200),
    pause_cycles: 1,
    switches: 2,
    objects: 1000,
    conversions: 1,
    fleet: 3,
};

/// One part of the report: its counts in, its markdown out.
type Section = fn(&Counts) -> String;

fn main() {
    if std::env::args().any(|a| a == "--soak") {
        std::process::exit(soak::run());
    }
    if std::env::args().any(|a| a == "--build-fixtures") {
        // What `make bench-compare` runs other tools on.
        for artifact in ["threads", "libfoo_v2.so"] {
            println!("{}", Config::DEFAULT.path(artifact).display());
        }
        return;
    }
    let quick = env_parse::<u32>("BENCH_QUICK").unwrap_or(0) == 1;
    let write_docs = std::env::args().any(|a| a == "--write-docs");
    let n = if quick { &QUICK } else { &FULL };
    let mut report = String::new();
    let _ = writeln!(report, "# hotagent performance\n");
    let _ = writeln!(report, "{}\n", machine());
    // BENCH_ONLY=WORD: only the sections whose title contains WORD (the report holds just those).
    let only = std::env::var("BENCH_ONLY").ok();
    let sections: &[(&str, Section)] = &[
        ("Reload against restart, under load", against_restart),
        ("Reload latency", latency),
        (
            "Reload check and rollback against the load",
            check::check_and_rollback,
        ),
        ("Scaling with loaded libraries", scaling),
        (
            "Whole real libraries, private state shared",
            whole::whole_libraries,
        ),
        ("Call cost", call_cost),
        ("Call cost on probation", probation::guarded_calls),
        ("Entry-jump pause", pause),
        (
            "Entry-jump hold: per thread against the full stop",
            switch::per_thread_against_full_stop,
        ),
        (
            "Patch-author hooks and object conversion",
            hooks::hooks_and_conversion,
        ),
        (
            "Validating candidates: try against restart",
            trying::try_against_restart,
        ),
        ("Many processes: reload --all", fleet::reload_all),
        ("hotctl wall time, first reload and probe", wall::wall),
        ("Agent start-up", startup::startup),
        ("Agent idle cost", startup::idle),
        ("Agent and hotctl start-up: page faults", start2::faults),
    ];
    for &(title, section) in sections {
        if only.as_deref().is_some_and(|w| !title.contains(w)) {
            continue;
        }
        eprintln!("bench: {title}...");
        let body = section(n);
        let _ = writeln!(report, "## {title}\n\n{body}");
        print!("## {title}\n\n{body}\n");
    }
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    // First after the machine's line: what the issue asked for, met or not, and why.
    let mut goals = targets::table(&report);
    if let Ok(soak) = std::fs::read_to_string(dir.join("soak.md")) {
        goals.push_str(&format!(
            "\nThe last `make soak`:\n\n{}",
            targets::soak_verdicts(&soak)
        ));
    }
    print!("## Targets (issue 13)\n\n{goals}\n");
    let head = format!("# hotagent performance\n\n{}\n\n", machine());
    report.insert_str(head.len(), &format!("## Targets (issue 13)\n\n{goals}\n"));
    if let Ok(scan) = std::fs::read_to_string(dir.join("scan.txt")) {
        // Criterion prints a name, then its time on the same line or the next one.
        let lines: Vec<&str> = scan
            .lines()
            .filter(|l| l.starts_with("scan/") || l.trim_start().starts_with("time:"))
            .collect();
        let _ = writeln!(
            report,
            "## Scanning and planning (criterion, synthetic images of 40 imports each)\n\n\
             Reading every module's relocations, and planning 8 replaced symbols, by number of \
             modules (`cargo bench -p hotagent --bench scan`, part of `make bench`).\n\n\
             ```\n{}\n```\n",
            lines.join("\n")
        );
    }
    if let Ok(compare) = std::fs::read_to_string(dir.join("compare.md")) {
        let _ = writeln!(
            report,
            "## Against Frida (from the last `make bench-compare`)\n\n{compare}"
        );
    }
    std::fs::write(dir.join("report.md"), &report).expect("write target/bench/report.md");
    eprintln!("bench: wrote {}", dir.join("report.md").display());
    if write_docs && !quick && only.is_none() {
        let doc = format!(
            "{report}\nRegenerate with `make bench` (this file is `target/bench/report.md` of that run).\n"
        );
        let docs = repo_root().join("docs");
        // The report links its plots by name: they go next to it.
        let doc = doc.replace("](scaling.svg)", "](perf/scaling.svg)");
        std::fs::create_dir_all(docs.join("perf")).expect("create docs/perf");
        let _ = std::fs::copy(dir.join("scaling.svg"), docs.join("perf/scaling.svg"));
        std::fs::write(docs.join("PERFORMANCE.md"), doc).expect("write docs/PERFORMANCE.md");
    }
}

/// CPU, cores, kernel: what the figures were measured on.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    format!("Measured on {cpu}, {cores} cores, Linux {kernel}.")
}

/// (median, p99) of `v`, sorted in place.
fn stats(v: &mut [u64]) -> (u64, u64) {
    if v.is_empty() {
        return (0, 0);
    }
    v.sort_unstable();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1} ms", v as f64 / 1000.0)
    } else {
        format!("{v} µs")
    }
}

/// Runs `hotctl reload --settle 0` and returns (wall µs, report): the work itself, without the
/// default 100 ms watch for a target that dies right after the switch (a fixed wait, not work).
fn timed_reload(t: &Target, lib: &Path, extra: &[&str]) -> (u64, protocol::ReloadReport) {
    let mut args = extra.to_vec();
    // A fresh copy every time (a real dlopen in `load`): identical bytes would otherwise reuse
    // the copy a past cycle loaded, skipping stage, probe and load.
    args.extend_from_slice(&["--settle", "0", "--force"]);
    let start = Instant::now();
    let r = reload(t, lib, &args);
    (start.elapsed().as_micros() as u64, r)
}

fn latency(n: &Counts) -> String {
    let cfg = Config::DEFAULT;
    let v2 = cfg.path("libfoo_v2.so");
    let mut out = String::from(
        "`basic` (libfoo.so, 7 functions), reload/rollback cycles, fresh target every \
         few cycles. Wall: `hotctl reload --settle 0` as a process, start to exit (the default \
         `--settle 100ms` adds that watch for a target dying right after the switch). Agent: \
         inside the agent. Bare writes: the rollback's floor, measured in the target after each \
         rollback (`basic`'s `barewrite`): for each of libfoo's functions it calls, its GOT slot and \
         its entry's first five bytes written through `/proc/self/mem`, then one `membarrier`, and \
         nothing else.\n\n\
         | probe | wall median | wall p99 | agent median | agent p99 | check | stage | probe | load | plan | write | verify | entries | rollback median | bare writes |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (label, extra) in [("off", &["--no-probe"][..]), ("on", &[][..])] {
        let (mut wall, mut agent, mut rb) = (Vec::new(), Vec::new(), Vec::new());
        let mut bare: Vec<u64> = Vec::new();
        let mut phases: [Vec<u64>; 8] = Default::default();
        for _ in 0..n.targets {
            let mut t = Target::spawn(cfg.path("basic"));
            for _ in 0..n.cycles {
                let (w, r) = timed_reload(&t, &v2, extra);
                wall.push(w);
                agent.push(r.elapsed_us);
                let p = &r.phases;
                for (i, v) in [
                    p.check_us,
                    p.stage_us,
                    p.probe_us,
                    p.load_us,
                    p.plan_us,
                    p.write_us,
                    p.verify_us,
                    p.entries_us,
                ]
                .into_iter()
                .enumerate()
                {
                    phases[i].push(v);
                }
                rb.push(rollback(&t).elapsed_us);
                bare.push(t.cmd_i("barewrite") as u64);
            }
        }
        let (wm, wp) = stats(&mut wall);
        let (am, ap) = stats(&mut agent);
        let ph: Vec<String> = phases.iter_mut().map(|v| us(stats(v).0)).collect();
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {} | {} | {} |",
            us(wm),
            us(wp),
            us(am),
            us(ap),
            ph.join(" | "),
            us(stats(&mut rb).0),
            us(stats(&mut bare).0)
        );
    }
    out
}

/// Builds `count` libraries that call libfoo's functions (each one GOT slot per function), with
/// `cfg`'s binding flags, into a scratch folder.
fn users(cfg: Config, count: usize) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("scratch folder");
    let src = dir.path().join("user.c");
    std::fs::write(
        &src,
        "int foo_version(void); int foo_add(int, int); int foo_twice(void);\n\
         int user_call(void) { return foo_version() + foo_add(1, 2) + foo_twice(); }\n",
    )
    .expect("write user.c");
    let libfoo = cfg.path("libfoo.so");
    let flags: &[&str] = match cfg.bind {
        Bind::Lazy => &["-Wl,-z,lazy"],
        _ => &["-Wl,-z,now", "-Wl,-z,relro"],
    };
    let paths: Vec<PathBuf> = (0..count)
        .map(|i| dir.path().join(format!("libuser{i}.so")))
        .collect();
    // A few compilers at a time: the machine has few cores.
    for chunk in paths.chunks(8) {
        let children: Vec<_> = chunk
            .iter()
            .map(|out| {
                Command::new("gcc")
                    .args(["-O2", "-fPIC", "-shared", "-o"])
                    .arg(out)
                    .arg(&src)
                    .args(flags)
                    .arg(&libfoo)
                    .spawn()
                    .expect("run gcc")
            })
            .collect();
        for mut c in children {
            assert!(c.wait().expect("wait gcc").success(), "gcc failed");
        }
    }
    (dir, paths)
}

fn scaling(n: &Counts) -> String {
    let mut out = String::from(
        "`basic` with N extra libraries loaded, each calling three of libfoo's functions \
         (`--no-probe`; median of the agent-side time). `load` is the `dlopen` of the new \
         library inside the reload: the floor any reload pays.\n\n\
         | libraries | binding | slots written | agent median | load (dlopen) | plan | write | verify | entries |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut points = Vec::new();
    for &count in n.scaling {
        for cfg in [Config::LAZY_PIE, Config::NOW_PIE] {
            let (_dir, libs) = users(cfg, count);
            let mut t = Target::spawn(cfg.path("basic"));
            for lib in &libs {
                let line = t.cmd(&format!("dlopen {}", lib.display()));
                assert_eq!(line, "ok", "dlopen {}", lib.display());
            }
            let v2 = cfg.path("libfoo_v2.so");
            let mut cols: [Vec<u64>; 6] = Default::default();
            let mut slots = 0;
            for _ in 0..n.scaling_cycles {
                let r = reload(&t, &v2, &["--no-probe", "--force"]);
                slots = r.slots;
                let p = &r.phases;
                for (i, v) in [
                    r.elapsed_us,
                    p.load_us,
                    p.plan_us,
                    p.write_us,
                    p.verify_us,
                    p.entries_us,
                ]
                .into_iter()
                .enumerate()
                {
                    cols[i].push(v);
                }
                rollback(&t);
            }
            let medians: Vec<u64> = cols.iter_mut().map(|v| stats(v).0).collect();
            let c: Vec<String> = medians.iter().map(|&m| us(m)).collect();
            let bind = if cfg.bind == Bind::Lazy {
                "lazy, partial RELRO"
            } else {
                "BIND_NOW, full RELRO"
            };
            points.push((cfg.bind == Bind::Lazy, count, medians[0], medians[1]));
            let _ = writeln!(out, "| {count} | {bind} | {slots} | {} |", c.join(" | "));
            t.assert_alive();
        }
    }
    match plot_scaling(&points) {
        Ok(name) => {
            let _ = writeln!(
                out,
                "\n![agent-side reload time against libraries loaded]({name})"
            );
        }
        Err(e) => eprintln!("bench: no scaling plot: {e}"),
    }
    out
}

/// `target/bench/scaling.svg`: agent-side reload time and its `dlopen` against libraries loaded.
fn plot_scaling(points: &[(bool, usize, u64, u64)]) -> Result<&'static str, String> {
    use plotters::prelude::*;
    let name = "scaling.svg";
    let path = target_dir().join("bench").join(name);
    std::fs::create_dir_all(path.parent().expect("bench folder")).map_err(|e| e.to_string())?;
    let max_x = points.iter().map(|p| p.1).max().unwrap_or(1) as u32;
    let max_y = points.iter().map(|p| p.2).max().unwrap_or(1) as f64 / 1000.0 * 1.1;
    let root = SVGBackend::new(&path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Agent-side reload time (median, --no-probe)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0u32..max_x + max_x / 20 + 1, 0f64..max_y.max(0.1))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("libraries loaded that import the replaced functions")
        .y_desc("ms")
        .draw()
        .map_err(|e| e.to_string())?;
    let series = [
        (true, false, "lazy binding: reload", BLUE.mix(1.0)),
        (false, false, "BIND_NOW + full RELRO: reload", RED.mix(1.0)),
        (true, true, "lazy: dlopen of the new library", BLUE.mix(0.4)),
        (
            false,
            true,
            "BIND_NOW: dlopen of the new library",
            RED.mix(0.4),
        ),
    ];
    for (lazy, load, label, color) in series {
        let line: Vec<(u32, f64)> = points
            .iter()
            .filter(|p| p.0 == lazy)
            .map(|p| (p.1 as u32, if load { p.3 } else { p.2 } as f64 / 1000.0))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart
            .draw_series(line.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(name)
}

/// `got_ns=X ptr_ns=Y` → (X, Y).
fn call_ns(line: &str) -> (f64, f64) {
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    (field("got_ns="), field("ptr_ns="))
}

fn call_cost(n: &Counts) -> String {
    let cfg = Config::DEFAULT;
    let mut t = Target::builder(cfg.path("threads")).arg("0").spawn();
    let bench = format!("bench {}", n.calls);
    let (g0, p0) = call_ns(&t.cmd(&bench));
    reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    let (g1, p1) = call_ns(&t.cmd(&bench));
    reload(&t, &cfg.path("libfoo_v3.so"), &[]);
    let (g2, p2) = call_ns(&t.cmd(&bench));
    rollback(&t);
    rollback(&t);
    let (g3, p3) = call_ns(&t.cmd(&bench));
    format!(
        "`foo_version()` in a loop of {} calls: through the GOT, and through a pointer taken at \
         start-up (after a reload it reaches the new code through the jump at the old entry).\n\n\
         | state | GOT call | pointer to the original entry |\n|---|---|---|\n\
         | before any reload | {g0:.2} ns | {p0:.2} ns |\n\
         | after reload to v2 | {g1:.2} ns ({:.2}x) | {p1:.2} ns (one jump) |\n\
         | after reload to v3 | {g2:.2} ns ({:.2}x) | {p2:.2} ns (one jump) |\n\
         | rolled back to v1 | {g3:.2} ns | {p3:.2} ns (own bytes again) |\n",
        n.calls,
        g1 / g0,
        g2 / g0,
    )
}

fn pause(n: &Counts) -> String {
    let cfg = Config::DEFAULT;
    let v2 = cfg.path("libfoo_v2.so");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = format!(
        "Other threads held while entries are written, per reload and rollback ({cores} cores): \
         the longest any thread was kept from its own code (switched per thread: the CPU time it \
         spent in our look or trap handler, wall time beside it in the next section; with the \
         full stop: how long it was parked).\n\n\
         | threads | median | p95 | max |\n|---|---|---|---|\n"
    );
    for (busy, idle) in [
        ("2", "0"),
        ("16", "0"),
        ("64", "0"),
        ("2", "62"),
        ("0", "64"),
    ] {
        let t = Target::builder(cfg.path("threads"))
            .arg(busy)
            .arg(format!("idle={idle}"))
            .spawn();
        let (v, _) = pauses(n, &t, &v2);
        pause_row(&mut out, &format!("{busy} busy + {idle} idle"), &v);
    }
    // Threads that block every signal, asleep (jemalloc's background threads, a sigwait loop):
    // located, not stopped, so neither the pause nor the entries phase waits for them.
    let t = Target::builder(cfg.path("blockers"))
        .arg("sleepers")
        .arg("busy=2")
        .spawn();
    let (v, entries) = pauses(n, &t, &v2);
    pause_row(&mut out, "2 busy + 4 blocking every signal, asleep", &v);
    let _ = writeln!(
        out,
        "\nWith the 4 signal-blocking threads, the whole entries phase of a reload: median {}, \
         max {} (before such threads were located instead of stopped, every reload waited out a \
         50 ms grace, then fell back to the GOT alone).",
        us(entries[entries.len() / 2]),
        us(entries[entries.len() - 1])
    );
    out
}

/// The longest pause of each reload and rollback, sorted; and each reload's entries phase.
fn pauses(n: &Counts, t: &Target, v2: &Path) -> (Vec<u64>, Vec<u64>) {
    let mut v = Vec::new();
    let mut entries = Vec::new();
    for _ in 0..n.pause_cycles {
        let r = reload(t, v2, &["--no-probe"]);
        v.push(r.pause.held_us);
        entries.push(r.phases.entries_us);
        v.push(rollback(t).pause.held_us);
    }
    v.sort_unstable();
    entries.sort_unstable();
    (v, entries)
}

fn pause_row(out: &mut String, label: &str, v: &[u64]) {
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    let _ = writeln!(
        out,
        "| {label} | {} | {} | {} |",
        us(at(0.5)),
        us(at(0.95)),
        us(v[v.len() - 1])
    );
}

/// (CPU ticks, threads, RSS kB, voluntary + involuntary context switches of the agent's threads).
fn proc_sample(pid: u32) -> (u64, usize, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut switches = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if !comm.starts_with("hotagent") {
                continue;
            }
            let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            for l in s.lines() {
                if let Some(v) = l
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    switches += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    (ticks, field("Threads:") as usize, field("VmRSS:"), switches)
}

fn against_restart(n: &Counts) -> String {
    use std::sync::atomic::{AtomicBool, Ordering};
    let demo = target_dir().join("demo");
    let dir = tempfile::tempdir().expect("socket folder");
    let clients = 4;

    // hotagent: reload/rollback cycles while the clients keep asking.
    let (mut server, port) = demo_server(0, true, dir.path());
    wait_for_agent(dir.path(), server.id(), || Ok(())).expect("the demo server's agent");
    let agent = AgentRef {
        dir: dir.path().to_path_buf(),
        pid: server.id(),
    };
    let stop = AtomicBool::new(false);
    let (reloads, seen) = std::thread::scope(|s| {
        let gen = s.spawn(|| load(port, clients, &stop));
        std::thread::sleep(Duration::from_millis(200));
        let mut walls = Vec::new();
        for _ in 0..n.switches {
            let start = Instant::now();
            reload(&agent, &demo.join("v2/libgreet.so"), &[]);
            walls.push(start.elapsed().as_micros() as u64);
            rollback(&agent);
        }
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        (walls, gen.join().expect("load"))
    });
    let mut reloads = reloads;
    let (reload_median, _) = stats(&mut reloads);
    let _ = server.kill();
    let _ = server.wait();

    // Restart: stop the server and start it again on the same port, under the same load.
    let (mut old, port) = demo_server(0, false, dir.path());
    let stop = AtomicBool::new(false);
    let (down_us, restarted) = std::thread::scope(|s| {
        let gen = s.spawn(|| load(port, clients, &stop));
        std::thread::sleep(Duration::from_millis(200));
        let start = Instant::now();
        // SAFETY: sending SIGTERM to our own child.
        unsafe { libc::kill(old.id() as i32, libc::SIGTERM) };
        let _ = old.wait();
        let (mut new, _) = demo_server(port, false, dir.path());
        // demo_server returns once the new server printed that it listens.
        let down = start.elapsed().as_micros() as u64;
        std::thread::sleep(Duration::from_millis(400));
        stop.store(true, Ordering::Relaxed);
        let seen = gen.join().expect("load");
        let _ = new.kill();
        let _ = new.wait();
        (down, seen)
    });
    format!(
        "The demo server under {clients} clients asking flat out on persistent connections. \
         hotagent: {} reload + rollback cycles of libgreet.so. Restart: SIGTERM, then the same \
         server started again on the same port.\n\n\
         | | requests served | failed | wrong answers | longest wait for a reply | state (request counter) | switch time |\n\
         |---|---|---|---|---|---|---|\n\
         | hotagent reload | {} | {} | {} | {} | kept: {} → {} | {} per `hotctl reload` (median) |\n\
         | restart | {} | {} | {} | {} | lost: counting starts again at 1 | {} until it listens again |\n",
        n.switches,
        seen.ok,
        seen.failed,
        seen.wrong,
        us(seen.longest_gap_us),
        seen.first_req,
        seen.last_req,
        us(reload_median),
        restarted.ok,
        restarted.failed,
        restarted.wrong,
        us(restarted.longest_gap_us),
        us(down_us),
    )
}
