//! `hotctl persisted` and `hotctl forget`: the journal of patches later starts apply
//! (`hotagent_protocol::journal`), read and edited directly; no agent is involved.

use crate::cli::{ForgetArgs, Global};
use crate::render::{self, Align};
use crate::trust::my_uid;
use hotagent_protocol::journal::{self, Entry, Journal};
use serde::Serialize;
use std::io::Write;

#[derive(Debug, thiserror::Error)]
pub enum PersistedError {
    #[error("no state folder for the journal: set HOTAGENT_STATE_DIR (or HOME)")]
    NoStateDir,
    #[error("no persisted patches in {0} (set HOTAGENT_STATE_DIR to the folder the target uses)")]
    NoJournal(String),
    #[error("no persisted patch named {lib} in {dir}")]
    NoMatch { lib: String, dir: String },
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
}

fn open() -> Result<(Journal, Vec<(String, Entry)>), PersistedError> {
    let dir = journal::state_dir_from_env(my_uid()).ok_or(PersistedError::NoStateDir)?;
    let j = Journal::new(dir);
    let listed = match j.list() {
        Ok(l) => l,
        Err(_) if !j.entries_dir().exists() => {
            return Err(PersistedError::NoJournal(j.dir.display().to_string()))
        }
        Err(e) => return Err(e.into()),
    };
    let mut entries = Vec::new();
    for (id, e) in listed {
        match e {
            Ok(e) => entries.push((id, e)),
            Err(err) => eprintln!("hotctl: warning: {err}"),
        }
    }
    Ok((j, entries))
}

#[derive(Serialize)]
struct Listing<'a> {
    journal: String,
    entries: Vec<Row<'a>>,
}

#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    #[serde(flatten)]
    entry: &'a Entry,
}

pub fn list(global: &Global, out: &mut dyn Write) -> anyhow::Result<()> {
    let (j, entries) = open()?;
    if global.json {
        let doc = Listing {
            journal: j.dir.display().to_string(),
            entries: entries
                .iter()
                .map(|(id, entry)| Row { id, entry })
                .collect(),
        };
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
        return Ok(());
    }
    if entries.is_empty() {
        writeln!(out, "no persisted patches in {}", j.dir.display())?;
        return Ok(());
    }
    writeln!(out, "journal {}:", j.dir.display())?;
    let header = [
        "EXECUTABLE",
        "MODULE",
        "PATCH",
        "STATE",
        "RECORDED",
        "PROBATION",
    ]
    .map(String::from)
    .to_vec();
    let rows = entries.iter().map(|(_, e)| {
        let state = match &e.state {
            journal::EntryState::Failed { reason } => format!("failed: {reason}"),
            s if e.deferred => format!("{} (next start)", s.label()),
            s => s.label().to_string(),
        };
        vec![
            e.exe.clone(),
            e.module.clone(),
            e.patch.clone(),
            state,
            format!(
                "{} s ago",
                journal::now_secs().saturating_sub(e.recorded_at)
            ),
            e.probation_ms
                .map_or_else(|| "default".to_string(), |ms| format!("{ms} ms")),
        ]
    });
    let rows: Vec<Vec<String>> = std::iter::once(header).chain(rows).collect();
    render::table(out, "", &[Align::Left; 6], &rows)?;
    Ok(())
}

/// Does `lib` name this entry's patch, by path or by file name?
fn names(lib: &str, e: &Entry) -> bool {
    e.patch == lib || std::path::Path::new(&e.patch).file_name() == Some(lib.as_ref())
}

pub fn forget(args: &ForgetArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let (j, entries) = open()?;
    // A relative LIB names a file under the working folder, as for reload.
    let absolute = args
        .lib
        .as_deref()
        .and_then(|l| std::path::absolute(l).ok().map(|p| p.display().to_string()));
    let mut removed = 0;
    for (id, e) in &entries {
        let hit = args.all
            || args
                .lib
                .as_deref()
                .is_some_and(|l| names(l, e) || absolute.as_deref().is_some_and(|a| names(a, e)));
        if hit {
            j.remove(id)?;
            removed += 1;
        }
    }
    if removed == 0 && !args.all {
        return Err(PersistedError::NoMatch {
            lib: args.lib.clone().unwrap_or_default(),
            dir: j.dir.display().to_string(),
        }
        .into());
    }
    writeln!(
        out,
        "forgot {} in {}",
        render::count(removed, "persisted patch"),
        j.dir.display()
    )?;
    Ok(())
}
