//! Write hotagent patch libraries in Rust.
//!
//! A patch library is a new build of a library a running program already uses; `hotctl reload`
//! switches the program's calls over to it. This crate is the Rust side of `include/hotagent.h`:
//!
//! - [`hooks!`] exports the optional hooks the agent calls during a reload or rollback
//!   (`hotagent_prepare`, `hotagent_migrate`, `hotagent_unmigrate`, `hotagent_committed`), with
//!   the exact C signatures, catching panics at the boundary;
//! - [`Ctx`] is what a hook receives: [`Ctx::fail`] records why it refuses,
//!   [`Ctx::previous_symbol`] finds state of the generation being replaced,
//!   [`Ctx::convert_class`] registers a converter for C++ objects;
//! - [`shadow`]: extra fields attached to any object by its address.
//!
//! Build the patch as a `cdylib` with a plain `cargo build`: the agent's services stay undefined
//! in it and the loader binds them to the preloaded `libhotagent.so` when the patch is loaded.
//! Give it the soname of the library it replaces (a `build.rs` printing
//! `cargo:rustc-cdylib-link-arg=-Wl,-soname,libcounter.so`), or name that library with
//! `hotctl reload --replace`.
//!
//! # Example
//!
//! A new build of `libcounter.so` whose private counter outlives the reload: migrate copies the
//! old generation's value in, unmigrate hands it back on rollback.
//!
//! ```no_run
//! use hotagent_api::Ctx;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! static TOTAL: AtomicU64 = AtomicU64::new(0);
//!
//! #[no_mangle]
//! pub extern "C" fn counter_next() -> u64 {
//!     TOTAL.fetch_add(1, Ordering::Relaxed) + 1
//! }
//!
//! // Runs with every other thread parked: no allocation, no locks (so the errors are &'static str).
//! fn migrate(ctx: &Ctx) -> Result<(), &'static str> {
//!     let old = ctx.previous_symbol::<AtomicU64>("TOTAL").ok_or("no TOTAL in the old build")?;
//!     // SAFETY: the old build's TOTAL is an AtomicU64 too, and stays mapped.
//!     let old = unsafe { old.as_ref() };
//!     TOTAL.store(old.load(Ordering::Relaxed), Ordering::Relaxed);
//!     Ok(())
//! }
//!
//! fn unmigrate(ctx: &Ctx) -> Result<(), &'static str> {
//!     let old = ctx.previous_symbol::<AtomicU64>("TOTAL").ok_or("no TOTAL in the old build")?;
//!     // SAFETY: as above.
//!     unsafe { old.as_ref() }.store(TOTAL.load(Ordering::Relaxed), Ordering::Relaxed);
//!     Ok(())
//! }
//!
//! hotagent_api::hooks! {
//!     migrate => migrate,
//!     unmigrate => unmigrate,
//! }
//! # fn main() {}
//! ```
//!
//! `previous_symbol` finds private statics too (through `.symtab`), but a Rust `static` is
//! mangled: give the ones you look up `#[no_mangle]` or `#[export_name]` (or look up the mangled
//! name).

#![deny(missing_docs)]

mod cstr;
#[doc(hidden)]
pub mod private;
pub mod shadow;
pub mod sys;

use cstr::StackStr;
use std::ffi::{c_int, c_void, CStr};
use std::fmt;
use std::marker::{PhantomData, PhantomPinned};
use std::ptr::NonNull;

/// How many bytes of a message [`Ctx::fail`] passes on (longer ones are cut).
pub const MESSAGE_MAX: usize = 511;

/// How long a symbol name may be, in bytes, for [`Ctx::previous_symbol`] and
/// [`Ctx::convert_class`] (names are copied to the stack: no allocation).
pub const NAME_MAX: usize = 1023;

/// `struct hotagent_ctx`: the context of one hook call, created by the agent. Only ever seen
/// behind a reference or pointer, and valid for the duration of the hook call.
#[repr(C)]
pub struct Ctx {
    _opaque: [u8; 0],
    // Neither Send nor Sync, nor Unpin: the agent owns it, and it is not ours to move or share.
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// The agent refused [`Ctx::convert_class`]; its reason is recorded and reported by hotctl.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The agent answered -1 (no such vtable, the method counts differ, not during prepare, ...).
    #[error("the agent refused the class conversion {old} -> {new} (hotctl reports why)")]
    ByAgent {
        /// The old vtable symbol.
        old: String,
        /// The new vtable symbol.
        new: String,
    },
    /// A name was too long ([`NAME_MAX`]) or held a NUL byte, so it was not passed on.
    #[error("bad symbol name {0:?}: longer than {NAME_MAX} bytes or holding a NUL")]
    BadName(String),
}

impl Ctx {
    fn raw(&self) -> *mut Ctx {
        (self as *const Ctx).cast_mut()
    }

    /// Records why the current hook refuses (the agent keeps the first message of a hook call)
    /// and returns -1, the hook's refusal: `return ctx.fail("why")` from a raw hook.
    ///
    /// Allocates nothing (the message is copied to the stack and cut at [`MESSAGE_MAX`] bytes),
    /// so it is safe in migrate and unmigrate.
    pub fn fail(&self, message: &str) -> c_int {
        self.fail_fmt(format_args!("{message}"))
    }

    /// [`Ctx::fail`] with a formatted message (`ctx.fail_fmt(format_args!("bad {x}"))`), formatted
    /// on the stack: no allocation as long as the arguments' `Display` allocate none.
    pub fn fail_fmt(&self, message: fmt::Arguments<'_>) -> c_int {
        let mut text = StackStr::<{ MESSAGE_MAX + 1 }>::new();
        // Our writer never fails; an argument's Display may, which leaves what was written.
        let _ = fmt::write(&mut text, message);
        self.fail_cstr(text.as_cstr())
    }

    /// [`Ctx::fail`] with a message that is already a C string.
    pub fn fail_cstr(&self, message: &CStr) -> c_int {
        // SAFETY: ctx is the agent's (we only exist behind its pointer) and message is
        // NUL-terminated and alive for the call.
        unsafe { sys::hotagent_fail(self.raw(), message.as_ptr()) }
    }

    /// The address of `name` (a function or a static, exported or private) in the generation this
    /// library replaces, typed as `T`; `None` when there is no such symbol (or the name is longer
    /// than [`NAME_MAX`] or holds a NUL). In migrate: the state to take over; in unmigrate: where
    /// to hand it back. Allocates nothing.
    ///
    /// The pointer is only as good as your knowledge of the old build: dereferencing it is up to
    /// you (`unsafe`), with the old layout of the object.
    pub fn previous_symbol<T>(&self, name: &str) -> Option<NonNull<T>> {
        let name = StackStr::<{ NAME_MAX + 1 }>::exact(name)?;
        self.previous_symbol_cstr(name.as_cstr())
    }

    /// [`Ctx::previous_symbol`] with a name that is already a C string.
    pub fn previous_symbol_cstr<T>(&self, name: &CStr) -> Option<NonNull<T>> {
        // SAFETY: ctx is the agent's and name is NUL-terminated and alive for the call.
        let p = unsafe { sys::hotagent_previous_symbol(self.raw(), name.as_ptr()) };
        NonNull::new(p.cast())
    }

    /// Only in prepare: from the switch on, every object whose vptr is the old generation's
    /// `old_vtable` (e.g. `_ZTV5nsImp`) is converted by `upgrade(object)` once, before any method
    /// runs on it, and then carries this library's `new_vtable`. A rollback converts objects back
    /// with `downgrade`; without one, a rollback is refused while such objects may exist.
    ///
    /// On refusal the agent has recorded why, and the hook should refuse too (return the error).
    pub fn convert_class(
        &self,
        old_vtable: &str,
        new_vtable: &str,
        upgrade: unsafe extern "C" fn(*mut c_void),
        downgrade: Option<unsafe extern "C" fn(*mut c_void)>,
    ) -> Result<(), Refused> {
        let old = StackStr::<{ NAME_MAX + 1 }>::exact(old_vtable)
            .ok_or_else(|| Refused::BadName(old_vtable.to_string()))?;
        let new = StackStr::<{ NAME_MAX + 1 }>::exact(new_vtable)
            .ok_or_else(|| Refused::BadName(new_vtable.to_string()))?;
        // SAFETY: ctx is the agent's; both names are NUL-terminated and alive for the call; the
        // converters are functions of this library, which stays loaded while objects may need them.
        let rc = unsafe {
            sys::hotagent_convert_class(
                self.raw(),
                old.as_ptr(),
                new.as_ptr(),
                Some(upgrade),
                downgrade,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(Refused::ByAgent {
                old: old_vtable.to_string(),
                new: new_vtable.to_string(),
            })
        }
    }
}

/// Exports the agent's hooks from a patch library, each calling one of your functions with the
/// hook's [`Ctx`]:
///
/// ```no_run
/// # use hotagent_api::Ctx;
/// fn prepare(ctx: &Ctx) -> Result<(), String> {
///     if std::env::var_os("NO_UPGRADE").is_some() {
///         return Err("NO_UPGRADE is set".into());
///     }
///     Ok(())
/// }
/// fn committed(_ctx: &Ctx) {
///     eprintln!("now running the new build");
/// }
/// hotagent_api::hooks! {
///     prepare => prepare,
///     committed => committed,
/// }
/// # fn main() {}
/// ```
///
/// Every entry is optional; the names are `prepare`, `migrate`, `unmigrate` (functions
/// `fn(&Ctx) -> Result<(), E>` with `E: Display`: `Err(e)` refuses, with `e` as the reason) and
/// `committed` (`fn(&Ctx)`). Each generates the `#[no_mangle] extern "C"` function of
/// `include/hotagent.h`. A panic in your function is caught there: it refuses the step with the
/// panic's message (for committed, which cannot refuse, the message is still recorded).
///
/// migrate and unmigrate run with every other thread parked: they must not allocate or take a
/// lock (return `&'static str` errors there; a panic allocates its payload).
#[macro_export]
macro_rules! hooks {
    ($($hook:ident => $f:path),* $(,)?) => {
        $( $crate::__hotagent_hook!($hook => $f); )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hotagent_hook {
    (prepare => $f:path) => {
        /// The reload's veto point (include/hotagent.h).
        #[no_mangle]
        // The agent's pointer goes to `run`, whose contract it meets; the C signature is fixed.
        #[allow(clippy::not_unsafe_ptr_arg_deref)]
        pub extern "C" fn hotagent_prepare(ctx: *mut $crate::Ctx) -> ::std::ffi::c_int {
            // SAFETY: the agent calls hooks with its context of this call.
            unsafe { $crate::private::run("prepare", ctx, $f) }
        }
    };
    (migrate => $f:path) => {
        /// Takes state over from the previous generation (include/hotagent.h).
        #[no_mangle]
        // The agent's pointer goes to `run`, whose contract it meets; the C signature is fixed.
        #[allow(clippy::not_unsafe_ptr_arg_deref)]
        pub extern "C" fn hotagent_migrate(ctx: *mut $crate::Ctx) -> ::std::ffi::c_int {
            // SAFETY: the agent calls hooks with its context of this call.
            unsafe { $crate::private::run("migrate", ctx, $f) }
        }
    };
    (unmigrate => $f:path) => {
        /// Hands state back on rollback (include/hotagent.h).
        #[no_mangle]
        // The agent's pointer goes to `run`, whose contract it meets; the C signature is fixed.
        #[allow(clippy::not_unsafe_ptr_arg_deref)]
        pub extern "C" fn hotagent_unmigrate(ctx: *mut $crate::Ctx) -> ::std::ffi::c_int {
            // SAFETY: the agent calls hooks with its context of this call.
            unsafe { $crate::private::run("unmigrate", ctx, $f) }
        }
    };
    (committed => $f:path) => {
        /// Runs after the switch (include/hotagent.h).
        #[no_mangle]
        // The agent's pointer goes to `run`, whose contract it meets; the C signature is fixed.
        #[allow(clippy::not_unsafe_ptr_arg_deref)]
        pub extern "C" fn hotagent_committed(ctx: *mut $crate::Ctx) {
            // SAFETY: the agent calls hooks with its context of this call.
            unsafe { $crate::private::run_committed(ctx, $f) }
        }
    };
    ($other:ident => $f:path) => {
        ::std::compile_error!(::std::concat!(
            "unknown hotagent hook `",
            ::std::stringify!($other),
            "`: the hooks are prepare, migrate, unmigrate and committed"
        ));
    };
}
