//! What an operator waits for: `hotctl`'s wall time against its own start (`--version`), the
//! first reload of a process against later ones, the probe on a small and a big target, and the
//! requests a loaded server loses around a reload.

use crate::load::demo_server;
use crate::{stats, us, Counts};
use hotagent_tests::*;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Runs hotctl with `args` in socket folder `dir`, asserts it succeeded; (wall µs, stdout).
fn run(dir: &std::path::Path, args: &[&str]) -> (u64, String) {
    let mut c = Command::new(hotctl_bin());
    c.args(args)
        .env_remove("LD_PRELOAD")
        .env("HOTAGENT_SOCKET_DIR", dir)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped());
    let start = Instant::now();
    let out = c.output().expect("run hotctl");
    let wall = start.elapsed().as_micros() as u64;
    assert!(
        out.status.success(),
        "hotctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (wall, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn report(stdout: &str) -> protocol::ReloadReport {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not a reload report ({e}): {stdout}"))
}

fn available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub fn wall(n: &Counts) -> String {
    let cfg = Config::DEFAULT;
    let v2 = cfg.path("libfoo_v2.so");
    let v2s = path_str(&v2);
    let dir = scratch();
    let d = dir.path();
    let runs = n.cycles * n.targets;
    let mut out = String::from(
        "`hotctl` as a process, start to exit (median of each row's runs; `basic` targets). \
         The floor is `hotctl --version`: the process start every invocation pays.\n\n\
         | what | wall median | wall p99 | agent-side median |\n|---|---|---|---|\n",
    );
    let t = Target::builder(cfg.path("basic")).socket_dir(d).spawn();
    let pid = t.pid().to_string();
    let mut version: Vec<u64> = (0..runs).map(|_| run(d, &["--version"]).0).collect();
    let mut status: Vec<u64> = (0..runs)
        .map(|_| run(d, &["--pid", &pid, "status"]).0)
        .collect();
    let (mut walls, mut agent) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let args = [
            "--pid",
            &pid,
            "reload",
            v2s,
            "--settle",
            "0",
            "--no-probe",
            "--force",
        ];
        let (w, o) = run(d, &[&args[..], &["--json"]].concat());
        walls.push(w);
        agent.push(report(&o).elapsed_us);
        run(d, &["--pid", &pid, "rollback"]);
    }
    for (label, v, a) in [
        ("`hotctl --version` (floor)", &mut version, None),
        ("`hotctl --pid P status`", &mut status, None),
        (
            "`hotctl --pid P reload --settle 0 --no-probe --force`",
            &mut walls,
            Some(&mut agent),
        ),
    ] {
        let (m, p) = stats(v);
        let a = a.map_or("".to_string(), |a| us(stats(a).0));
        let _ = writeln!(out, "| {label} | {} | {} | {a} |", us(m), us(p));
    }
    drop(t);

    // The first reload of a process against its later ones (agent side, probe off).
    let (mut first, mut later) = (Vec::new(), Vec::new());
    for _ in 0..n.targets.max(3) {
        let t = Target::builder(cfg.path("basic")).socket_dir(d).spawn();
        let pid = t.pid().to_string();
        for i in 0..4 {
            let args = [
                "--pid",
                &pid,
                "reload",
                v2s,
                "--settle",
                "0",
                "--no-probe",
                "--force",
            ];
            let (_, o) = run(d, &[&args[..], &["--json"]].concat());
            let r = report(&o).elapsed_us;
            if i == 0 { &mut first } else { &mut later }.push(r);
            run(d, &["--pid", &pid, "rollback"]);
        }
    }
    let _ = writeln!(
        out,
        "\nFirst reload of a fresh process against its later ones (agent side, `--no-probe`; \
         {} fresh processes).\n\n| first reload median | first max | later reloads median |\n\
         |---|---|---|\n| {} | {} | {} |",
        first.len(),
        us(stats(&mut first).0),
        us(*first.iter().max().unwrap_or(&0)),
        us(stats(&mut later).0),
    );

    out.push_str(&probe_rows(n, d, v2s));
    out.push_str(&throughput(n));
    out
}

/// The probe phase on a target with a 10 MiB and a 4 GiB heap, every page touched.
fn probe_rows(n: &Counts, d: &std::path::Path, v2s: &str) -> String {
    let cfg = Config::DEFAULT;
    let mut out = String::from(
        "\nThe probe (a throwaway copy of the process loads the library first): its phase of \
         `hotctl reload` on `basic` after it touched a heap of each size. Bare fork: the floor, \
         measured in the same process (`basic`'s `forktime`): a fork system call whose child only \
         exits, and the wait for it.\n\n\
         | heap touched | probe median | probe max | reloads | bare fork median |\n|---|---|---|---|---|\n",
    );
    for mib in [10u64, 4096] {
        if mib * 1024 * 3 / 2 > available_kib() {
            let _ = writeln!(
                out,
                "| {mib} MiB | skipped: {} MiB available | | | |",
                available_kib() / 1024
            );
            continue;
        }
        let mut t = Target::builder(cfg.path("basic")).socket_dir(d).spawn();
        // In pieces: each answer comes within the harness's deadline on a slow machine.
        for _ in 0..mib.div_ceil(256) {
            let piece = mib.min(256);
            assert_eq!(t.cmd(&format!("touch {piece}")), "ok", "touch {piece} MiB");
        }
        let pid = t.pid().to_string();
        let (mut v, mut fork) = (Vec::new(), Vec::new());
        for _ in 0..n.cycles.min(10) {
            let args = [
                "--pid", &pid, "reload", v2s, "--settle", "0", "--force", "--json",
            ];
            v.push(report(&run(d, &args).1).phases.probe_us);
            run(d, &["--pid", &pid, "rollback"]);
            fork.push(t.cmd_i("forktime") as u64);
        }
        let max = *v.iter().max().unwrap_or(&0);
        let _ = writeln!(
            out,
            "| {mib} MiB | {} | {} | {} | {} |",
            us(stats(&mut v).0),
            us(max),
            v.len(),
            us(stats(&mut fork).0)
        );
    }
    out
}

/// Requests the demo server answers, under 4 clients, in the second around a reload against
/// the second before it.
fn throughput(n: &Counts) -> String {
    let dir = scratch();
    let (mut server, port) = demo_server(0, true, dir.path());
    wait_for_agent(dir.path(), server.id(), || Ok(())).expect("the demo server's agent");
    let lib = target_dir().join("demo/v2/libgreet.so");
    let pid = server.id().to_string();
    let served = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let rounds = n.switches.clamp(1, 5);
    let mut rows = Vec::new();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| client(port, &served, &stop));
        }
        std::thread::sleep(Duration::from_millis(300));
        for i in 0..rounds {
            let a = served.load(Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(1));
            let b = served.load(Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(500));
            let verb = if i % 2 == 0 {
                vec!["--pid", &pid, "reload", path_str(&lib), "--settle", "0"]
            } else {
                vec!["--pid", &pid, "rollback"]
            };
            run(dir.path(), &verb);
            std::thread::sleep(Duration::from_millis(500));
            let c = served.load(Ordering::Relaxed);
            rows.push((b - a, c - b));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let _ = server.kill();
    let _ = server.wait();
    let mut text = String::from(
        "\nThe demo server under 4 clients asking flat out: requests served in the second \
         around a switch (reload, then rollback, alternately; the switch half-way through) \
         against the second before it.\n\n| second before | second around | lost |\n|---|---|---|\n",
    );
    for (before, around) in rows {
        let lost = before as f64 - around as f64;
        let _ = writeln!(
            text,
            "| {before} | {around} | {:.1} % |",
            lost / before.max(1) as f64 * 100.0
        );
    }
    text
}

/// One persistent connection asking until `stop`, counting answers in `served`.
fn client(port: u16, served: &AtomicU64, stop: &AtomicBool) {
    use std::io::{BufRead, BufReader, Write};
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let mut r = BufReader::new(c.try_clone().expect("clone"));
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        if c.write_all(b"bob\n").is_err() || !matches!(r.read_line(&mut line), Ok(n) if n > 0) {
            return;
        }
        served.fetch_add(1, Ordering::Relaxed);
    }
}
