//! The persistence journal: patches a later start of an executable applies before its `main`.
//! The agent writes it and reads it at start-up; hotctl lists and edits it; both resolve the same
//! folder, so the rules live here once.
//!
//! Layout under the state folder:
//! - `entries/<id>.json`: one file per entry, replaced whole by rename (temp file in the same
//!   folder, fsync, rename), so two processes recording at once never interleave bytes and a
//!   crash never leaves half an entry;
//! - `marks/<id>.crashed`: made by the probation signal handler with one `open(O_CREAT)` of a
//!   path computed before the generation went live (no allocation, no lock in a handler);
//! - `marks/<id>.attempt`: the pid and start time of a process applying the entry at start-up,
//!   removed after; one left behind by a process that is gone means the application killed it.
//!
//! `<id>` hashes the key (executable path and build-id, replaced module's soname and build-id,
//! patch path), so recording the same patch again updates its entry in place.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const ENTRIES_DIR: &str = "entries";
pub const MARKS_DIR: &str = "marks";
const CRASHED: &str = "crashed";
const ATTEMPT: &str = "attempt";

/// The state folder: `$HOTAGENT_STATE_DIR`; else `/var/lib/hotagent` for root; else
/// `$XDG_STATE_HOME/hotagent`; else `~/.local/state/hotagent`. Relative values count as unset,
/// as for the socket folder. None: no home to put it in.
pub fn state_dir(
    hotagent_dir: Option<OsString>,
    xdg_state: Option<OsString>,
    home: Option<OsString>,
    euid: u32,
) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|s| Path::new(s).is_absolute()).map(PathBuf::from);
    if let Some(d) = set(hotagent_dir) {
        return Some(d);
    }
    if euid == 0 {
        return Some(PathBuf::from("/var/lib/hotagent"));
    }
    if let Some(x) = set(xdg_state) {
        return Some(x.join("hotagent"));
    }
    set(home).map(|h| h.join(".local/state/hotagent"))
}

/// [`state_dir`] from this process's environment.
pub fn state_dir_from_env(euid: u32) -> Option<PathBuf> {
    state_dir(
        std::env::var_os("HOTAGENT_STATE_DIR"),
        std::env::var_os("XDG_STATE_HOME"),
        std::env::var_os("HOME"),
        euid,
    )
}

/// What became of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EntryState {
    /// Applied at every start of its executable.
    Active,
    /// Rolled back by probation (a crash marker exists): never applied again.
    Crashed,
    /// Its start-up application failed, or killed the process: never applied again.
    Failed { reason: String },
}

impl EntryState {
    pub fn label(&self) -> &'static str {
        match self {
            EntryState::Active => "active",
            EntryState::Crashed => "crashed",
            EntryState::Failed { .. } => "failed",
        }
    }
}

/// One persisted patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The executable as the agent knows it (the path it was started with).
    pub exe: String,
    /// Its GNU build-id (hex), when it has one.
    pub exe_build_id: Option<String>,
    /// The replaced module's soname (its file name when it has none).
    pub module: String,
    pub module_build_id: Option<String>,
    /// The patch file (absolute) and the sha256 of its bytes when recorded.
    pub patch: String,
    pub sha256: String,
    /// Seconds since the epoch.
    pub recorded_at: u64,
    /// Probation for a start-up application; None: the agent's default.
    #[serde(default)]
    pub probation_ms: Option<u64>,
    /// Accepted with `--on-next-start`: it could not be applied live.
    #[serde(default)]
    pub deferred: bool,
    #[serde(flatten)]
    pub state: EntryState,
}

impl Entry {
    /// The file-name stem of this entry: a hash of its key.
    pub fn id(&self) -> String {
        entry_id(
            &self.exe,
            self.exe_build_id.as_deref(),
            &self.module,
            self.module_build_id.as_deref(),
            &self.patch,
        )
    }
}

pub fn entry_id(
    exe: &str,
    exe_build_id: Option<&str>,
    module: &str,
    module_build_id: Option<&str>,
    patch: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        exe,
        exe_build_id.unwrap_or(""),
        module,
        module_build_id.unwrap_or(""),
        patch,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize()[..16])
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of a file's bytes, in hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex(&h.finalize()))
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: not a journal entry: {1}")]
    Corrupt(String, String),
    #[error("{0}")]
    Untrusted(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Refuses a file or folder another user could have written: owned by someone other than `euid`
/// or root, or writable by group or others. A journal must never become a way into someone
/// else's process. Links are not followed.
pub fn check_trusted(path: &Path, euid: u32) -> Result<(), JournalError> {
    let m = std::fs::symlink_metadata(path).map_err(io(path))?;
    if m.file_type().is_symlink() {
        return Err(JournalError::Untrusted(format!(
            "{} is a symbolic link",
            path.display()
        )));
    }
    if m.uid() != euid && m.uid() != 0 {
        return Err(JournalError::Untrusted(format!(
            "{} is owned by uid {}, not by {euid} or root",
            path.display(),
            m.uid()
        )));
    }
    if m.mode() & 0o022 != 0 {
        return Err(JournalError::Untrusted(format!(
            "{} is writable by {} (mode {:o})",
            path.display(),
            if m.mode() & 0o002 != 0 {
                "others"
            } else {
                "its group"
            },
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

/// One entry file as listed: its id, and the entry or why it cannot be read.
pub type Listed = (String, Result<Entry, JournalError>);

/// The journal in one state folder.
#[derive(Debug, Clone)]
pub struct Journal {
    pub dir: PathBuf,
}

impl Journal {
    pub fn new(dir: PathBuf) -> Journal {
        Journal { dir }
    }

    pub fn entries_dir(&self) -> PathBuf {
        self.dir.join(ENTRIES_DIR)
    }

    pub fn entry_path(&self, id: &str) -> PathBuf {
        self.entries_dir().join(format!("{id}.json"))
    }

    pub fn crash_marker(&self, id: &str) -> PathBuf {
        self.dir.join(MARKS_DIR).join(format!("{id}.{CRASHED}"))
    }

    pub fn attempt_marker(&self, id: &str) -> PathBuf {
        self.dir.join(MARKS_DIR).join(format!("{id}.{ATTEMPT}"))
    }

    /// Makes the folders (mode 0700) if missing.
    pub fn create_dirs(&self) -> Result<(), JournalError> {
        for d in [
            self.dir.clone(),
            self.entries_dir(),
            self.dir.join(MARKS_DIR),
        ] {
            match std::fs::DirBuilder::new().mode(0o700).create(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    // The state folder's parents may be missing too (a fresh home).
                    if d == self.dir && e.kind() == std::io::ErrorKind::NotFound {
                        std::fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o700)
                            .create(&d)
                            .map_err(io(&d))?;
                    } else {
                        return Err(io(&d)(e));
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes `entry` atomically (a fresh entry or an update) and clears its marks: recording a
    /// patch again is the operator's word that it may run. Returns the entry's file.
    pub fn record(&self, entry: &Entry) -> Result<PathBuf, JournalError> {
        self.create_dirs()?;
        let id = entry.id();
        self.write(&id, entry)?;
        for m in [self.crash_marker(&id), self.attempt_marker(&id)] {
            let _ = std::fs::remove_file(m);
        }
        Ok(self.entry_path(&id))
    }

    fn write(&self, id: &str, entry: &Entry) -> Result<(), JournalError> {
        let dest = self.entry_path(id);
        let tmp = self
            .entries_dir()
            .join(format!(".{id}.{}.tmp", std::process::id()));
        let text = serde_json::to_vec_pretty(entry)
            .map_err(|e| JournalError::Corrupt(dest.display().to_string(), e.to_string()))?;
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &dest)?;
            std::fs::File::open(self.entries_dir())?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io(&dest))
    }

    /// Marks an entry failed, for good.
    pub fn mark_failed(&self, id: &str, reason: &str) -> Result<(), JournalError> {
        let mut e = self.read(id)?;
        e.state = EntryState::Failed {
            reason: reason.to_string(),
        };
        self.write(id, &e)
    }

    /// One entry as stored, with `Crashed` when its crash marker exists.
    pub fn read(&self, id: &str) -> Result<Entry, JournalError> {
        let path = self.entry_path(id);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let mut e: Entry = serde_json::from_slice(&bytes)
            .map_err(|err| JournalError::Corrupt(path.display().to_string(), err.to_string()))?;
        if e.state == EntryState::Active && self.crash_marker(id).exists() {
            e.state = EntryState::Crashed;
        }
        Ok(e)
    }

    /// Every entry (id, entry), sorted by id; unreadable ones as errors. A missing journal
    /// answers `Err(Io(NotFound))`.
    pub fn list(&self) -> Result<Vec<Listed>, JournalError> {
        let dir = self.entries_dir();
        let mut out = Vec::new();
        for d in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let d = d.map_err(io(&dir))?;
            let name = d.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if id.starts_with('.') {
                continue;
            }
            out.push((id.to_string(), self.read(id)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Removes an entry and its marks.
    pub fn remove(&self, id: &str) -> Result<(), JournalError> {
        let path = self.entry_path(id);
        std::fs::remove_file(&path).map_err(io(&path))?;
        for m in [self.crash_marker(id), self.attempt_marker(id)] {
            let _ = std::fs::remove_file(m);
        }
        Ok(())
    }

    /// Leaves the attempt marker for `id`: `pid start_time` (clock ticks since boot, from
    /// `/proc/<pid>/stat`), so a later start tells a live applier from a dead one.
    pub fn begin_attempt(&self, id: &str, pid: u32, start: u64) -> Result<(), JournalError> {
        let path = self.attempt_marker(id);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        f.write_all(format!("{pid} {start}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io(&path))
    }

    pub fn end_attempt(&self, id: &str) {
        let _ = std::fs::remove_file(self.attempt_marker(id));
    }

    /// The (pid, start time) an attempt marker names, if one is there.
    pub fn attempt(&self, id: &str) -> Option<(u32, u64)> {
        let text = std::fs::read_to_string(self.attempt_marker(id)).ok()?;
        let mut it = text.split_whitespace();
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`), None when it is gone.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence() {
        let d = |a: Option<&str>, x: Option<&str>, h: Option<&str>, u| {
            state_dir(a.map(Into::into), x.map(Into::into), h.map(Into::into), u)
        };
        assert_eq!(d(Some("/s"), None, None, 0), Some("/s".into()));
        assert_eq!(
            d(Some("rel"), Some("/x"), None, 0),
            Some("/var/lib/hotagent".into())
        );
        assert_eq!(
            d(None, Some("/x"), Some("/h"), 5),
            Some("/x/hotagent".into())
        );
        assert_eq!(
            d(None, None, Some("/h"), 5),
            Some("/h/.local/state/hotagent".into())
        );
        assert_eq!(d(None, None, None, 5), None);
    }

    #[test]
    fn record_read_fail_remove() {
        let dir = std::env::temp_dir().join(format!("hotagent-journal-{}", std::process::id()));
        let j = Journal::new(dir.clone());
        let e = Entry {
            exe: "/bin/x".into(),
            exe_build_id: Some("ab".into()),
            module: "libm.so".into(),
            module_build_id: None,
            patch: "/p/libm.so".into(),
            sha256: "00".into(),
            recorded_at: 1,
            probation_ms: None,
            deferred: false,
            state: EntryState::Active,
        };
        let path = j.record(&e).unwrap();
        assert!(path.ends_with(format!("{}.json", e.id())));
        assert_eq!(j.read(&e.id()).unwrap(), e);
        std::fs::write(j.crash_marker(&e.id()), b"").unwrap();
        assert_eq!(j.read(&e.id()).unwrap().state, EntryState::Crashed);
        j.mark_failed(&e.id(), "why").unwrap();
        assert_eq!(j.read(&e.id()).unwrap().state.label(), "failed");
        assert_eq!(j.list().unwrap().len(), 1);
        j.remove(&e.id()).unwrap();
        assert!(j.list().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn start_time_of_self() {
        assert!(process_start(std::process::id()).is_some());
    }
}
