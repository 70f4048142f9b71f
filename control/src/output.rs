//! `--quiet` and `--verbose`: how much hotctl says besides its errors.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

/// Where error lines go: stderr, or with `--quiet` a copy of it kept before stdout and stderr
/// were pointed at /dev/null (so reports, warnings and a check's output all go quiet, however
/// a verb writes them).
pub struct ErrorSink {
    saved: Option<File>,
}

impl ErrorSink {
    pub fn write_line(&mut self, line: &str) {
        match &mut self.saved {
            Some(f) => {
                let _ = writeln!(f, "{line}");
            }
            None => eprintln!("{line}"),
        }
    }
}

/// Silences stdout and stderr when `quiet`; the returned sink still reaches the real stderr.
pub fn setup(quiet: bool) -> io::Result<ErrorSink> {
    if !quiet {
        return Ok(ErrorSink { saved: None });
    }
    let saved: OwnedFd = io::stderr().as_fd().try_clone_to_owned()?;
    let null = File::options().write(true).open("/dev/null")?;
    for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 between two descriptors this process owns; Rust's stdout/stderr handles
        // keep using the numbers, which now name /dev/null.
        if unsafe { libc::dup2(null.as_raw_fd(), target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(ErrorSink {
        saved: Some(File::from(saved)),
    })
}

/// With `--verbose`: which socket folder hotctl looks in, and which setting chose it.
pub fn describe_socket_dir(dir: &Path) -> String {
    let from =
        if std::env::var_os("HOTAGENT_SOCKET_DIR").is_some_and(|v| Path::new(&v).is_absolute()) {
            "HOTAGENT_SOCKET_DIR"
        } else if std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|v| Path::new(&v).is_absolute()) {
            "XDG_RUNTIME_DIR/hotagent; set HOTAGENT_SOCKET_DIR to look elsewhere"
        } else {
            "the default for this user; set HOTAGENT_SOCKET_DIR to look elsewhere"
        };
    format!("hotctl: socket folder {} ({from})", dir.display())
}

/// Set once a verb wrote anything to stdout: an error then needs no JSON document of its own.
static STDOUT_USED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the verb wrote to stdout.
pub fn stdout_used() -> bool {
    STDOUT_USED.load(std::sync::atomic::Ordering::Relaxed)
}

/// stdout, noting that something was written.
pub struct Counted<W>(pub W);

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        if n > 0 {
            STDOUT_USED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
