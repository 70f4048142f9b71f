//! libcounter.so v2, in Rust: the same two functions as the C v1 (`counter.h`), and the hooks
//! that move the count between generations, so a reload neither resets it nor loses what was
//! counted under v2 when rolled back.
//!
//! v1 keeps the count in a private C static, `total`; this build keeps its own in [`TOTAL`].
//! `hotagent_migrate` (every other thread parked) copies v1's value in; `hotagent_unmigrate`
//! copies ours back before calls return to v1.

use hotagent_api::Ctx;
use std::ffi::{c_char, c_ulong};
use std::sync::atomic::{AtomicU64, Ordering};

/// The count of this generation: private (not exported), like v1's.
static TOTAL: AtomicU64 = AtomicU64::new(0);

/// The name of v1's static in its symbol table.
const PREVIOUS_TOTAL: &str = "total";

/// `unsigned long counter_next(void)`: the next number.
#[no_mangle]
pub extern "C" fn counter_next() -> c_ulong {
    TOTAL.fetch_add(1, Ordering::Relaxed) + 1
}

/// `const char *counter_version(void)`.
#[no_mangle]
pub extern "C" fn counter_version() -> *const c_char {
    c"Rust v2".as_ptr()
}

/// v1's counter. Its errors are `&'static str`: migrate and unmigrate must not allocate.
fn previous_total(ctx: &Ctx) -> Result<&AtomicU64, &'static str> {
    let total = ctx
        .previous_symbol::<u64>(PREVIOUS_TOTAL)
        .ok_or("libcounter.so: the previous build has no `total` to take over")?;
    if total
        .as_ptr()
        .align_offset(std::mem::align_of::<AtomicU64>())
        != 0
    {
        return Err("libcounter.so: the previous build's `total` is misaligned");
    }
    // SAFETY: `total` is v1's `unsigned long`, 8 bytes and (checked) 8-aligned, mapped for the life
    // of the process (old generations stay loaded); v1 itself only touches it atomically.
    Ok(unsafe { AtomicU64::from_ptr(total.as_ptr()) })
}

fn migrate(ctx: &Ctx) -> Result<(), &'static str> {
    let old = previous_total(ctx)?;
    TOTAL.store(old.load(Ordering::Relaxed), Ordering::Relaxed);
    Ok(())
}

fn unmigrate(ctx: &Ctx) -> Result<(), &'static str> {
    let old = previous_total(ctx)?;
    old.store(TOTAL.load(Ordering::Relaxed), Ordering::Relaxed);
    Ok(())
}

hotagent_api::hooks! {
    migrate => migrate,
    unmigrate => unmigrate,
}
