//! What `/proc/self/task/TID` tells about another thread without stopping it: whether it blocks a
//! signal, and — for a thread that does — whether it is asleep in the kernel and where it will
//! resume.
//!
//! `syscall` reads `NR a1..a6 SP PC` for a thread asleep in a system call, `-1 SP PC` for one
//! asleep elsewhere in the kernel (a page fault, a group stop), and `running` otherwise. The kernel
//! answers only once the thread is off its CPU, and checks that it did not run meanwhile. Whether
//! it stayed asleep *between* two reads is told by its context-switch counts in `status`: a thread
//! that woke and went back to sleep was switched out once more (the kernel's own test in
//! `task_current_syscall`).
//!
//! Reads go through `sys::raw` into buffers on the stack: this runs while other threads are
//! parked, so it may neither allocate nor call into libc.

use super::raw;

/// A thread seen asleep in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asleep {
    /// Where it resumes in user space.
    pub pc: u64,
    /// Asleep in a system call: a restarted call resumes at the `syscall` instruction, two bytes
    /// before `pc`.
    pub in_syscall: bool,
    /// Voluntary plus involuntary context switches when it was seen: both only grow, so an equal
    /// sum means neither changed.
    pub switches: u64,
}

impl Asleep {
    /// The addresses it may resume at.
    pub fn resume_pcs(&self) -> [u64; 2] {
        let restart = if self.in_syscall {
            self.pc.wrapping_sub(2)
        } else {
            self.pc
        };
        [self.pc, restart]
    }
}

/// Where another thread is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Asleep(Asleep),
    /// Running, about to run, or unreadable: it could be anywhere. With its voluntary context
    /// switches when known: a thread that slept between two sightings has more.
    Running(Option<u64>),
    /// No such thread any more.
    Gone,
}

/// The signals thread `tid` blocks (as a mask: bit `sig - 1`), and whether it is running (or
/// runnable); (0, true) when its status cannot be read.
pub fn blocked_and_runs(tid: i32) -> (u64, bool) {
    let mut buf = [0u8; 4096];
    let Some(s) = status(tid, &mut buf) else {
        return (0, true);
    };
    let blocked = field(s, b"SigBlk:", 16).unwrap_or(0);
    let running = s
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"State:"))
        .and_then(|v| v.iter().find(|b| !b.is_ascii_whitespace()))
        .is_none_or(|&c| c == b'R');
    (blocked, running)
}

/// Where thread `tid` resumes in user space, and whether it is in a system call, if it is
/// asleep in the kernel now (`None`: running, gone, or unreadable).
pub fn asleep_at(tid: i32) -> Option<(u64, bool)> {
    let mut buf = [0u8; 4096];
    syscall_line(tid, &mut buf)
        .and_then(parse_syscall)
        .flatten()
}

/// Whether thread `tid` blocks `sig` (false when its status cannot be read).
pub fn blocks(tid: i32, sig: i32) -> bool {
    let mut buf = [0u8; 4096];
    status(tid, &mut buf)
        .and_then(|s| field(s, b"SigBlk:", 16))
        .is_some_and(|mask| mask & (1u64 << (sig - 1)) != 0)
}

/// Whether thread `tid` blocks `sig` with `sig` pending: it was sent and never delivered. (A
/// thread running the handler of `sig` blocks it too, but no longer has it pending.)
pub fn holds_pending(tid: i32, sig: i32) -> bool {
    let mut buf = [0u8; 4096];
    let bit = 1u64 << (sig - 1);
    status(tid, &mut buf).is_some_and(|s| {
        field(s, b"SigBlk:", 16).is_some_and(|m| m & bit != 0)
            && field(s, b"SigPnd:", 16).is_some_and(|m| m & bit != 0)
    })
}

/// Where thread `tid` is now.
pub fn locate(tid: i32) -> Seen {
    let mut buf = [0u8; 4096];
    // Counted before the syscall line is read, so any switch after this read shows later.
    let Some((voluntary, involuntary)) = status(tid, &mut buf).and_then(switches) else {
        return gone_or_running(tid);
    };
    match syscall_line(tid, &mut buf).and_then(parse_syscall) {
        Some(Some((pc, in_syscall))) => Seen::Asleep(Asleep {
            pc,
            in_syscall,
            switches: voluntary.wrapping_add(involuntary),
        }),
        Some(None) => Seen::Running(Some(voluntary)),
        None => gone_or_running(tid),
    }
}

/// Whether thread `tid`, seen as `was`, has stayed asleep where it was ever since: it is asleep at
/// the same place and was never switched in and out again. Reads in the opposite order to
/// `locate`, so a thread that woke in between is caught either running or by its counts.
pub fn still_asleep(tid: i32, was: &Asleep) -> bool {
    let mut buf = [0u8; 4096];
    let asleep_at = syscall_line(tid, &mut buf)
        .and_then(parse_syscall)
        .flatten()
        .map(|(pc, _)| pc);
    if asleep_at != Some(was.pc) {
        return false;
    }
    status(tid, &mut buf)
        .and_then(switches)
        .map(|(v, i)| v.wrapping_add(i))
        == Some(was.switches)
}

fn gone_or_running(tid: i32) -> Seen {
    match raw::tgkill(raw::getpid(), tid, 0) {
        Err(libc::ESRCH) => Seen::Gone,
        _ => Seen::Running(None),
    }
}

fn status(tid: i32, buf: &mut [u8; 4096]) -> Option<&[u8]> {
    read(tid, b"status", buf)
}

fn syscall_line(tid: i32, buf: &mut [u8; 4096]) -> Option<&[u8]> {
    read(tid, b"syscall", buf)
}

/// `/proc/self/task/TID/<file>` into `buf`.
fn read<'a>(tid: i32, file: &[u8], buf: &'a mut [u8; 4096]) -> Option<&'a [u8]> {
    let mut path = [0u8; 64];
    let path = task_path(tid, file, &mut path)?;
    let n = raw::read_file_into(path, buf).ok()?;
    Some(&buf[..n])
}

/// `/proc/self/task/TID/<file>`, NUL-terminated, in `buf`.
pub fn task_path<'a>(tid: i32, file: &[u8], buf: &'a mut [u8; 64]) -> Option<&'a std::ffi::CStr> {
    use std::io::Write;
    let mut w = std::io::Cursor::new(&mut buf[..]);
    write!(w, "/proc/self/task/{tid}/").ok()?;
    w.write_all(file).ok()?;
    w.write_all(b"\0").ok()?;
    let n = w.position() as usize;
    std::ffi::CStr::from_bytes_with_nul(&buf[..n]).ok()
}

/// The value of the `status` line starting with `name`, in `radix`.
fn field(status: &[u8], name: &[u8], radix: u32) -> Option<u64> {
    let value = status
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(name))?;
    u64::from_str_radix(std::str::from_utf8(value).ok()?.trim(), radix).ok()
}

/// Voluntary and involuntary context switches.
fn switches(status: &[u8]) -> Option<(u64, u64)> {
    let voluntary = field(status, b"voluntary_ctxt_switches:", 10)?;
    let involuntary = field(status, b"nonvoluntary_ctxt_switches:", 10)?;
    Some((voluntary, involuntary))
}

/// `Some(Some((pc, in_syscall)))` for an asleep thread, `Some(None)` for `running`, `None` when
/// the line is not understood.
fn parse_syscall(line: &[u8]) -> Option<Option<(u64, bool)>> {
    let line = std::str::from_utf8(line).ok()?.trim();
    if line == "running" {
        return Some(None);
    }
    let mut words = line.split(' ');
    let nr: i64 = words.next()?.parse().ok()?;
    let rest: [&str; 8] = {
        let mut a = [""; 8];
        let mut n = 0;
        for w in words {
            *a.get_mut(n)? = w;
            n += 1;
        }
        match (nr, n) {
            (-1, 2) | (0.., 8) => a,
            _ => return None,
        }
    };
    let pc_word = if nr < 0 { rest[1] } else { rest[7] };
    let pc = u64::from_str_radix(pc_word.strip_prefix("0x")?, 16).ok()?;
    Some(Some((pc, nr >= 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_shapes_of_a_syscall_line() {
        assert_eq!(
            parse_syscall(b"230 0x1 0x0 0x7ffd1c0 0x0 0x0 0x0 0x7ffd1b8 0x7f12345678\n"),
            Some(Some((0x7f12345678, true)))
        );
        assert_eq!(
            parse_syscall(b"-1 0x7ffd1b8 0x55aa00\n"),
            Some(Some((0x55aa00, false)))
        );
        assert_eq!(parse_syscall(b"running\n"), Some(None));
        assert_eq!(parse_syscall(b"-22\n"), None);
        assert_eq!(parse_syscall(b"230 0x1 0x2\n"), None);
        assert_eq!(parse_syscall(b""), None);
    }

    #[test]
    fn a_restarted_call_may_resume_at_its_syscall_instruction() {
        let a = Asleep {
            pc: 0x1004,
            in_syscall: true,
            switches: 3,
        };
        assert_eq!(a.resume_pcs(), [0x1004, 0x1002]);
        let fault = Asleep {
            in_syscall: false,
            ..a
        };
        assert_eq!(fault.resume_pcs(), [0x1004, 0x1004]);
    }

    #[test]
    fn reads_status_fields() {
        let s = b"Name:\tx\nSigBlk:\tfffffffe7ffbfeff\nvoluntary_ctxt_switches:\t12\n\
                  nonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(field(s, b"SigBlk:", 16), Some(0xfffffffe7ffbfeff));
        assert_eq!(switches(s), Some((12, 3)));
        assert_eq!(switches(b"SigBlk:\t0\n"), None);
    }

    #[test]
    fn finds_a_sleeping_thread_of_this_process() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            tid_tx.send(raw::gettid()).unwrap();
            let _ = rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let asleep = loop {
            match locate(tid) {
                Seen::Asleep(a) => break a,
                _ if std::time::Instant::now() < deadline => std::thread::yield_now(),
                other => panic!("the thread waiting on a channel was never seen asleep: {other:?}"),
            }
        };
        assert!(asleep.in_syscall, "{asleep:?}");
        assert!(still_asleep(tid, &asleep));
        assert!(!blocks(tid, libc::SIGUSR1));
        tx.send(()).unwrap();
        t.join().unwrap();
        assert_eq!(locate(tid), Seen::Gone);
        assert!(!still_asleep(tid, &asleep));
    }
}
