//! Turning `--pid`, `--exe` and `--all` into the processes to act on.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::cli::Select;
use crate::client::Target;
use crate::discover;

/// A selected process.
#[derive(Debug, Clone)]
pub struct Member {
    pub target: Target,
    /// The executable, as its agent reports it (or /proc names it, when not asked yet).
    pub exe: String,
    /// Its generation when selected, if a status answer told.
    pub generation: Option<u32>,
}

/// What the selectors chose.
#[derive(Debug)]
pub enum Selection {
    /// One process: the verb behaves (and prints) exactly as it always did.
    One(Target),
    /// Several, in pid order.
    Many(Vec<Member>),
}

/// The processes that `--pid` (`pid` when given once, `pids` all of them), `--exe` and `--all`
/// name in `dir`; without any, the only agent there.
pub fn select(dir: &Path, pid: Option<u32>, pids: &[u32], select: &Select) -> Result<Selection> {
    if !select.all && select.exe.is_none() {
        if pids.len() <= 1 {
            return Ok(Selection::One(discover::find(dir, pid)?));
        }
        let unique: BTreeSet<u32> = pids.iter().copied().collect();
        let mut members = Vec::with_capacity(unique.len());
        for pid in unique {
            let target = discover::find(dir, Some(pid))?;
            let exe = proc_exe(pid).map_or_else(|| "?".into(), |p| p.display().to_string());
            members.push(Member {
                target,
                exe,
                generation: None,
            });
        }
        return Ok(many_or_one(members));
    }
    let scan = discover::scan_everywhere(dir)?;
    let members: Vec<Member> = scan
        .agents
        .into_iter()
        .filter(|a| {
            select
                .exe
                .as_deref()
                .is_none_or(|want| exe_matches(want, a.target.pid, &a.status.exe))
        })
        .map(|a| Member {
            target: a.target,
            exe: a.status.exe,
            generation: Some(a.status.generation),
        })
        .collect();
    if members.is_empty() {
        let what = match &select.exe {
            Some(exe) => format!("no hotagent process of {exe} found"),
            None => "no hotagent process found".into(),
        };
        let mut msg = format!("{what} in {}", dir.display());
        for (target, why) in &scan.unanswered {
            msg.push_str(&format!("; {}: {why}", target.socket.display()));
        }
        bail!(msg);
    }
    Ok(many_or_one(members))
}

fn many_or_one(mut members: Vec<Member>) -> Selection {
    if members.len() == 1 {
        Selection::One(members.remove(0).target)
    } else {
        Selection::Many(members)
    }
}

fn proc_exe(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Whether `want` (a path, or a bare file name) names the executable of `pid`, which its agent
/// reports as `started_as` (a program started through a link is named by the link).
fn exe_matches(want: &str, pid: u32, started_as: &str) -> bool {
    let names = [Some(PathBuf::from(started_as)), proc_exe(pid)];
    let names = names.iter().flatten();
    if want.contains('/') {
        let want_real = fs::canonicalize(want).ok();
        names.into_iter().any(|n| {
            n == Path::new(want) || (want_real.is_some() && fs::canonicalize(n).ok() == want_real)
        })
    } else {
        names
            .into_iter()
            .any(|n| n.file_name().is_some_and(|f| f == want))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exe_names_and_paths() {
        let me = std::process::id();
        let real = proc_exe(me).unwrap();
        let name = real.file_name().unwrap().to_str().unwrap().to_string();
        assert!(exe_matches(&name, me, "/somewhere/else"));
        assert!(exe_matches(real.to_str().unwrap(), me, "/somewhere/else"));
        assert!(exe_matches("else", me, "/somewhere/else"));
        assert!(exe_matches("/somewhere/else", me, "/somewhere/else"));
        assert!(!exe_matches("nothing-like-it", me, "/somewhere/else"));
        assert!(!exe_matches("/somewhere", me, "/somewhere/else"));
    }
}
