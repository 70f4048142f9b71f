//! The control side: the socket folder, the listener and its one accepting thread, the request
//! loop, and what happens across `fork`.

mod dispatch;
mod fork;
mod server;
mod socket_dir;

pub use server::start;
