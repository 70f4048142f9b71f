//! Every FFI call and raw-pointer access of the agent lives below this module, each `unsafe` block
//! with a `SAFETY:` line. The rest of the crate is safe code over these wrappers.
#![allow(unsafe_code)]

pub mod code_window;
pub mod dirfd;
pub mod dl;
pub mod fatal;
pub mod fd;
pub mod fd_registry;
pub mod guard;
pub mod hooks_ffi;
pub mod mem;
pub mod membarrier;
pub mod mprotect;
pub mod object;
pub mod page;
pub mod phdr;
pub mod probation;
pub mod probe;
pub mod process;
pub mod raw;
pub mod saved_action;
pub mod sealed;
pub mod secure;
pub mod self_mem;
pub mod setxid;
pub mod shadow_ffi;
pub mod socket;
pub mod stacks;
pub mod stop;
mod stop_grace;
mod stop_handler;
pub mod stop_observe;
mod stop_signal;
mod stop_tasks;
pub mod task;
pub mod thread;
pub mod thunk;
pub mod trap;
pub mod trim;
pub mod ucontext;
