//! The descriptors the agent holds open (the registry itself is `sys::fd_registry`, which closes
//! them), and the one a client passes with its request.

use crate::sys::fd::Fd;
pub use crate::sys::fd_registry::{close, close_inherited, is_ours, register, Registered};

/// A descriptor a client passed with its request (the patch file hotctl opened): registered, so
/// it is closed exactly once, on every path, and never after the program reused its number.
#[derive(Debug)]
pub struct Received(Registered);

impl Received {
    /// Takes a descriptor just received; None (and it is closed) when the registry is full.
    pub fn register(fd: Fd) -> Option<Received> {
        register(fd).ok().map(Received)
    }

    /// Its number, while it still names what was received.
    pub fn fd(&self) -> Option<i32> {
        is_ours(self.0.raw()).then_some(self.0.raw())
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        close(self.0);
    }
}
