//! `dlopen`, `dlsym`, `dlvsym`, `dlerror`.

use std::ffi::{CStr, CString};

/// A `dlopen` handle. A generation's is never closed: old code must stay mapped (threads or
/// pointers may still use it). Only a load refused before anything was switched to it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle(usize);

impl Handle {
    /// A handle `dlopen` returned in this module (the probe's copy).
    pub(super) fn from_raw(h: usize) -> Handle {
        Handle(h)
    }
}

fn last_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string owned by the loader (thread-local).
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown dynamic loader error".to_string()
    } else {
        // SAFETY: non-NULL dlerror results are valid C strings until the next dl* call.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// Why `dlopen` gave no handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DlError {
    /// The path cannot be handed to the loader at all.
    #[error("{0:?} contains a NUL byte")]
    NulInPath(String),
    /// The loader refused: its own message.
    #[error("{0}")]
    Refused(String),
}

fn c_string(s: &str) -> Result<CString, DlError> {
    CString::new(s).map_err(|_| DlError::NulInPath(s.to_string()))
}

/// `dlopen(path, flags)`; a refusal carries the loader's own message.
pub fn open(path: &str, flags: i32) -> Result<Handle, DlError> {
    let c = c_string(path)?;
    // SAFETY: c is a valid C string; dlopen has no other preconditions.
    let h = unsafe { libc::dlopen(c.as_ptr(), flags) };
    if h.is_null() {
        Err(DlError::Refused(last_error()))
    } else {
        Ok(Handle(h as usize))
    }
}

/// Loads a new library: every reference resolved now, its symbols kept out of the global scope.
pub fn open_now_local(path: &str) -> Result<Handle, DlError> {
    open(path, libc::RTLD_NOW | libc::RTLD_LOCAL)
}

/// A handle to an already-loaded module, without loading anything.
pub fn open_loaded(path: &str) -> Option<Handle> {
    open(path, libc::RTLD_LAZY | libc::RTLD_NOLOAD).ok()
}

/// Drops one reference taken by `open_loaded` (the module stays loaded: others hold it).
pub fn release(h: Handle) {
    // SAFETY: h came from a successful dlopen with RTLD_NOLOAD of a module that stays loaded.
    unsafe { libc::dlclose(h.0 as *mut libc::c_void) };
}

/// Unloads a library nothing was switched to (a refused load): its destructors run, and the
/// loader unmaps it unless it pins itself (`RTLD_NODELETE`, `STB_GNU_UNIQUE`).
pub fn close(h: Handle) {
    // SAFETY: h came from a successful dlopen by the caller, who drops it now and uses no
    // address inside the library afterwards.
    unsafe { libc::dlclose(h.0 as *mut libc::c_void) };
}

/// Waits until no `dlopen` or `dlclose` is in progress in another thread: `dlopen(NULL)` takes
/// the loader's big lock and returns at once.
pub fn barrier() {
    // SAFETY: dlopen(NULL) returns the main program's handle; nothing is loaded.
    unsafe { libc::dlopen(std::ptr::null(), libc::RTLD_LAZY) };
}

/// The address `dlsym`/`dlvsym` gives for `name` (and `version`) in `h`'s scope; IFUNC symbols come
/// back resolved, as the loader would bind them.
pub fn symbol(h: Handle, name: &str, version: Option<&str>) -> Option<u64> {
    let n = c_string(name).ok()?;
    let p = match version {
        Some(v) => {
            let v = c_string(v).ok()?;
            // SAFETY: valid handle and C strings.
            unsafe { libc::dlvsym(h.0 as *mut libc::c_void, n.as_ptr(), v.as_ptr()) }
        }
        // SAFETY: valid handle and C string.
        None => unsafe { libc::dlsym(h.0 as *mut libc::c_void, n.as_ptr()) },
    };
    (!p.is_null()).then_some(p as u64)
}

/// `dlsym(RTLD_DEFAULT, name)`: what the global scope binds `name` to.
pub fn default_symbol(name: &str) -> Option<u64> {
    let n = c_string(name).ok()?;
    // SAFETY: RTLD_DEFAULT is a valid pseudo-handle; n is a valid C string.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, n.as_ptr()) };
    (!p.is_null()).then_some(p as u64)
}

/// The global scope (`RTLD_DEFAULT`) as a handle, for versioned look-ups there.
pub fn default_scope() -> Handle {
    Handle(libc::RTLD_DEFAULT as usize)
}

/// The module id of `h`'s thread-local block (`dlinfo(RTLD_DI_TLS_MODID)`); `None` when it has
/// none.
pub fn tls_modid(h: Handle) -> Option<u64> {
    let mut id: libc::size_t = 0;
    // SAFETY: h is a live handle; RTLD_DI_TLS_MODID writes one size_t through the pointer.
    let r = unsafe {
        libc::dlinfo(
            h.0 as *mut libc::c_void,
            libc::RTLD_DI_TLS_MODID,
            (&mut id as *mut libc::size_t).cast(),
        )
    };
    (r == 0 && id != 0).then_some(id as u64)
}
