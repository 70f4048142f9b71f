//! Finding agents: the socket folder, and which of its sockets have a live agent behind them.

use std::env;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;

use anyhow::{Context, Result};
use hotagent_protocol::{socket_path, Request, Response, StatusReport, SOCKET_SUFFIX};

use crate::client::{self, ExchangeError, Target, QUICK_TIMEOUT};
use crate::trust::{Distrust, Folder};

/// Discovery across every folder agents listen in (`places.rs`).
pub use crate::places::{find, scan_everywhere};

/// The folder the agents of this user put their sockets in, by the rule the agent uses.
pub fn socket_dir() -> PathBuf {
    hotagent_protocol::socket_dir(
        env::var_os("HOTAGENT_SOCKET_DIR"),
        env::var_os("XDG_RUNTIME_DIR"),
        current_uid(),
    )
}

fn current_uid() -> u32 {
    // SAFETY: getuid takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::getuid() }
}

/// An agent that answered a status request.
#[derive(Debug)]
pub struct Agent {
    pub target: Target,
    pub status: StatusReport,
}

/// What a look through the socket folder found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Ordered by pid.
    pub agents: Vec<Agent>,
    /// Sockets with a listener that gave no usable status answer, or that hotctl would not talk
    /// to (see `trust`), and why. Stale sockets (no listener) are left out: a crashed target
    /// leaves one behind, and that is not news.
    pub unanswered: Vec<(Target, String)>,
    /// Stale sockets of the invoking user's dead processes, removed on the way.
    pub removed: usize,
}

/// Asks every `<pid>.sock` in `dir` for its status. A missing folder simply holds no agents; a
/// folder that fails the checks of `trust` is an error.
pub fn scan(dir: &Path) -> Result<Scan> {
    let folder = match Folder::open(dir) {
        Ok(folder) => folder,
        Err(why) if why.is_missing_folder() => return Ok(Scan::default()),
        Err(why) => return Err(why.into()),
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Scan::default()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut targets: Vec<Target> = entries
        .filter_map(|entry| pid_of(dir, &entry.ok()?.path()))
        .map(|pid| Target {
            pid,
            socket: socket_path(dir, pid),
        })
        .collect();
    targets.sort_by_key(|t| t.pid);

    // In parallel, so that one wedged target costs one timeout, not one per socket.
    let probes: Vec<Probe> = thread::scope(|scope| {
        let handles: Vec<_> = targets
            .into_iter()
            .map(|target| scope.spawn(move || probe(target)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread panicked"))
            .collect()
    });

    let mut scan = Scan::default();
    for probe in probes {
        match probe {
            Probe::Agent(agent) => scan.agents.push(agent),
            Probe::Unanswered(target, why) => scan.unanswered.push((target, why)),
            Probe::Stale(pid) => scan.removed += usize::from(folder.remove_if_stale(pid)),
            Probe::Other => {}
        }
    }
    Ok(scan)
}

enum Probe {
    Agent(Agent),
    Unanswered(Target, String),
    /// Nothing listens on the socket of this pid.
    Stale(u32),
    /// Not a socket: litter with an agent's name, nothing to talk to.
    Other,
}

fn probe(target: Target) -> Probe {
    match target.exchange(&Request::status(), QUICK_TIMEOUT) {
        Ok(Response::Status(status)) => Probe::Agent(Agent { target, status }),
        Ok(other) => {
            let why = format!("{:#}", client::unexpected(other, "status"));
            Probe::Unanswered(target, why)
        }
        Err(ExchangeError::Stale { .. }) => Probe::Stale(target.pid),
        Err(ExchangeError::Untrusted {
            why: Distrust::NotASocket { .. },
            ..
        }) => Probe::Other,
        Err(err) => Probe::Unanswered(target, err.to_string()),
    }
}

/// The pid a socket file is named after, if its name is exactly what an agent would choose;
/// anything else in the folder is not ours to probe.
fn pid_of(dir: &Path, path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let pid: u32 = name.strip_suffix(SOCKET_SUFFIX)?.parse().ok()?;
    (pid != 0 && socket_path(dir, pid) == path).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fake_agent, status_agent};
    use hotagent_protocol::{ErrorCode, ErrorReply};
    use std::os::unix::net::UnixListener;

    const NO_SUCH_PID: u32 = 4_000_000_000;

    fn err_text(result: Result<Target>) -> String {
        format!("{:#}", result.unwrap_err())
    }

    /// Files an agent folder collects besides live sockets: a stale socket, a plain file with a
    /// socket's name, and names that are not `<pid>.sock`.
    fn litter(dir: &Path) {
        drop(UnixListener::bind(socket_path(dir, NO_SUCH_PID)).unwrap());
        fs::write(dir.join("77.sock"), b"not a socket").unwrap();
        fs::write(dir.join("notes.txt"), b"").unwrap();
        fs::write(dir.join("+12.sock"), b"").unwrap();
        fs::write(dir.join("0012.sock"), b"").unwrap();
        fs::write(dir.join("0.sock"), b"").unwrap();
    }

    #[test]
    fn pid_names() {
        let dir = Path::new("/run/hotagent");
        assert_eq!(pid_of(dir, &dir.join("123.sock")), Some(123));
        assert_eq!(pid_of(dir, &dir.join("123.sock.bak")), None);
        assert_eq!(pid_of(dir, &dir.join("0123.sock")), None);
        assert_eq!(pid_of(dir, &dir.join("+123.sock")), None);
        assert_eq!(pid_of(dir, &dir.join("0.sock")), None);
        assert_eq!(pid_of(dir, &dir.join("x.sock")), None);
    }

    #[test]
    fn finds_the_only_agent() {
        let dir = tempfile::tempdir().unwrap();
        litter(dir.path());
        let agent = status_agent(dir.path(), "/usr/bin/app");
        assert_eq!(crate::places::find(dir.path(), None).unwrap(), agent);
    }

    #[test]
    fn none_found() {
        let dir = tempfile::tempdir().unwrap();
        let expected = format!(
            "no hotagent process found in {} (start the target with LD_PRELOAD=.../libhotagent.so;",
            dir.path().display()
        );
        let text = err_text(crate::places::find(dir.path(), None));
        assert!(
            text.starts_with(&expected) && !text.contains(".sock"),
            "{text}"
        );
        // Stale sockets and strangers do not count, and are not worth a mention.
        litter(dir.path());
        let text = err_text(crate::places::find(dir.path(), None));
        assert!(
            text.starts_with(&expected) && !text.contains(".sock"),
            "{text}"
        );
    }

    #[test]
    fn missing_folder_holds_no_agents() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(scan(&missing).unwrap().agents.is_empty());
        assert!(err_text(crate::places::find(&missing, None))
            .starts_with("no hotagent process found in "));
    }

    #[test]
    fn a_socket_that_refuses_is_mentioned() {
        let dir = tempfile::tempdir().unwrap();
        let agent = fake_agent(dir.path(), |_| {
            Some(Response::Error(ErrorReply {
                code: ErrorCode::Busy,
                message: "agent busy".into(),
            }))
        });
        let text = err_text(crate::places::find(dir.path(), None));
        assert!(text.starts_with("no hotagent process found in "), "{text}");
        let tail = format!("{}.sock: agent busy", agent.pid);
        assert!(text.ends_with(&tail), "{text}");
    }

    #[test]
    fn several_found() {
        let dir = tempfile::tempdir().unwrap();
        litter(dir.path());
        let b = status_agent(dir.path(), "/usr/bin/b");
        let a = status_agent(dir.path(), "/usr/bin/a");
        let mut found = [(b.pid, "/usr/bin/b"), (a.pid, "/usr/bin/a")];
        found.sort();
        let text = err_text(crate::places::find(dir.path(), None));
        assert_eq!(
            text,
            format!(
                "several hotagent processes found in {}: {} ({}), {} ({}); pass --pid to choose one",
                dir.path().display(),
                found[0].0,
                found[0].1,
                found[1].0,
                found[1].1
            )
        );

        let scan = scan(dir.path()).unwrap();
        let pids: Vec<u32> = scan.agents.iter().map(|a| a.target.pid).collect();
        assert_eq!(pids, [found[0].0, found[1].0]);
        assert_eq!(scan.agents[0].status.exe, found[0].1);
        assert!(scan.unanswered.is_empty(), "{:?}", scan.unanswered);
    }

    #[test]
    fn explicit_pid_skips_discovery() {
        let dir = tempfile::tempdir().unwrap();
        status_agent(dir.path(), "/usr/bin/a");
        let b = status_agent(dir.path(), "/usr/bin/b");
        let chosen = crate::places::find(dir.path(), Some(b.pid)).unwrap();
        assert_eq!(
            chosen,
            Target {
                pid: b.pid,
                socket: socket_path(dir.path(), b.pid)
            }
        );
    }

    #[test]
    fn explicit_pid_without_socket() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            err_text(crate::places::find(dir.path(), Some(NO_SUCH_PID))),
            format!(
                "no agent socket for pid {NO_SUCH_PID} in {}: no such process",
                dir.path().display()
            )
        );

        let me = std::process::id();
        let text = err_text(crate::places::find(dir.path(), Some(me)));
        assert!(
            text.starts_with(&format!("no agent socket for pid {me} in ")),
            "{text}"
        );
        assert!(
            text.contains("the process runs, but has no agent socket there"),
            "{text}"
        );
    }
}
