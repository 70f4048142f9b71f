//! The control side: the socket folder, the listener and its I/O thread, the worker that runs
//! reloads and rollbacks, and what happens across `fork`.

mod dispatch;
mod fds;
mod fork;
pub(crate) mod history;
mod line;
mod server;
mod socket_dir;
mod worker;

pub(crate) use server::agent;
pub use server::{start, started, take_skip};
