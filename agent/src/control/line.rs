//! One JSON line at a time on a non-blocking socket, with raw system calls and deadlines.
//!
//! Every byte the control channel moves goes through here, so a patch of `recv`, `send` or
//! `poll` cannot cut it. Deadlines are absolute `CLOCK_MONOTONIC` milliseconds: a client that
//! trickles one byte every few seconds still runs out of time.

use super::fds::Received;
use crate::sys::{fd, raw};
use hotagent_protocol::MAX_LINE_BYTES;

/// What reading has produced so far.
pub enum Progress {
    /// A whole line (without its newline).
    Line(Vec<u8>),
    /// The line went past the limit after this many bytes.
    TooLong(usize),
    /// More is needed.
    Pending,
    /// The peer closed or the socket failed before a line came.
    Closed,
}

/// Bytes of a line not yet complete, and a descriptor the client passed with them.
#[derive(Default)]
pub struct LineBuf {
    buf: Vec<u8>,
    passed: Option<Received>,
}

impl LineBuf {
    /// The descriptor that came with the line, if any (one per request: later ones are closed).
    pub fn take_passed(&mut self) -> Option<Received> {
        self.passed.take()
    }

    /// Reads what is available on the non-blocking `fd`.
    pub fn feed(&mut self, fd: i32) -> Progress {
        let mut chunk = [0u8; 4096];
        loop {
            let got = fd::recv_with_fd(fd, &mut chunk).map(|(n, passed)| {
                // One per request: a later one is closed (dropped) here.
                if let Some(p) = passed {
                    if self.passed.is_none() {
                        self.passed = Received::register(p);
                    }
                }
                n
            });
            match got {
                Ok(0) if self.buf.is_empty() => return Progress::Closed,
                // A client may end its request with the end of the stream instead of a newline.
                Ok(0) => return Progress::Line(std::mem::take(&mut self.buf)),
                Ok(n) => {
                    if let Some(pos) = chunk[..n].iter().position(|&b| b == b'\n') {
                        self.buf.extend_from_slice(&chunk[..pos]);
                        let line = std::mem::take(&mut self.buf);
                        return if line.len() > MAX_LINE_BYTES {
                            Progress::TooLong(line.len())
                        } else {
                            Progress::Line(line)
                        };
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                    if self.buf.len() > MAX_LINE_BYTES {
                        return Progress::TooLong(self.buf.len());
                    }
                }
                Err(libc::EAGAIN) => return Progress::Pending,
                Err(_) => return Progress::Closed,
            }
        }
    }
}

/// Milliseconds left until `deadline`, or None when it has passed.
pub fn left(deadline: u64) -> Option<u64> {
    deadline
        .checked_sub(raw::monotonic_ms())
        .filter(|&ms| ms > 0)
}

/// Waits until `fd` is ready for `events`, or the deadline passes (false).
fn wait(fd: i32, events: i16, deadline: u64) -> bool {
    loop {
        let Some(ms) = left(deadline) else {
            return false;
        };
        let mut p = [libc::pollfd {
            fd,
            events,
            revents: 0,
        }];
        match raw::poll(&mut p, Some(ms)) {
            Ok(0) => continue,
            Ok(_) => return true,
            Err(libc::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Sends all of `bytes` before the deadline; false if the client left or was too slow.
pub fn send_all(fd: i32, mut bytes: &[u8], deadline: u64) -> bool {
    while !bytes.is_empty() {
        match raw::send(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(libc::EAGAIN) => {
                if !wait(fd, libc::POLLOUT, deadline) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

/// Reads one line before the deadline.
pub fn read_line(fd: i32, deadline: u64) -> Option<Vec<u8>> {
    let mut buf = LineBuf::default();
    loop {
        match buf.feed(fd) {
            Progress::Line(l) => return Some(l),
            Progress::Pending => {
                if !wait(fd, libc::POLLIN, deadline) {
                    return None;
                }
            }
            Progress::TooLong(_) | Progress::Closed => return None,
        }
    }
}

/// Has the client closed its end altogether? (A client that only shut down its writing side
/// still waits for the answer.)
pub fn hung_up(fd: i32) -> bool {
    let mut p = [libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    }];
    matches!(raw::poll(&mut p, Some(0)), Ok(1) if p[0].revents & (libc::POLLHUP | libc::POLLERR) != 0)
}

/// Waits until the client closes its end (or sends anything: a client has nothing more to say),
/// or the deadline passes.
pub fn wait_closed(fd: i32, deadline: u64) {
    wait(fd, libc::POLLIN, deadline);
}
