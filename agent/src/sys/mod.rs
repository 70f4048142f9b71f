//! Every FFI call and raw-pointer access of the agent lives below this module, each `unsafe` block
//! with a `SAFETY:` line. The rest of the crate is safe code over these wrappers.
#![allow(unsafe_code)]

pub mod dl;
pub mod mem;
pub mod phdr;
pub mod probe;
pub mod process;
pub mod prot;
// The control channel's raw calls (send, accept, poll ...) are wired in on another branch; drop
// this allow when they are used here.
#[allow(dead_code)]
pub mod raw;
pub mod socket;
pub mod stop;
pub mod thread;
