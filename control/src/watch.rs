//! `hotctl watch PATH...`: the developer loop. Each rebuild of a watched library is reloaded
//! into the target once it is complete; a build the agent refuses leaves the target on its last
//! good generation.
//!
//! Every reload stacks a generation, as `hotctl reload` does: rolling the previous watch
//! generation back first would run the original code between the two steps (a game would draw
//! a frame or two of its first build), and a refused build would leave the target on the
//! original instead of the last good one. So `hotctl rollback` afterwards undoes one edit at a
//! time; each generation keeps its library mapped, which a development session can afford.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::{Args, FromArgMatches};
use hotagent_protocol::{Request, Response};
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::cli::{Global, ReloadArgs, WatchArgs};
use crate::client::{self, AgentError, Target, QUICK_TIMEOUT};
use crate::fleet::{self, Selection};
use crate::{elf_ready, reload};

/// How often a file that changed is looked at again until it has been quiet long enough.
const POLL: Duration = Duration::from_millis(25);

enum Msg {
    Fs(notify::Result<notify::Event>),
    Stop(i32),
}

/// What a watched file looked like when last seen: size and modification time.
type Stamp = Option<(u64, SystemTime)>;

/// One watched library.
struct Watched {
    path: PathBuf,
    /// A change was seen and has not been dealt with.
    pending: bool,
    /// The last writer closed the file (or it was renamed into place) since the last write.
    closed: bool,
    stamp: Stamp,
    quiet_since: Instant,
    /// The "not complete yet" note was printed for this change.
    noted: bool,
    /// SHA-256 of the bytes last loaded (or found at the start): the same bytes are not
    /// loaded twice.
    loaded: Option<[u8; 32]>,
}

pub fn run(
    dir: &Path,
    global: &Global,
    pids: &[u32],
    args: &WatchArgs,
    out: &mut dyn Write,
) -> Result<()> {
    // The selectors of reload: each complete rebuild goes to every process they choose.
    let targets: Vec<Target> = match fleet::select(dir, global.pid, pids, &args.select)? {
        Selection::One(target) => vec![target],
        Selection::Many(many) => many.into_iter().map(|m| m.target).collect(),
    };
    let mut watched: Vec<(Target, u32)> = Vec::with_capacity(targets.len());
    for target in targets {
        let generation = current_generation(&target)?;
        watched.push((target, generation));
    }
    let mut files = watched_files(&args.paths)?;

    let (tx, rx) = mpsc::channel();
    let fs_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |ev| {
        let _ = fs_tx.send(Msg::Fs(ev));
    })
    .context("cannot start watching files (inotify)")?;
    let mut folders: Vec<&Path> = files.iter().filter_map(|f| f.path.parent()).collect();
    folders.sort();
    folders.dedup();
    for folder in folders {
        // The folder, not the file: a build that replaces the file (unlink, rename) would end a
        // watch on the file itself.
        watcher
            .watch(folder, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", folder.display()))?;
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("cannot handle SIGINT and SIGTERM")?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let _ = tx.send(Msg::Stop(sig));
        }
    });
    eprintln!(
        "hotctl: watching {} for {}; Ctrl-C to stop",
        files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        watched
            .iter()
            .map(|(t, g)| format!("pid {} (generation {g})", t.pid))
            .collect::<Vec<_>>()
            .join(", ")
    );

    loop {
        let msg = if files.iter().any(|f| f.pending) {
            match rx.recv_timeout(POLL) {
                Ok(msg) => Some(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the file watch ended"),
            }
        } else {
            Some(rx.recv().context("the file watch ended")?)
        };
        match msg {
            Some(Msg::Stop(sig)) => {
                let name = if sig == signal_hook::consts::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                for (target, generation) in &watched {
                    eprintln!(
                        "hotctl: watch stopped ({name}); pid {} stays at generation {generation}",
                        target.pid
                    );
                }
                return Ok(());
            }
            Some(Msg::Fs(Ok(event))) => note_event(&mut files, &event),
            Some(Msg::Fs(Err(err))) => eprintln!("hotctl: watch: {err}"),
            None => {}
        }
        for file in files.iter_mut().filter(|f| f.pending) {
            if let Some(bytes) = ready(file, args.debounce) {
                let many = watched.len() > 1;
                for (target, generation) in &mut watched {
                    reload_one(target, global, file, &bytes, generation, many, out)?;
                }
            }
        }
    }
}

/// Each PATH made absolute (its folder must exist; the file itself may appear later).
fn watched_files(paths: &[PathBuf]) -> Result<Vec<Watched>> {
    let mut files: Vec<Watched> = Vec::new();
    for path in paths {
        let (Some(folder), Some(name)) = (path.parent(), path.file_name()) else {
            bail!("{}: not a file path", path.display());
        };
        let folder = if folder.as_os_str().is_empty() {
            Path::new(".")
        } else {
            folder
        };
        let folder = std::fs::canonicalize(folder)
            .with_context(|| format!("{}: its folder cannot be watched", path.display()))?;
        let path = folder.join(name);
        if files.iter().any(|f| f.path == path) {
            continue;
        }
        let loaded = std::fs::read(&path).ok().map(|b| sha256(&b));
        files.push(Watched {
            stamp: stamp(&path),
            path,
            pending: false,
            closed: false,
            quiet_since: Instant::now(),
            noted: false,
            loaded,
        });
    }
    Ok(files)
}

fn current_generation(target: &Target) -> Result<u32> {
    match target.exchange(&Request::status(), QUICK_TIMEOUT)? {
        Response::Status(report) => Ok(report.generation),
        other => Err(client::unexpected(other, "status")),
    }
}

/// Records what an event says about the files it names.
fn note_event(files: &mut [Watched], event: &notify::Event) {
    for file in files.iter_mut() {
        if !event.paths.contains(&file.path) {
            continue;
        }
        file.pending = true;
        file.quiet_since = Instant::now();
        match event.kind {
            // A writer finished, or a finished file was moved into place.
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_)) => file.closed = true,
            EventKind::Modify(ModifyKind::Metadata(_)) | EventKind::Access(_) => {}
            // Written to, created or removed: a writer is at work.
            _ => file.closed = false,
        }
    }
}

/// The file's bytes when its change is complete: closed by its writer, size and time unchanged
/// over the quiet period, and a whole ELF shared object.
fn ready(file: &mut Watched, quiet: Duration) -> Option<Vec<u8>> {
    let now_stamp = stamp(&file.path);
    if now_stamp != file.stamp {
        file.stamp = now_stamp;
        file.quiet_since = Instant::now();
        return None;
    }
    if !file.closed || file.quiet_since.elapsed() < quiet || now_stamp.is_none() {
        return None;
    }
    let bytes = std::fs::read(&file.path).ok()?;
    if stamp(&file.path) != now_stamp {
        return None;
    }
    if let Err(why) = elf_ready::check(&bytes) {
        // Stable yet incomplete: a writer that closes between chunks, or a broken build. Wait
        // for the next write; say so once.
        if !file.noted {
            eprintln!(
                "hotctl: waiting: {} is not a complete shared library yet ({why})",
                file.path.display()
            );
            file.noted = true;
        }
        file.closed = false;
        return None;
    }
    file.pending = false;
    file.noted = false;
    let digest = sha256(&bytes);
    if file.loaded == Some(digest) {
        eprintln!(
            "hotctl: {} unchanged (same bytes as last loaded): not reloaded",
            file.path.display()
        );
        return None;
    }
    Some(bytes)
}

/// Reloads one complete build and prints its one line; only a target that is gone ends the watch.
fn reload_one(
    target: &Target,
    global: &Global,
    file: &mut Watched,
    bytes: &[u8],
    generation: &mut u32,
    many: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let shown = file.path.display().to_string();
    // With several processes, each line says whose it is.
    let who = match many {
        true => format!("pid {}: ", target.pid),
        false => String::new(),
    };
    let result = reload::request(&reload_args(&file.path)?)
        .and_then(|request| reload::exchange(target, global, request));
    let line = match result {
        Ok(report) => {
            file.loaded = Some(sha256(bytes));
            *generation = report.generation;
            if global.json {
                json!({"event": "reloaded", "pid": target.pid, "path": shown, "generation": report.generation, "report": report})
                    .to_string()
            } else {
                format!(
                    "{who}generation {}: {} reloaded ({} replaced, {}, {}, {})",
                    report.generation,
                    shown,
                    report.module,
                    crate::render::count(report.symbols.len(), "symbol"),
                    crate::render::count(report.slots, "slot"),
                    crate::render::micros(report.elapsed_us)
                )
            }
        }
        Err(err) => {
            // The agent's refusal keeps its code; hotctl's own failures (a timeout, say) are
            // "failed", and end the watch only when the target is gone.
            let (code, message) = match err.downcast_ref::<AgentError>() {
                Some(AgentError(reply)) => (json!(reply.code), one_line(&reply.message)),
                None if !client::process_running(target.pid) => {
                    return Err(err.context(format!("the target (pid {}) is gone", target.pid)))
                }
                None => (json!("failed"), one_line(&format!("{err:#}"))),
            };
            if global.json {
                json!({"event": "refused", "pid": target.pid, "path": shown, "generation": *generation,
                       "error": {"code": code, "message": message}})
                .to_string()
            } else {
                format!("{who}refused: {shown}: {message} (generation {generation} stays)")
            }
        }
    };
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// The arguments `hotctl reload PATH` would have, whatever options reload has.
fn reload_args(path: &Path) -> Result<ReloadArgs> {
    let command = ReloadArgs::augment_args(clap::Command::new("reload"));
    let matches = command
        .try_get_matches_from([std::ffi::OsStr::new("reload"), path.as_os_str()])
        .context("reload arguments")?;
    Ok(ReloadArgs::from_arg_matches(&matches)?)
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_args_are_reloads_defaults() {
        let args = reload_args(Path::new("/x/libfoo.so")).unwrap();
        assert_eq!(args.path, Path::new("/x/libfoo.so"));
        assert!(!args.dry_run && !args.no_probe && args.replace.is_none());
    }

    #[test]
    fn a_file_is_ready_only_once_closed_and_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libx.so");
        std::fs::write(&path, b"not elf").unwrap();
        let mut files = watched_files(std::slice::from_ref(&path)).unwrap();
        let file = &mut files[0];
        file.pending = true;
        assert!(ready(file, Duration::ZERO).is_none(), "not closed yet");
        file.closed = true;
        // Closed and quiet, but not an ELF: waited for, not loaded.
        assert!(ready(file, Duration::ZERO).is_none());
        assert!(file.pending && !file.closed && file.noted);
    }
}
