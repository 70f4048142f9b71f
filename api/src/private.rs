//! What the code [`hooks!`](crate::hooks) generates calls: not part of the API.

use crate::Ctx;
use std::any::Any;
use std::ffi::c_int;
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The text of a panic's payload (`panic!` with a literal or a format).
pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs a refusable hook: 0 when `f` returned `Ok`, else -1 with the reason recorded. A null
/// ctx (never from the agent) gives -1 without calling `f`.
///
/// # Safety
/// `ctx` is null or the agent's context of the current hook call.
pub unsafe fn run<E: Display>(
    hook: &str,
    ctx: *mut Ctx,
    f: impl FnOnce(&Ctx) -> Result<(), E>,
) -> c_int {
    // SAFETY: the caller passes null or a live ctx for the duration of this call.
    let Some(ctx) = (unsafe { ctx.as_ref() }) else {
        return -1;
    };
    match catch_unwind(AssertUnwindSafe(|| f(ctx))) {
        Ok(Ok(())) => 0,
        Ok(Err(why)) => ctx.fail_fmt(format_args!("{why}")),
        Err(payload) => {
            let rc = ctx.fail_fmt(format_args!(
                "hotagent_{hook} panicked: {}",
                panic_text(payload.as_ref())
            ));
            // The payload is dropped after the message is recorded (as late as possible).
            drop(payload);
            rc
        }
    }
}

/// Runs `hotagent_committed`: it cannot refuse, but a panic must not unwind into the agent;
/// its message is recorded all the same.
///
/// # Safety
/// As for [`run`].
pub unsafe fn run_committed(ctx: *mut Ctx, f: impl FnOnce(&Ctx)) {
    // SAFETY: as in `run`.
    let Some(ctx) = (unsafe { ctx.as_ref() }) else {
        return;
    };
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(ctx))) {
        ctx.fail_fmt(format_args!(
            "hotagent_committed panicked: {}",
            panic_text(payload.as_ref())
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_found_in_both_payload_kinds() {
        let literal = catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_text(literal.as_ref()), "plain");
        let n = 3;
        let formatted = catch_unwind(|| panic!("count {n}")).unwrap_err();
        assert_eq!(panic_text(formatted.as_ref()), "count 3");
        let other = catch_unwind(|| std::panic::panic_any(5u8)).unwrap_err();
        assert_eq!(panic_text(other.as_ref()), "(no message)");
    }

    #[test]
    fn a_null_ctx_refuses_without_calling_the_hook() {
        let mut called = false;
        // SAFETY: null is allowed.
        let rc = unsafe {
            run("prepare", std::ptr::null_mut(), |_| {
                called = true;
                Ok::<(), &str>(())
            })
        };
        assert_eq!(rc, -1);
        assert!(!called);
        // SAFETY: null is allowed.
        unsafe { run_committed(std::ptr::null_mut(), |_| called = true) };
        assert!(!called);
    }
}
