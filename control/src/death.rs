//! Whether the target is still alive, and how it ended if not.
//!
//! A target that crashes during a reload only closes its socket; one that crashes a moment after
//! the switch may even have sent its success report first. So hotctl opens a pidfd for the target
//! before it sends anything (a pidfd names that process, never a later one with its pid) and
//! looks at it after every answer. How the process ended comes from the agent's `died` line (its
//! fatal-signal handler), else from `/proc/PID/stat` while the zombie is still there.

use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How a process ended, as far as hotctl could learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Death {
    Signal(i32),
    Exit(i32),
    /// Gone, and reaped before hotctl could read how.
    Unknown,
}

impl fmt::Display for Death {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Death::Signal(sig) => write!(f, "killed by signal {sig} ({})", signal_name(sig)),
            Death::Exit(code) => write!(f, "it exited with status {code}"),
            Death::Unknown => f.write_str("how it ended is unknown (it was reaped at once)"),
        }
    }
}

/// The usual name of a signal, `SIG...`.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        s if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&s) => {
            return format!("SIGRTMIN+{}", s - libc::SIGRTMIN())
        }
        _ => return format!("SIG{sig}"),
    };
    name.to_string()
}

/// A process watched through its pidfd.
#[derive(Debug)]
pub struct Watch {
    pid: u32,
    /// None on a kernel without pidfds (before 5.3): `/proc` is asked instead.
    pidfd: Option<OwnedFd>,
}

impl Watch {
    /// Starts watching `pid`; None when there is no such process.
    pub fn open(pid: u32) -> Option<Watch> {
        // SAFETY: pidfd_open takes no memory arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        if fd >= 0 {
            // SAFETY: a descriptor the kernel just gave us, owned here alone.
            let pidfd = Some(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            return Some(Watch { pid, pidfd });
        }
        // No such process (ESRCH, or a pid beyond any: EINVAL), unless the kernel has no pidfds.
        let no_pidfds = std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS);
        (no_pidfds && proc_state(pid).is_some()).then_some(Watch { pid, pidfd: None })
    }

    /// The pidfd to poll (readable once the process has exited), if there is one.
    pub fn raw_fd(&self) -> Option<i32> {
        self.pidfd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Has the process exited? Waits up to `wait` for it to.
    pub fn gone_within(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        loop {
            if self.gone_now(until.saturating_duration_since(Instant::now())) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            if self.pidfd.is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    fn gone_now(&self, wait: Duration) -> bool {
        let Some(fd) = self.raw_fd() else {
            return matches!(proc_state(self.pid), None | Some((b'Z' | b'X', _)));
        };
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: p is one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        n > 0 && p.revents != 0
    }

    /// How it ended: the signal the agent named, else what its zombie tells.
    pub fn how(&self, said: Option<i32>) -> Death {
        if let Some(sig) = said {
            return Death::Signal(sig);
        }
        match proc_state(self.pid) {
            Some((b'Z' | b'X', code)) => decode_exit_code(code),
            _ => Death::Unknown,
        }
    }
}

/// The state letter and `exit_code` (field 52) of `/proc/PID/stat`.
fn proc_state(pid: u32) -> Option<(u8, i32)> {
    let text = crate::procfs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<(u8, i32)> {
    // The command name, in parentheses, may hold spaces and parentheses itself.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = *fields.first()?.as_bytes().first()?;
    // Field 3 is the state, so field 52 is at index 49.
    let code = fields.get(49).and_then(|c| c.parse().ok()).unwrap_or(0);
    Some((state, code))
}

/// A wait status as the kernel keeps it for a zombie.
fn decode_exit_code(code: i32) -> Death {
    match code & 0x7f {
        0 => Death::Exit((code >> 8) & 0xff),
        sig => Death::Signal(sig),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        let mut line = "42 (a (b) c) Z 1".to_string();
        for i in 5..=51 {
            line.push_str(&format!(" {i}"));
        }
        line.push_str(" 139\n");
        assert_eq!(parse_stat(&line), Some((b'Z', 139)));
        assert_eq!(decode_exit_code(139), Death::Signal(11));
        assert_eq!(decode_exit_code(6), Death::Signal(6));
        assert_eq!(decode_exit_code(3 << 8), Death::Exit(3));
    }

    #[test]
    fn names() {
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(6), "SIGABRT");
        assert_eq!(
            Death::Signal(11).to_string(),
            "killed by signal 11 (SIGSEGV)"
        );
    }

    #[test]
    fn a_child_that_dies_is_seen_with_its_signal() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let w = Watch::open(child.id()).unwrap();
        assert!(!w.gone_within(Duration::from_millis(10)));
        child.kill().unwrap();
        assert!(w.gone_within(Duration::from_secs(5)));
        // Not reaped yet: the zombie says how.
        assert_eq!(w.how(None), Death::Signal(libc::SIGKILL));
        child.wait().unwrap();
        assert_eq!(w.how(Some(6)), Death::Signal(6));
    }
}
