//! `hotctl list`: the processes of this user that run the agent.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use crate::cli::Global;
use crate::discover::{self, Scan};
use crate::render::{self, Align};
use crate::{clock, users};
use hotagent_protocol::StatusReport;

pub fn run(dir: &Path, global: &Global, out: &mut dyn Write) -> Result<()> {
    let scan = discover::scan_everywhere(dir)?;
    // On stderr, so that the table and the JSON stay exactly what they claim to be.
    for (target, why) in &scan.unanswered {
        eprintln!(
            "hotctl: warning: skipped {}: {why}",
            target.socket.display()
        );
    }
    if global.json {
        render::json(out, &to_json(&scan))?;
    } else {
        human(out, dir, &scan)?;
    }
    Ok(())
}

/// What each module's newest generation replaced it with, and since when.
struct Replaced<'a> {
    module: &'a str,
    path: &'a str,
    generation: u32,
    since_unix_ms: Option<u64>,
}

fn replaced(status: &StatusReport) -> Vec<Replaced<'_>> {
    let mut out: Vec<Replaced<'_>> = Vec::new();
    for g in &status.generations {
        let r = Replaced {
            module: &g.module,
            path: &g.path,
            generation: g.generation,
            since_unix_ms: g.since_unix_ms,
        };
        match out.iter_mut().find(|r| r.module == g.module) {
            Some(slot) => *slot = r,
            None => out.push(r),
        }
    }
    out
}

/// When the current generation became current, if the agent remembers.
fn since(status: &StatusReport) -> Option<u64> {
    status
        .generations
        .iter()
        .find(|g| g.generation == status.generation)
        .and_then(|g| g.since_unix_ms)
}

fn user(pid: u32) -> (Option<u32>, String) {
    let uid = users::uid_of(pid);
    (uid, uid.map_or_else(|| "?".to_string(), users::name_of))
}

fn to_json(scan: &Scan) -> serde_json::Value {
    scan.agents
        .iter()
        .map(|agent| {
            let (uid, name) = user(agent.target.pid);
            let replaced: Vec<_> = replaced(&agent.status)
                .iter()
                .map(|r| json!({"module": r.module, "path": r.path, "generation": r.generation, "since_unix_ms": r.since_unix_ms}))
                .collect();
            json!({
                "pid": agent.target.pid,
                "uid": uid,
                "user": name,
                "exe": agent.status.exe,
                "generation": agent.status.generation,
                "replaced": replaced,
                "since_unix_ms": since(&agent.status),
                "socket": agent.target.socket.to_string_lossy(),
            })
        })
        .collect()
}

fn human(out: &mut dyn Write, dir: &Path, scan: &Scan) -> std::io::Result<()> {
    if scan.agents.is_empty() {
        let searched: Vec<String> = crate::places::places(dir)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        return writeln!(
            out,
            "no hotagent process found in {} (a target started with HOTAGENT_SOCKET_DIR=DIR is \
             listed with the same HOTAGENT_SOCKET_DIR=DIR here)",
            searched.join(", ")
        );
    }
    let header = ["PID", "USER", "GEN", "EXE", "REPLACED", "SINCE"]
        .map(String::from)
        .to_vec();
    let rows = scan.agents.iter().map(|agent| {
        let s = &agent.status;
        let replaced: Vec<String> = replaced(s)
            .iter()
            .map(|r| format!("{} -> {}", r.module, r.path))
            .collect();
        let dash = |v: String| if v.is_empty() { "-".to_string() } else { v };
        vec![
            agent.target.pid.to_string(),
            user(agent.target.pid).1,
            s.generation.to_string(),
            s.exe.clone(),
            dash(replaced.join(", ")),
            since(s).map_or_else(|| "-".to_string(), clock::utc),
        ]
    });
    let rows: Vec<Vec<String>> = std::iter::once(header).chain(rows).collect();
    let align = [
        Align::Right,
        Align::Left,
        Align::Right,
        Align::Left,
        Align::Left,
    ];
    render::table(out, "", &align, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Target;
    use crate::testing::{generation, status_agent, status_report};
    use hotagent_protocol::socket_path;
    use std::os::unix::net::UnixListener;

    fn list(dir: &Path, json: bool) -> String {
        let mut out = Vec::new();
        run(
            dir,
            &Global {
                pid: None,
                json,
                timeout: None,
                settle: None,
                hook_timeout: None,
                quiet: false,
                verbose: false,
            },
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lists_live_agents_and_skips_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let stale = socket_path(dir.path(), 4_000_000_000);
        drop(UnixListener::bind(&stale).unwrap());
        let b = status_agent(dir.path(), "/usr/bin/b");
        let a = status_agent(dir.path(), "/usr/bin/a");
        let mut agents = [(&b, "/usr/bin/b"), (&a, "/usr/bin/a")];
        agents.sort_by_key(|(t, _)| t.pid);

        let width = agents[1].0.pid.to_string().len().max(3);
        let name = |pid| user(pid).1;
        let uwidth = agents
            .iter()
            .map(|(t, _)| name(t.pid).len())
            .max()
            .unwrap()
            .max(4);
        let mut table = format!(
            "{:>width$}  {:<uwidth$}  GEN  EXE         REPLACED  SINCE\n",
            "PID", "USER"
        );
        for (t, exe) in agents {
            let u = name(t.pid);
            table.push_str(&format!(
                "{:>width$}  {u:<uwidth$}    0  {exe:<10}  -         -\n",
                t.pid
            ));
        }
        assert_eq!(list(dir.path(), false), table);
        // The stale socket was ours and its process is gone: the scan removed it.
        assert!(!stale.exists());

        let json: serde_json::Value = serde_json::from_str(&list(dir.path(), true)).unwrap();
        let entry = |(t, exe): (&Target, &str)| {
            let (uid, user) = user(t.pid);
            json!({"pid": t.pid, "uid": uid, "user": user, "exe": exe, "generation": 0, "replaced": [], "since_unix_ms": null, "socket": t.socket.to_str().unwrap()})
        };
        assert_eq!(json, json!([entry(agents[0]), entry(agents[1])]));
    }

    /// Each module's newest generation is what replaces it now; since when is the current one's.
    #[test]
    fn replaced_modules_and_since() {
        let mut s = status_report(1, "/bin/x");
        let mut g1 = generation(1, "/p/libfoo_v2.so");
        g1.since_unix_ms = Some(1_000);
        let mut g2 = generation(2, "/p/libbar_v2.so");
        g2.module = "libbar.so".into();
        let mut g3 = generation(3, "/p/libfoo_v3.so");
        g3.since_unix_ms = Some(3_000);
        s.generations = vec![g1, g2, g3];
        s.generation = 3;
        let r: Vec<(&str, &str)> = replaced(&s).iter().map(|r| (r.module, r.path)).collect();
        assert_eq!(
            r,
            [
                ("libfoo.so", "/p/libfoo_v3.so"),
                ("libbar.so", "/p/libbar_v2.so")
            ]
        );
        assert_eq!(since(&s), Some(3_000));
    }

    #[test]
    fn empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(list(dir.path(), true), "[]\n");
        assert!(list(dir.path(), false).starts_with("no hotagent process found in "));
    }
}
