//! The raw declarations of `include/hotagent.h`, for code that wants them as they are.
//!
//! They are left undefined in a patch library: the loader binds them to the preloaded agent
//! (`libhotagent.so`) when `hotctl reload` loads the patch, exactly as for a C patch built with
//! `gcc -shared`. A cdylib links with them undefined under a plain `cargo build`; a library
//! loaded into a process without the agent fails to load, naming the missing symbol.

use crate::Ctx;
use std::ffi::{c_char, c_int, c_ulong, c_void};

extern "C" {
    /// `int hotagent_fail(struct hotagent_ctx *ctx, const char *message)`.
    pub fn hotagent_fail(ctx: *mut Ctx, message: *const c_char) -> c_int;
    /// `void *hotagent_previous_symbol(struct hotagent_ctx *ctx, const char *name)`.
    pub fn hotagent_previous_symbol(ctx: *mut Ctx, name: *const c_char) -> *mut c_void;
    /// `int hotagent_convert_class(ctx, old_vtable, new_vtable, upgrade, downgrade)`.
    pub fn hotagent_convert_class(
        ctx: *mut Ctx,
        old_vtable: *const c_char,
        new_vtable: *const c_char,
        upgrade: Option<unsafe extern "C" fn(*mut c_void)>,
        downgrade: Option<unsafe extern "C" fn(*mut c_void)>,
    ) -> c_int;
    /// `void *hotagent_shadow_get(const void *object, unsigned long id)`.
    pub fn hotagent_shadow_get(object: *const c_void, id: c_ulong) -> *mut c_void;
    /// `void *hotagent_shadow_get_or_alloc(const void *object, unsigned long id, size_t size)`.
    pub fn hotagent_shadow_get_or_alloc(
        object: *const c_void,
        id: c_ulong,
        size: usize,
    ) -> *mut c_void;
    /// `void hotagent_shadow_free(const void *object, unsigned long id)`.
    pub fn hotagent_shadow_free(object: *const c_void, id: c_ulong);
    /// `void hotagent_shadow_free_all(unsigned long id)`.
    pub fn hotagent_shadow_free_all(id: c_ulong);
}
