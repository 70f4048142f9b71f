//! libhotagent.so: preloaded into a target, it replaces the code of the target's libraries while
//! the target runs. See README.md for the whole story; `reload` holds the transaction.
//!
//! Only `hotagent_*` symbols are exported: any other exported name would interpose on the
//! target's own functions. `unsafe` lives in `sys` alone.
#![deny(unsafe_code)]

// Unit tests do not start the agent in the test runner, and neither does a build without the
// `autostart` feature (the fuzz targets), so its entry points go unused there.
#[cfg_attr(
    any(test, not(feature = "autostart")),
    allow(dead_code, unused_imports)
)]
mod control;
pub mod convert;
pub mod entry;
pub mod hooks;
pub mod image;
#[cfg_attr(any(test, not(feature = "autostart")), allow(dead_code))]
mod log;
pub mod patch;
#[cfg_attr(any(test, not(feature = "autostart")), allow(dead_code))]
pub mod persist;
pub mod reload;
pub mod shadow;
mod sys;

// Not in unit tests, nor without `autostart` (see agent/Cargo.toml).
#[cfg(all(not(test), feature = "autostart"))]
#[ctor::ctor(unsafe)]
fn hotagent_init() {
    // A panic escaping a constructor would abort the target before its main.
    let _ = std::panic::catch_unwind(|| {
        // A setuid program or changed ids (e.g. everything preloaded by /etc/ld.so.preload): the
        // environment is the invoker's, so nothing of the agent starts — not even its log, whose
        // file the environment names. See sys::secure.
        if sys::secure::untrusted_start() {
            return;
        }
        if control::take_skip() {
            return;
        }
        // Before any thread of ours exists: registering is free only while the process has one.
        sys::membarrier::register_if_single_threaded();
        log::init();
        control::start();
        persist::apply_at_startup(control::agent());
        // Last: what start-up faulted in of the agent's code need not stay in the target's RSS
        // while the agent waits for a client (see sys::trim). The I/O thread does it, if it runs.
        if !control::started() {
            sys::trim::release_own_pages();
        }
    });
}

/// The agent's version as a NUL-terminated string, for tools that inspect a process.
// Exporting a symbol is what `unsafe_code` flags here: the name is ours alone (hotagent_ prefix).
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn hotagent_version() -> *const std::ffi::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
