//! Page faults and CPU of a process start, the agent's and hotctl's: in this VM a fault is the
//! dominant cost of loading a library (its relocated data is copied on write page by page), so
//! the count is the figure start-up work aims at. Each row stands beside its floor, `/bin/true`,
//! from the same interleaved runs.

use super::{stats, us, Counts};
use hotagent_tests::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// How one row's process is started.
struct Run {
    label: &'static str,
    exe: PathBuf,
    args: &'static [&'static str],
    env: Vec<(&'static str, PathBuf)>,
}

/// (minor faults, CPU µs) of one run, from the child's rusage.
// The child is reaped by `wait4` (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn once(run: &Run, dir: &std::path::Path) -> (u64, u64) {
    let mut c = Command::new(&run.exe);
    c.args(run.args)
        .env_remove("LD_PRELOAD")
        .env_remove("HOTAGENT_SKIP")
        .env_remove("HOTAGENT_LOG")
        .env("HOTAGENT_SOCKET_DIR", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in &run.env {
        c.env(k, v);
    }
    let child = c.spawn().expect("start the process");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for the kernel to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaping our own child; both out-pointers are valid for the call.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (
        usage.ru_minflt as u64,
        tv(usage.ru_utime) + tv(usage.ru_stime),
    )
}

pub(super) fn faults(n: &Counts) -> String {
    let dir = tempfile::tempdir().expect("socket folder");
    let preload = |skip: bool| {
        let mut env = vec![("LD_PRELOAD", agent_so())];
        if skip {
            env.push(("HOTAGENT_SKIP", PathBuf::from("1")));
        }
        env
    };
    let runs = [
        Run {
            label: "`/bin/true` (floor)",
            exe: "/bin/true".into(),
            args: &[],
            env: vec![],
        },
        Run {
            label: "`/bin/true`, libhotagent.so with `HOTAGENT_SKIP=1`",
            exe: "/bin/true".into(),
            args: &[],
            env: preload(true),
        },
        Run {
            label: "`/bin/true`, libhotagent.so (agent started)",
            exe: "/bin/true".into(),
            args: &[],
            env: preload(false),
        },
        Run {
            label: "`hotctl --version`",
            exe: hotctl_bin(),
            args: &["--version"],
            env: vec![],
        },
    ];
    let mut faults = vec![Vec::new(); runs.len()];
    let mut cpus = vec![Vec::new(); runs.len()];
    for _ in 0..n.execs {
        for (i, run) in runs.iter().enumerate() {
            let (f, c) = once(run, dir.path());
            faults[i].push(f);
            cpus[i].push(c);
        }
    }
    let mut out = format!(
        "Each process run {} times, interleaved: median minor page faults and median CPU time \
         (user + system) of the child, from `wait4`. \"Added\" is against `/bin/true` alone.\n\n\
         | run | page faults | added | CPU | added |\n|---|---|---|---|---|\n",
        n.execs
    );
    let medians: Vec<(u64, u64)> = faults
        .iter_mut()
        .zip(cpus.iter_mut())
        .map(|(f, c)| (stats(f).0, stats(c).0))
        .collect();
    let (f0, c0) = medians[0];
    for (run, &(f, c)) in runs.iter().zip(&medians) {
        out += &format!(
            "| {} | {f} | {} | {} | {} |\n",
            run.label,
            f.saturating_sub(f0),
            us(c),
            us(c.saturating_sub(c0))
        );
    }
    out
}
