//! Shadow variables: extra fields attached to any object by its address (kpatch's model), so a
//! fix can add state to objects whose layout it must not change.
//!
//! A block is keyed by (object address, [`Id`]): pick one id per field your patch adds. Blocks are
//! made zeroed and 16-byte aligned, never move while allocated, and are shared by every thread;
//! the agent does not know when an object dies, so [`free`] its blocks when you free the object.
//! These calls lock and allocate: not for migrate or unmigrate.
//!
//! ```no_run
//! use hotagent_api::shadow;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! const HITS: shadow::Id = 0x4849_5453; // "HITS"
//!
//! #[repr(C)]
//! pub struct Conn { fd: i32 }
//!
//! /// Counts the requests of one connection, without a field in `Conn` for it.
//! pub fn count_request(conn: *const Conn) -> u64 {
//!     let Some(hits) = shadow::get_or_alloc::<AtomicU64, _>(conn, HITS) else { return 0 };
//!     // SAFETY: a zeroed AtomicU64 is 0; the block lives until `shadow::free(conn, HITS)`.
//!     unsafe { hits.as_ref() }.fetch_add(1, Ordering::Relaxed) + 1
//! }
//! # fn main() {}
//! ```

use crate::sys;
use std::ffi::{c_ulong, c_void};
use std::ptr::NonNull;

/// The id of one kind of shadow field (`unsigned long`).
pub type Id = c_ulong;

/// The block of `T`s alignment may not exceed.
pub const ALIGN: usize = 16;

fn key<O: ?Sized>(object: *const O) -> *const c_void {
    object.cast()
}

/// The block of (object, id) as a `T`, or `None` when there is none.
pub fn get<T, O: ?Sized>(object: *const O, id: Id) -> Option<NonNull<T>> {
    // SAFETY: the object pointer is only a key, never dereferenced.
    NonNull::new(unsafe { sys::hotagent_shadow_get(key(object), id) }.cast())
}

/// The block of (object, id) as a `T`; the first call makes it, `size_of::<T>()` zeroed bytes.
/// `None` when `T` is zero-sized or memory is exhausted. Two threads asking at once get the same
/// block. A block made earlier with another size or type is returned as it is: one id, one type.
///
/// Reading the `T` is `unsafe` for you: it must be valid when all its bytes are zero (integers,
/// atomics, raw pointers, `Option<&T>`, arrays and `#[repr(C)]` structs of these), and accesses
/// from several threads need atomics or a lock of your own.
pub fn get_or_alloc<T, O: ?Sized>(object: *const O, id: Id) -> Option<NonNull<T>> {
    const {
        assert!(
            std::mem::align_of::<T>() <= ALIGN,
            "shadow blocks are 16-byte aligned"
        )
    };
    get_or_alloc_bytes(object, id, std::mem::size_of::<T>()).map(NonNull::cast)
}

/// The block of (object, id), `size` zeroed bytes the first time (size ignored afterwards);
/// `None` when size is 0 or memory is exhausted.
pub fn get_or_alloc_bytes<O: ?Sized>(object: *const O, id: Id, size: usize) -> Option<NonNull<u8>> {
    // SAFETY: the object pointer is only a key, never dereferenced.
    NonNull::new(unsafe { sys::hotagent_shadow_get_or_alloc(key(object), id, size) }.cast())
}

/// Frees the block of (object, id); nothing happens when there is none. Pointers to it dangle
/// afterwards: the next [`get`] gives `None`, the next [`get_or_alloc`] a fresh zeroed block.
pub fn free<O: ?Sized>(object: *const O, id: Id) {
    // SAFETY: the object pointer is only a key, never dereferenced.
    unsafe { sys::hotagent_shadow_free(key(object), id) }
}

/// Frees the blocks of every object for `id`.
pub fn free_all(id: Id) {
    // SAFETY: no pointer is passed.
    unsafe { sys::hotagent_shadow_free_all(id) }
}
