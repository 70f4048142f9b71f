//! Reading and moving the program counter of an interrupted context, for signal handlers.

/// The program counter of the interrupted context.
///
/// # Safety
/// `ctx` must be the `ucontext_t` the kernel passed to an `SA_SIGINFO` handler.
pub unsafe fn pc(ctx: *mut libc::c_void) -> u64 {
    let uc = ctx as *const libc::ucontext_t;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller passes the handler's ucontext, valid for the handler's duration.
    let pc = unsafe { (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] as u64 };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above.
    let pc = unsafe { (*uc).uc_mcontext.pc };
    pc
}

/// Makes the interrupted context resume at `to`.
///
/// # Safety
/// `ctx` must be the `ucontext_t` the kernel passed to an `SA_SIGINFO` handler, and `to` an
/// address the thread may run at with its registers as they are.
pub unsafe fn set_pc(ctx: *mut libc::c_void, to: u64) {
    let uc = ctx as *mut libc::ucontext_t;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as the caller promised; REG_RIP < NGREG.
    unsafe {
        (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] = to as i64
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above.
    unsafe {
        (*uc).uc_mcontext.pc = to
    };
}
