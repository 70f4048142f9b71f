//! The shadow-variable exports of `include/hotagent.h`, over [`crate::shadow`].
//!
//! Patched code calls these from any thread of the target: a panic must never unwind into C, so
//! every body runs under `catch_unwind` and a panic gives NULL (or does nothing). None of them
//! dereferences `object`: it is only a key.

use crate::shadow;
use std::ffi::{c_ulong, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

fn key(object: *const c_void) -> usize {
    object as usize
}

/// Runs `f`, turning a panic into `fallback`.
fn guarded<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    // AssertUnwindSafe: the table recovers from a panic in a lock (see shadow::Table) and the
    // closures capture only plain values.
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// `void *hotagent_shadow_get(const void *object, unsigned long id)`: the block, or NULL.
#[no_mangle]
pub extern "C" fn hotagent_shadow_get(object: *const c_void, id: c_ulong) -> *mut c_void {
    guarded(ptr::null_mut(), || {
        shadow::global()
            .get(key(object), id)
            .map_or(ptr::null_mut(), |p| p.as_ptr())
    })
}

/// `void *hotagent_shadow_get_or_alloc(const void *object, unsigned long id, size_t size)`: the
/// block, made zeroed the first time; NULL when size is 0 or memory is exhausted.
#[no_mangle]
pub extern "C" fn hotagent_shadow_get_or_alloc(
    object: *const c_void,
    id: c_ulong,
    size: usize,
) -> *mut c_void {
    guarded(ptr::null_mut(), || {
        shadow::global()
            .get_or_alloc(key(object), id, size)
            .map_or(ptr::null_mut(), |p| p.as_ptr())
    })
}

/// `void hotagent_shadow_free(const void *object, unsigned long id)`: no-op when absent.
#[no_mangle]
pub extern "C" fn hotagent_shadow_free(object: *const c_void, id: c_ulong) {
    guarded((), || shadow::global().free(key(object), id))
}

/// `void hotagent_shadow_free_all(unsigned long id)`.
#[no_mangle]
pub extern "C" fn hotagent_shadow_free_all(id: c_ulong) {
    guarded((), || shadow::global().free_all(id))
}
