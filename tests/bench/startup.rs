//! What the agent costs a process that never talks to hotctl: the start-up added to an exec, and
//! the memory and wake-ups while idle. Each figure stands beside its floors from the same run:
//! `/bin/true` alone, and `/bin/true` preloading an empty library (what any preload costs).

use super::{stats, us, Counts};
use hotagent_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// How `/bin/true` is run in one column of the start-up table.
struct Way {
    label: &'static str,
    preload: Option<PathBuf>,
    skip: bool,
    /// `HOTAGENT_SOCKET_DIR` names a folder of the run's own (the agent then also listens in
    /// the registry folder: two sockets); else the default folder, as a process preloaded by
    /// /etc/ld.so.preload or a systemd unit gets it (one socket).
    own_dir: bool,
}

/// (wall µs, CPU µs of the child) of one run of `/bin/true`.
// The child is reaped by `wait4` (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_once(way: &Way, dir: &Path) -> (u64, u64) {
    let mut c = Command::new("/bin/true");
    c.env_remove("LD_PRELOAD")
        .env_remove("HOTAGENT_SKIP")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if way.own_dir {
        c.env("HOTAGENT_SOCKET_DIR", dir);
    } else {
        c.env_remove("HOTAGENT_SOCKET_DIR")
            .env_remove("XDG_RUNTIME_DIR");
    }
    if let Some(so) = &way.preload {
        c.env("LD_PRELOAD", so);
    }
    if way.skip {
        c.env("HOTAGENT_SKIP", "1");
    }
    let start = Instant::now();
    let child = c.spawn().expect("run /bin/true");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for the kernel to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaping our own child; both out-pointers are valid for the call.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = start.elapsed().as_micros() as u64;
    assert!(pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (wall, tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// An empty shared library, compiled here: the floor of any preload.
fn empty_so(dir: &Path) -> PathBuf {
    let so = dir.join("libempty.so");
    let ok = Command::new("cc")
        .args(["-shared", "-fPIC", "-x", "c", "/dev/null", "-o"])
        .arg(&so)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cc could not build an empty shared library");
    so
}

/// The least any agent that listens from the start costs, as a C library compiled here: with
/// `socket`, a Unix socket bound in the socket folder (removed at exit) and a thread (256 KiB of
/// stack, every signal blocked) asleep in `poll` on it; without, the thread alone.
fn listener_so(dir: &Path, socket: bool) -> PathBuf {
    let name = if socket { "listener" } else { "thread" };
    let src = dir.join(format!("{name}.c"));
    let so = dir.join(format!("lib{name}.so"));
    std::fs::write(
        &src,
        r#"#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
static struct sockaddr_un addr = {.sun_family = AF_UNIX};
static int fd = -1;
static void *wait_for_clients(void *unused) {
    struct pollfd p = {fd, POLLIN, 0};
    for (;;) poll(&p, 1, -1);
    return unused;
}
static void remove_socket(void) { unlink(addr.sun_path); }
__attribute__((constructor)) static void start(void) {
    const char *dir = getenv("HOTAGENT_SOCKET_DIR");
    if (SOCKET && dir) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        snprintf(addr.sun_path, sizeof addr.sun_path, "%s/%d.sock", dir, (int)getpid());
        if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) || listen(fd, 128)) return;
        atexit(remove_socket);
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 << 10);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    pthread_create(&t, &attr, wait_for_clients, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}
"#,
    )
    .expect("write the listener's source");
    let ok = Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-pthread"])
        .arg(format!("-DSOCKET={}", u8::from(socket)))
        .arg(&src)
        .arg("-o")
        .arg(&so)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cc could not build {}", so.display());
    so
}

/// The loader's own count (`LD_DEBUG=statistics`) of cycles spent before `main`.
fn loader_cycles(preload: Option<&Path>) -> String {
    let mut c = Command::new("/bin/true");
    c.env_remove("LD_PRELOAD")
        .env("LD_DEBUG", "statistics")
        .env("HOTAGENT_SKIP", "1");
    if let Some(so) = preload {
        c.env("LD_PRELOAD", so);
    }
    let out = c.output().expect("run /bin/true");
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| {
            let rest = l.split("total startup time in dynamic loader:").nth(1)?;
            Some(rest.trim().trim_end_matches(" cycles").to_string())
        })
        .unwrap_or_else(|| "?".into())
}

pub(super) fn startup(n: &Counts) -> String {
    let dir = tempfile::tempdir().expect("socket folder");
    let empty = empty_so(dir.path());
    let ways = [
        Way {
            label: "`/bin/true` (floor)",
            preload: None,
            skip: false,
            own_dir: false,
        },
        Way {
            label: "preloading an empty library (floor of any preload)",
            preload: Some(empty.clone()),
            skip: false,
            own_dir: false,
        },
        Way {
            label: "a C library that starts a thread and nothing else (floor of an agent thread)",
            preload: Some(listener_so(dir.path(), false)),
            skip: false,
            own_dir: true,
        },
        Way {
            label: "a C library that binds a socket and starts a thread on it (floor of a listener from the start)",
            preload: Some(listener_so(dir.path(), true)),
            skip: false,
            own_dir: true,
        },
        Way {
            label: "libhotagent.so, `HOTAGENT_SKIP=1` (loading it; the constructor stops early)",
            preload: Some(agent_so()),
            skip: true,
            own_dir: false,
        },
        Way {
            label: "libhotagent.so (agent started: its socket in the default folder, its thread)",
            preload: Some(agent_so()),
            skip: false,
            own_dir: false,
        },
        Way {
            label: "libhotagent.so, `HOTAGENT_SOCKET_DIR` set (a second socket, in the registry folder)",
            preload: Some(agent_so()),
            skip: false,
            own_dir: true,
        },
    ];
    // Interleaved run by run, so drift in the machine's load hits every way alike.
    let mut walls = vec![Vec::new(); ways.len()];
    let mut cpus = vec![Vec::new(); ways.len()];
    for _ in 0..n.execs {
        for (i, way) in ways.iter().enumerate() {
            let (w, c) = run_once(way, dir.path());
            walls[i].push(w);
            cpus[i].push(c);
        }
    }
    let medians: Vec<(u64, u64)> = walls
        .iter_mut()
        .zip(cpus.iter_mut())
        .map(|(w, c)| (stats(w).0, stats(c).0))
        .collect();
    let mut out = format!(
        "`/bin/true` run {} times each way, interleaved: median wall time of fork + exec + exit, \
         and median CPU time of the child (user + system, from `wait4`). \"Added\" is against \
         `/bin/true` alone.\n\n\
         | run | wall | added | CPU | added |\n|---|---|---|---|---|\n",
        n.execs
    );
    let (w0, c0) = medians[0];
    for (way, &(w, c)) in ways.iter().zip(&medians) {
        out += &format!(
            "| {} | {} | {} | {} | {} |\n",
            way.label,
            us(w),
            us(w.saturating_sub(w0)),
            us(c),
            us(c.saturating_sub(c0))
        );
    }
    out += &format!(
        "\nThe loader's own count before `main` (`LD_DEBUG=statistics`, cycles): {} alone, {} with \
         the empty library, {} with libhotagent.so.\n",
        loader_cycles(None),
        loader_cycles(Some(&empty)),
        loader_cycles(Some(&agent_so()))
    );
    out
}

/// What `/proc/PID/smaps` says: (Private_Dirty kB of the process, RSS kB of libhotagent.so's
/// mappings).
fn smaps(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut private = 0;
    let mut agent = 0;
    let mut in_agent = false;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(key), Some(value)) = (f.next(), f.next()) else {
            continue;
        };
        if key.contains('-') && !key.ends_with(':') {
            in_agent = line.contains("libhotagent");
            continue;
        }
        let kb = value.parse::<u64>().unwrap_or(0);
        match key {
            "Private_Dirty:" => private += kb,
            "Rss:" if in_agent => agent += kb,
            _ => {}
        }
    }
    (private, agent)
}

pub(super) fn idle(n: &Counts) -> String {
    let cfg = Config::DEFAULT;
    let mut bare = Target::builder(cfg.path("basic")).without_agent().spawn();
    let mut with = Target::spawn(cfg.path("basic"));
    bare.expect("version", 1);
    with.expect("version", 1);
    // Idle starts after start-up: the agent's thread wakes once, a second after the start, to
    // give back its pages (control::server's TRIM_AFTER_MS), and never again on its own.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (t0, _, _, s0) = super::proc_sample(with.pid());
    std::thread::sleep(n.idle);
    let (t1, threads, rss, s1) = super::proc_sample(with.pid());
    let (_, bare_threads, bare_rss, _) = super::proc_sample(bare.pid());
    let (private, agent_pages) = smaps(with.pid());
    let (bare_private, _) = smaps(bare.pid());
    format!(
        "`basic` left idle for {:?} (from 1.5 s after its start: the agent's thread wakes once, 1 s after the start, to give back its pages), with and without the agent. Private dirty memory is what \
         each process costs the machine on its own; the rest of RSS is shared page cache.\n\n\
         | CPU time used while idle | agent thread wake-ups | threads added | RSS without | RSS with | RSS added | private dirty added | libhotagent.so pages in RSS |\n\
         |---|---|---|---|---|---|---|---|\n| {} ms | {} | {} | {} KiB | {} KiB | {} KiB | {} KiB | {} KiB |\n",
        n.idle,
        (t1 - t0) * 10,
        s1 - s0,
        threads.saturating_sub(bare_threads),
        bare_rss,
        rss,
        rss.saturating_sub(bare_rss),
        private.saturating_sub(bare_private),
        agent_pages
    )
}
