//! Running the check of `hotctl try`: one command, its output on hotctl's stderr, a time limit
//! enforced on its whole process group.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::death::{signal_name, Watch};

/// How a check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signalled(i32),
    /// Still running at the limit: its process group was killed.
    TimedOut,
    /// It could not be started at all (no such program, not executable).
    NotStarted(String),
}

impl Outcome {
    pub fn passed(&self) -> bool {
        *self == Outcome::Exited(0)
    }

    /// Its exit status, when it exited by itself.
    pub fn exit(&self) -> Option<i32> {
        match *self {
            Outcome::Exited(code) => Some(code),
            _ => None,
        }
    }

    /// Why it failed, in a few words (None when it passed).
    pub fn reason(&self, limit: Duration) -> Option<String> {
        match self {
            Outcome::Exited(0) => None,
            Outcome::Exited(code) => Some(format!("check exited with status {code}")),
            Outcome::Signalled(sig) => Some(format!(
                "check killed by signal {sig} ({})",
                signal_name(*sig)
            )),
            Outcome::TimedOut => Some(format!(
                "check timed out after {} ms (its process group was killed)",
                limit.as_millis()
            )),
            Outcome::NotStarted(why) => Some(format!("check could not start: {why}")),
        }
    }
}

/// Runs `argv` with `env` added, stdin from /dev/null and its stdout on hotctl's stderr (hotctl's
/// stdout carries the verdicts, and with `--json` exactly one document). It leads a process group
/// of its own, so that past `limit` everything it started is killed with it.
pub fn run(argv: &[OsString], env: &[(&str, String)], limit: Duration) -> (Outcome, Duration) {
    let start = Instant::now();
    let Some((program, args)) = argv.split_first() else {
        return (Outcome::NotStarted("no command".into()), Duration::ZERO);
    };
    let stdout = match io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(err) => return (Outcome::NotStarted(err.to_string()), start.elapsed()),
    };
    let spawned = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            let why = format!("{}: {err}", program.to_string_lossy());
            return (Outcome::NotStarted(why), start.elapsed());
        }
    };
    // Our own unreaped child: its pid cannot be reused before `wait`, so the watch is on it.
    let finished = match Watch::open(child.id()) {
        Some(watch) => watch.gone_within(limit.saturating_sub(start.elapsed())),
        None => true,
    };
    if !finished {
        kill_group(child.id());
    }
    let status = child.wait();
    let elapsed = start.elapsed();
    let outcome = match status {
        _ if !finished => Outcome::TimedOut,
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Outcome::Exited(code),
            (None, Some(sig)) => Outcome::Signalled(sig),
            (None, None) => Outcome::NotStarted(format!("unexpected wait status {status}")),
        },
        Err(err) => Outcome::NotStarted(format!("cannot wait for it: {err}")),
    };
    (outcome, elapsed)
}

/// SIGKILL to the process group the check leads (its pid is the group's id).
fn kill_group(pgid: u32) {
    // SAFETY: kill(2) takes no memory arguments; the group is the one our unreaped child leads.
    unsafe { libc::kill(-(pgid as libc::pid_t), libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, limit: Duration) -> (Outcome, Duration) {
        let argv = ["sh", "-c", script].map(OsString::from);
        run(&argv, &[("TRY_X", "42".into())], limit)
    }

    #[test]
    fn exit_status_and_environment() {
        let long = Duration::from_secs(10);
        assert_eq!(sh("exit 0", long).0, Outcome::Exited(0));
        assert_eq!(sh("exit 3", long).0, Outcome::Exited(3));
        assert_eq!(sh("test \"$TRY_X\" = 42", long).0, Outcome::Exited(0));
        assert_eq!(sh("kill -9 $$", long).0, Outcome::Signalled(9));
        let none = run(&[OsString::from("/no/such/check")], &[], long).0;
        assert!(
            matches!(&none, Outcome::NotStarted(why) if why.contains("/no/such/check")),
            "{none:?}"
        );
    }

    #[test]
    fn a_hanging_check_is_killed_at_the_limit() {
        let (outcome, took) = sh("sleep 100 & sleep 100", Duration::from_millis(200));
        assert_eq!(outcome, Outcome::TimedOut);
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(outcome
            .reason(Duration::from_millis(200))
            .unwrap()
            .contains("200 ms"));
    }
}
