//! The patch-author API at the C boundary: calling a patch's hooks, and the services the agent
//! exports to them (`include/hotagent.h`). Every service checks its context pointer against the
//! live one before using it and catches panics: a patch that passes garbage gets an error
//! answer, never a crash of the target.

use crate::hooks::context::{self, Context};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

type IntHook = unsafe extern "C" fn(*mut c_void) -> c_int;
type VoidHook = unsafe extern "C" fn(*mut c_void);
type Converter = unsafe extern "C" fn(*mut c_void);

/// A hook function of a loaded patch library: only made by [`HookFn::find`], from a function
/// symbol the library exports under a hook's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookFn(u64);

impl HookFn {
    /// `name` in the library `handle`, if `is_function` (the patch file lists it as a function:
    /// a variable under a hook's name must never be called).
    pub fn find(handle: super::dl::Handle, name: &str, is_function: bool) -> Option<HookFn> {
        if !is_function {
            return None;
        }
        super::dl::symbol(handle, name, None).map(HookFn)
    }

    pub fn addr(self) -> u64 {
        self.0
    }
}

/// Calls hook `f` with context address `ctx`: `int f(struct hotagent_ctx *)` when `returns_int`,
/// else `void f(struct hotagent_ctx *)` (0 is returned then).
pub fn call_hook(f: HookFn, ctx: usize, returns_int: bool) -> i32 {
    if returns_int {
        // SAFETY: a HookFn is a function the patch exports under a hook's name, declared with
        // this signature by include/hotagent.h; the agent never unloads a library while one of
        // its hooks may run (a refused load whose hook hung stays mapped).
        let hook: IntHook = unsafe { std::mem::transmute::<usize, IntHook>(f.0 as usize) };
        // SAFETY: as above; the context pointer is opaque to the hook.
        unsafe { hook(ctx as *mut c_void) }
    } else {
        // SAFETY: as above, for the void hook.
        let hook: VoidHook = unsafe { std::mem::transmute::<usize, VoidHook>(f.0 as usize) };
        // SAFETY: as above.
        unsafe { hook(ctx as *mut c_void) };
        0
    }
}

/// A C string argument, or `None` for NULL.
///
/// # Safety
/// `p` must be NULL or point at a NUL-terminated string that lives for the call.
unsafe fn text<'a>(p: *const c_char) -> Option<&'a CStr> {
    // SAFETY: the caller's promise.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) })
}

fn with_live<T>(ctx: *mut c_void, or: T, f: impl FnOnce(&Context) -> T) -> T {
    match context::live(ctx as usize) {
        Some(c) => f(&c),
        None => or,
    }
}

/// `int hotagent_fail(struct hotagent_ctx *ctx, const char *message)`: records why, returns -1.
#[no_mangle]
pub extern "C" fn hotagent_fail(ctx: *mut c_void, message: *const c_char) -> c_int {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the API's contract: NULL or a C string alive for the call.
        let msg = unsafe { text(message) }.map_or(&b"(no message)"[..], CStr::to_bytes);
        with_live(ctx, (), |c| c.fail(msg));
    }));
    -1
}

/// `void *hotagent_previous_symbol(struct hotagent_ctx *ctx, const char *name)`.
#[no_mangle]
pub extern "C" fn hotagent_previous_symbol(ctx: *mut c_void, name: *const c_char) -> *mut c_void {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the API's contract: NULL or a C string alive for the call.
        let Some(name) = (unsafe { text(name) }) else {
            return std::ptr::null_mut();
        };
        with_live(ctx, 0, |c| c.previous_symbol(name.to_bytes()).unwrap_or(0)) as *mut c_void
    }))
    .unwrap_or(std::ptr::null_mut())
}

/// `int hotagent_convert_class(ctx, old_vtable, new_vtable, upgrade, downgrade)`: 0, or -1 with
/// the reason recorded.
#[no_mangle]
pub extern "C" fn hotagent_convert_class(
    ctx: *mut c_void,
    old_vtable: *const c_char,
    new_vtable: *const c_char,
    upgrade: Option<Converter>,
    downgrade: Option<Converter>,
) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        with_live(ctx, -1, |c| {
            // SAFETY: the API's contract: NULL or C strings alive for the call.
            let (old, new) = unsafe { (text(old_vtable), text(new_vtable)) };
            let (Some(old), Some(new)) = (old, new) else {
                c.fail(b"hotagent_convert_class: a vtable name is NULL");
                return -1;
            };
            let (old, new) = (old.to_string_lossy(), new.to_string_lossy());
            let up = upgrade.map_or(0, |f| f as usize as u64);
            let down = downgrade.map(|f| f as usize as u64);
            match c.convert_class(&old, &new, up, down) {
                Ok(()) => 0,
                Err(_) => -1,
            }
        })
    }))
    .unwrap_or(-1)
}
