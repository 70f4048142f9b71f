//! Validating candidate patches the seed's way (shared/seeds/004): N candidates tried on the fly
//! in one running process (`hotctl try`: reload, check, roll back, next), against the same N
//! validated by restarting a program whose start-up takes a realistic time once per candidate.

use crate::{us, Counts};
use hotagent_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The check every candidate must pass: the same in both ways of validating.
const CHECK: &str = "test \"${HOTAGENT_GENERATION:-1}\" -ge 1";

/// Starts `slowstart` (with the agent when `dir` is given), waits for its "ready".
fn start(
    lib_dir: Option<&Path>,
    dir: Option<&Path>,
    startup_ms: u64,
) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut cmd = Command::new(Config::DEFAULT.path("slowstart"));
    cmd.env("SLOWSTART_MS", startup_ms.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(l) = lib_dir {
        cmd.env("LD_LIBRARY_PATH", l);
    }
    if let Some(d) = dir {
        cmd.env("LD_PRELOAD", agent_so())
            .env("HOTAGENT_SOCKET_DIR", d);
    }
    let mut child = cmd.spawn().expect("start slowstart");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read ready");
    assert_eq!(line.trim(), "ready", "slowstart did not start");
    (child, out)
}

fn ask(child: &mut Child, out: &mut BufReader<std::process::ChildStdout>, q: &str) -> String {
    let stdin = child.stdin.as_mut().expect("stdin");
    writeln!(stdin, "{q}")
        .and_then(|()| stdin.flush())
        .expect("ask");
    let mut line = String::new();
    out.read_line(&mut line).expect("answer");
    line.trim().to_string()
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub fn try_against_restart(n: &Counts) -> String {
    let (count, startup_ms) = if n.cycles > 2 { (5, 300) } else { (2, 20) };
    let v2 = Config::DEFAULT.path("libfoo_v2.so");
    let v2s = v2.display().to_string();

    // On the fly: one process, `hotctl try` over every candidate.
    let dir = tempfile::tempdir().expect("socket folder");
    let (mut target, mut out) = start(None, Some(dir.path()), startup_ms);
    let pid = target.id();
    wait_for_agent(dir.path(), pid, || Ok(())).expect("agent");
    let pid_s = pid.to_string();
    // The check is what watches each candidate here; the default 100 ms settle watch after
    // each reload and each rollback would add 200 ms per candidate (said in the report).
    let mut args = vec!["--pid", pid_s.as_str(), "--settle", "0", "try"];
    args.extend(std::iter::repeat_n(v2s.as_str(), count));
    args.extend(["--", "sh", "-c", CHECK]);
    let t = Instant::now();
    let tried = hotctl_in(dir.path(), None, &args);
    let fly = t.elapsed();
    assert!(tried.success(), "hotctl try failed:\n{tried}");
    assert_eq!(ask(&mut target, &mut out, "version"), "1", "not back at v1");
    stop(target);

    // Restarting: each candidate in a fresh process, found first on its library path.
    let libs = tempfile::tempdir().expect("library folder");
    std::fs::copy(&v2, libs.path().join("libfoo.so")).expect("copy the candidate");
    let t = Instant::now();
    for _ in 0..count {
        let (mut p, mut out) = start(Some(libs.path()), None, startup_ms);
        assert_eq!(
            ask(&mut p, &mut out, "version"),
            "2",
            "the candidate was not loaded"
        );
        let ok = Command::new("sh")
            .args(["-c", CHECK])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "the check failed");
        stop(p);
    }
    let restart = t.elapsed();
    let per = |d: Duration| us(d.as_micros() as u64 / count as u64);
    format!(
        "{count} candidate builds of libfoo.so, each checked by the same command, against a \
         program whose start-up takes {startup_ms} ms (a server loading its configuration and \
         warming caches). On the fly: one process, `hotctl try` (reload, check, roll back, \
         next; `--settle 0`: the default 100 ms watch after each reload and rollback adds \
         200 ms per candidate). Restarting: a fresh process per candidate, the candidate first \
         on its library path.\n\n\
         | | total | per candidate |\n|---|---|---|\n\
         | `hotctl try`, on the fly | {} | {} |\n\
         | restart per candidate | {} | {} |\n\n\
         Speed-up: **{:.1}x**.\n",
        us(fly.as_micros() as u64),
        per(fly),
        us(restart.as_micros() as u64),
        per(restart),
        restart.as_secs_f64() / fly.as_secs_f64().max(1e-9),
    )
}
