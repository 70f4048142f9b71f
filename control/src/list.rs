//! `hotctl list`: the processes of this user that run the agent.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use crate::cli::Global;
use crate::discover::{self, Scan};
use crate::render::{self, Align};

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

fn to_json(scan: &Scan) -> serde_json::Value {
    scan.agents
        .iter()
        .map(|agent| {
            json!({
                "pid": agent.target.pid,
                "exe": agent.status.exe,
                "generation": agent.status.generation,
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
    let header = ["PID", "GEN", "EXE"].map(String::from).to_vec();
    let rows = scan.agents.iter().map(|agent| {
        vec![
            agent.target.pid.to_string(),
            agent.status.generation.to_string(),
            agent.status.exe.clone(),
        ]
    });
    let rows: Vec<Vec<String>> = std::iter::once(header).chain(rows).collect();
    render::table(out, "", &[Align::Right, Align::Right, Align::Left], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Target;
    use crate::testing::status_agent;
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
        let mut table = format!("{:>width$}  GEN  EXE\n", "PID");
        for (t, exe) in agents {
            table.push_str(&format!("{:>width$}    0  {exe}\n", t.pid));
        }
        assert_eq!(list(dir.path(), false), table);
        // The stale socket was ours and its process is gone: the scan removed it.
        assert!(!stale.exists());

        let json: serde_json::Value = serde_json::from_str(&list(dir.path(), true)).unwrap();
        let entry = |(t, exe): (&Target, &str)| json!({"pid": t.pid, "exe": exe, "generation": 0, "socket": t.socket.to_str().unwrap()});
        assert_eq!(json, json!([entry(agents[0]), entry(agents[1])]));
    }

    #[test]
    fn empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(list(dir.path(), true), "[]\n");
        assert!(list(dir.path(), false).starts_with("no hotagent process found in "));
    }
}
