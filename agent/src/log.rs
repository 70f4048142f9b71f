//! The agent's logging, configured by `HOTAGENT_LOG` alone (never `RUST_LOG`: the target may be a
//! Rust program using it). By default only warnings reach the target's stderr.
//!
//! `HOTAGENT_LOG` is a comma-separated list of filter directives (`debug`, `hotagent=trace`) and
//! at most one `file=PATH`, which sends the log to PATH instead of stderr.

mod warnings;

use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

/// The parsed setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSpec {
    pub filter: String,
    pub file: Option<String>,
}

pub fn parse(value: Option<&str>) -> LogSpec {
    let mut filter = Vec::new();
    let mut file = None;
    for part in value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part.strip_prefix("file=") {
            Some(path) if !path.is_empty() => file = Some(path.to_string()),
            _ => filter.push(part),
        }
    }
    let filter = if filter.is_empty() {
        "warn".to_string()
    } else {
        filter.join(",")
    };
    LogSpec { filter, file }
}

/// Installs the subscriber for the agent's own copy of `tracing`, and a panic hook that logs
/// instead of printing on the target's stderr.
pub fn init() {
    let setting = std::env::var("HOTAGENT_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let Some(setting) = setting else {
        // The usual case, in every process of a host: warnings on stderr, nothing else.
        let _ = tracing::subscriber::set_global_default(warnings::Warnings);
        std::panic::set_hook(Box::new(|info| tracing::error!("hotagent panic: {info}")));
        return;
    };
    let spec = parse(Some(&setting));
    let mut filter = EnvFilter::try_new(&spec.filter).unwrap_or_else(|_| EnvFilter::new("warn"));
    let opened = spec.file.as_deref().map(LogFile::open);
    let mut unopened = None;
    let writer = match opened {
        Some(Ok(f)) => BoxMakeWriter::new(std::sync::Mutex::new(f)),
        Some(Err(e)) => {
            // The log meant for a file must not land on the target's stderr: only warnings
            // go there, as without HOTAGENT_LOG.
            filter = EnvFilter::new("warn");
            unopened = Some(e);
            BoxMakeWriter::new(std::io::stderr)
        }
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false)
        .try_init();
    if let (Some(e), Some(path)) = (unopened, spec.file.as_deref()) {
        tracing::warn!("HOTAGENT_LOG: cannot open {path}: {e}; logging warnings only, on stderr");
    }
    std::panic::set_hook(Box::new(|info| tracing::error!("hotagent panic: {info}")));
}

/// The log file, reopened when its descriptor no longer names it: a daemon that closes every
/// descriptor and opens its own files may be handed our number, and a log line must never land in
/// the program's file.
struct LogFile {
    path: std::path::PathBuf,
    file: std::fs::File,
    /// (device, inode) of the file we opened.
    id: (u64, u64),
}

impl LogFile {
    fn open(path: &str) -> std::io::Result<LogFile> {
        let file = Self::open_file(std::path::Path::new(path))?;
        let id = identity(&file)?;
        Ok(LogFile {
            path: path.into(),
            file,
            id,
        })
    }

    fn open_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    }

    /// The file to write to: ours as opened, or opened again if our number was taken.
    fn current(&mut self) -> std::io::Result<&mut std::fs::File> {
        if identity(&self.file).ok() != Some(self.id) {
            let file = Self::open_file(&self.path)?;
            let id = identity(&file)?;
            let stale = std::mem::replace(&mut self.file, file);
            // The number is the program's now (or closed): give it up without closing it.
            let _ = std::os::fd::IntoRawFd::into_raw_fd(stale);
            self.id = id;
        }
        Ok(&mut self.file)
    }
}

fn identity(file: &std::fs::File) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().map(|m| (m.dev(), m.ino()))
}

impl std::io::Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.current()?.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.current()?.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_filter_and_file() {
        assert_eq!(
            parse(None),
            LogSpec {
                filter: "warn".into(),
                file: None
            }
        );
        assert_eq!(
            parse(Some("info,file=/tmp/x.log")),
            LogSpec {
                filter: "info".into(),
                file: Some("/tmp/x.log".into())
            }
        );
        assert_eq!(
            parse(Some("debug, hotagent=trace")),
            LogSpec {
                filter: "debug,hotagent=trace".into(),
                file: None
            }
        );
        assert_eq!(
            parse(Some("file=/a")),
            LogSpec {
                filter: "warn".into(),
                file: Some("/a".into())
            }
        );
    }
}
