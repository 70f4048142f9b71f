//! The wire protocol between `hotctl` and the agent inside a target process.
//!
//! One connection carries one exchange: the client writes one JSON document on one line, the agent
//! answers with one JSON document on one line and closes. Keeping it to one request per connection
//! means a client that vanishes or stalls can never hold up another client's request for long.
//!
//! This crate holds no I/O policy beyond framing, and no `unsafe`.
#![forbid(unsafe_code)]

mod framing;
mod history;
pub mod journal;
mod paths;
mod purge;
mod wire;

pub use framing::{decode_request, encode_line, FrameError, MAX_LINE_BYTES};
pub use history::{HistoryEvent, HistoryReport, Outcome};
pub use paths::{
    registry_dir, registry_uid, socket_dir, socket_path, REGISTRY_PREFIX, SOCKET_SUFFIX,
};
pub use purge::{PurgeReport, PurgeRequest};
pub use wire::*;

/// Bumped whenever a field changes meaning; added optional fields do not bump it.
pub const PROTOCOL_VERSION: u32 = 1;
