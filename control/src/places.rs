//! Every folder an agent of ours may listen in, and choosing one agent among all of them.
//!
//! `HOTAGENT_SOCKET_DIR` set: that folder only (tests and scripts that want exactly one place).
//! Otherwise `$XDG_RUNTIME_DIR/hotagent` when set, then the registry `/tmp/hotagent-<euid>`, in
//! which every agent also listens whatever its own environment chose; root adds every user's
//! registry. For `--pid N` the folder N's own environment names (`/proc/N/environ`) is tried
//! too. The trust checks (`trust.rs`) apply in each folder as before.

use std::collections::BTreeSet;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use hotagent_protocol::{registry_dir, registry_uid, socket_path, REGISTRY_PREFIX};

use crate::client::{self, Target};
use crate::discover::{scan, Agent, Scan};
use crate::trust::{my_uid, Uids};
use crate::who;

/// How to find the target when discovery fails, for every "not found" message.
const HINT: &str = "start the target with LD_PRELOAD=.../libhotagent.so; a target started with \
                    HOTAGENT_SOCKET_DIR=DIR is found with the same HOTAGENT_SOCKET_DIR=DIR here";

/// Programs that start another program and wait, a shell running a script above all: with the
/// agent preloaded, they get one too. Such an agent whose child is also a candidate is dropped
/// when one target is chosen automatically.
const LAUNCHERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "busybox", "env", "nohup", "setsid", "timeout",
    "stdbuf", "nice", "ionice", "taskset", "chrt", "time", "xargs",
];

/// The folders to search, in order, without duplicates; `dir` (the environment's choice) first.
pub fn places(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    // A folder someone chose (the variable, or a caller with a folder of its own) is the only
    // place: the registry is where agents are found when nobody said where.
    if env::var_os("HOTAGENT_SOCKET_DIR").is_some_and(|d| Path::new(&d).is_absolute())
        || dir != crate::discover::socket_dir()
    {
        return out;
    }
    out.push(registry_dir(my_uid()));
    if my_uid() == 0 {
        out.extend(every_registry());
    }
    dedup(out)
}

/// Every `/tmp/hotagent-<uid>` there is, by uid.
fn every_registry() -> Vec<PathBuf> {
    let parent = Path::new(REGISTRY_PREFIX)
        .parent()
        .unwrap_or(Path::new("/tmp"));
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir(parent)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let path = e.ok()?.path();
            Some((registry_uid(&path)?, path))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

fn dedup(list: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut seen = BTreeSet::new();
    list.into_iter()
        .filter(|p| seen.insert(p.components().collect::<PathBuf>()))
        .collect()
}

fn named(list: &[PathBuf]) -> String {
    let names: Vec<String> = list.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// [`scan`] of every folder of [`places`], one entry per pid (the first folder that has it).
/// A folder that fails the trust checks is an error when it is the environment's choice, and
/// otherwise a line in `unanswered`.
pub fn scan_everywhere(dir: &Path) -> Result<Scan> {
    let mut all = Scan::default();
    for (i, place) in places(dir).iter().enumerate() {
        let found = match scan(place) {
            Ok(found) => found,
            Err(err) if i == 0 => return Err(err),
            Err(err) => {
                let target = Target {
                    pid: 0,
                    socket: place.clone(),
                };
                all.unanswered.push((target, format!("{err:#}")));
                continue;
            }
        };
        let known = |pid: u32, all: &Scan| {
            all.agents.iter().any(|a| a.target.pid == pid)
                || all.unanswered.iter().any(|(t, _)| t.pid == pid)
        };
        for agent in found.agents {
            if !known(agent.target.pid, &all) {
                all.agents.push(agent);
            }
        }
        for (target, why) in found.unanswered {
            if !known(target.pid, &all) {
                all.unanswered.push((target, why));
            }
        }
        all.removed += found.removed;
    }
    all.agents.sort_by_key(|a| a.target.pid);
    Ok(all)
}

/// The agent to talk to: the one of `pid` wherever it listens, or else the only one found.
pub fn find(dir: &Path, pid: Option<u32>) -> Result<Target> {
    match pid {
        Some(pid) => find_pid(dir, pid),
        None => only_agent(dir),
    }
}

fn find_pid(dir: &Path, pid: u32) -> Result<Target> {
    let uids = Uids::of(pid);
    let mut list = places(dir);
    if env::var_os("HOTAGENT_SOCKET_DIR").is_none() {
        if let Some(own) = own_folder(pid) {
            list.insert(1, own);
        }
        if my_uid() == 0 {
            if let Some(u) = uids {
                list.extend([u.effective, u.real].map(registry_dir));
            }
        }
        list = dedup(list);
    }
    for place in &list {
        let socket = socket_path(place, pid);
        if fs::symlink_metadata(&socket).is_ok() {
            return Ok(Target { pid, socket });
        }
    }
    if let Some(u) = uids.filter(|u| my_uid() != 0 && !u.admit(my_uid())) {
        bail!(
            "process {pid} belongs to {}; only that user or root may drive its agent",
            who::describe(u.effective)
        );
    }
    let why = if client::process_running(pid) {
        format!("the process runs, but has no agent socket there ({HINT})")
    } else {
        "no such process".to_string()
    };
    bail!("no agent socket for pid {pid} in {}: {why}", named(&list))
}

/// The socket folder process `pid` chose by its own environment, if it can be read.
fn own_folder(pid: u32) -> Option<PathBuf> {
    let environ = crate::procfs::read(format!("/proc/{pid}/environ")).ok()?;
    let var = |name: &str| {
        environ.split(|&b| b == 0).find_map(|kv| {
            let value = kv.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
            Some(std::ffi::OsString::from(
                String::from_utf8_lossy(value).into_owned(),
            ))
        })
    };
    let uid = Uids::of(pid)?.effective;
    Some(hotagent_protocol::socket_dir(
        var("HOTAGENT_SOCKET_DIR"),
        var("XDG_RUNTIME_DIR"),
        uid,
    ))
}

fn only_agent(dir: &Path) -> Result<Target> {
    let list = places(dir);
    let mut scan = scan_everywhere(dir)?;
    let agents = without_launchers(std::mem::take(&mut scan.agents));
    match agents.len() {
        1 => Ok(agents.into_iter().next().expect("one").target),
        0 => {
            let mut msg = format!("no hotagent process found in {} ({HINT})", named(&list));
            for (target, why) in &scan.unanswered {
                msg.push_str(&format!("; {}: {why}", target.socket.display()));
            }
            bail!(msg)
        }
        _ => {
            let found: Vec<String> = agents
                .iter()
                .map(|a| format!("{} ({})", a.target.pid, a.status.exe))
                .collect();
            bail!(
                "several hotagent processes found in {}: {}; pass --pid to choose one",
                named(&list),
                found.join(", ")
            )
        }
    }
}

/// Drops every agent that runs a launcher ([`LAUNCHERS`]) whose child is another candidate
/// with another executable: `LD_PRELOAD=... ./wrap.sh` leaves the program, not the shell.
pub fn without_launchers(agents: Vec<Agent>) -> Vec<Agent> {
    let parents: Vec<(u32, Option<u32>, String)> = agents
        .iter()
        .map(|a| (a.target.pid, parent_of(a.target.pid), a.status.exe.clone()))
        .collect();
    agents
        .into_iter()
        .filter(|a| {
            let wraps = parents
                .iter()
                .any(|(_, ppid, exe)| *ppid == Some(a.target.pid) && *exe != a.status.exe);
            !(wraps && is_launcher(&a.status.exe))
        })
        .collect()
}

fn is_launcher(exe: &str) -> bool {
    let base = Path::new(exe)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    LAUNCHERS.contains(&base)
}

/// The parent pid, from `/proc/PID/stat` (after the last `)`: the name may hold anything).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = crate::procfs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launchers_by_name() {
        assert!(is_launcher("/usr/bin/bash"));
        assert!(is_launcher("/bin/sh"));
        assert!(!is_launcher("/usr/sbin/nginx"));
        assert!(!is_launcher(""));
    }

    #[test]
    fn parent_of_self() {
        let me = std::process::id();
        let expected = std::os::unix::process::parent_id();
        assert_eq!(parent_of(me), Some(expected));
        assert_eq!(parent_of(4_000_000_000), None);
    }

    #[test]
    fn places_dedup() {
        let a = PathBuf::from("/tmp/x");
        let list = dedup(vec![a.clone(), PathBuf::from("/tmp/x/"), a.clone()]);
        assert_eq!(list, vec![a]);
    }
}
