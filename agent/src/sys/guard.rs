//! Guard trampolines for a generation on probation (x86-64).
//!
//! While a generation is on probation, every pointer to a replaced function (GOT slots, the
//! symbol table) points at a per-function stub instead of the new code:
//! `movabs r11, <descriptor>; jmp [guard_enter]`. r11 is free at a function entry (PLT stubs use
//! it too). The descriptor names the generation's state word, `old`, `new`, the function's index
//! and the process's cookie secret.
//!
//! `hotagent_guard_enter` (one routine, written once, with CFI so an exception or a backtrace
//! unwinds through a guarded call):
//! - Passed: a tail jump to `new`; Reverted: a tail jump to `old` (the stack untouched).
//! - Active: a frame `push rbp; mov rbp, rsp` holding a cookie (`secret ^ rbp`) at `[rbp-8]`, the
//!   descriptor at `[rbp-16]`, the argument registers (rax too: a variadic call's count), the
//!   callee-saved rbx and r12-r15, xmm0-7, and at its bottom a copy of the caller's first
//!   [`STACK_ARGS`] bytes of stack arguments, so `call new` sees them where the caller left them.
//!   `new`'s answer (rax, rdx, xmm0, xmm1, st0) goes back untouched through `leave; ret`.
//! - `hotagent_guard_rerun`, entered from the probation signal handler with rsp/rbp set to such
//!   a frame: copies the stack arguments again (the callee may have written its own argument
//!   slots), restores every saved register and calls `old`, whose answer the original caller
//!   receives with its callee-saved registers as they were at the call.
//!
//! Limits: a function taking more than [`STACK_ARGS`] bytes of stack arguments is re-run (and
//! called) with only the first 256 of them copied; the copy reads 256 bytes above the caller's
//! stack pointer, which must be mapped (it is on any ordinary thread stack). mxcsr and the x87
//! control word are not saved, so a crashing `new` that changed them leaves them changed for
//! `old`. Side effects `new` had before it crashed stay. Under a CET shadow stack the re-run's
//! abandoned frames would not match: the guard assumes none (Linux enables it per process, opt-in).

// The integrator wires this into the reload; until then only the tests call it.

use super::raw;
use std::arch::global_asm;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Bytes of the caller's stack arguments a guarded call copies.
pub const STACK_ARGS: usize = 256;
/// Bytes below the frame's rbp: cookie, descriptor, 13 registers, padding, xmm0-7, arguments.
pub const FRAME_BELOW_RBP: u64 = 512;
/// Bytes one stub takes.
const STUB_SIZE: usize = 32;

const ACTIVE: u32 = 0;
const PASSED: u32 = 1;
pub(crate) const REVERTED: u32 = 2;

global_asm!(
    ".pushsection .text.hotagent_guard,\"ax\",@progbits",
    ".p2align 4",
    ".globl hotagent_guard_enter",
    ".hidden hotagent_guard_enter",
    ".type hotagent_guard_enter,@function",
    "hotagent_guard_enter:",
    ".cfi_startproc",
    "endbr64",
    // The callee's red zone is ours at an entry: park rax there while the state is read.
    "mov qword ptr [rsp-8], rax",
    "mov rax, qword ptr [r11]",
    "mov eax, dword ptr [rax]",
    "test eax, eax",
    "jz 2f",
    "cmp eax, 1",
    "mov rax, qword ptr [rsp-8]",
    "je 1f",
    "jmp qword ptr [r11+8]",
    "1:",
    "jmp qword ptr [r11+16]",
    "2:",
    "mov rax, qword ptr [rsp-8]",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "sub rsp, 512",
    // The descriptor before the cookie: a frame with a cookie always names its descriptor.
    "mov qword ptr [rbp-16], r11",
    "mov r11, qword ptr [r11+32]",
    "xor r11, rbp",
    "mov qword ptr [rbp-8], r11",
    "mov qword ptr [rbp-24], rdi",
    "mov qword ptr [rbp-32], rsi",
    "mov qword ptr [rbp-40], rdx",
    "mov qword ptr [rbp-48], rcx",
    "mov qword ptr [rbp-56], r8",
    "mov qword ptr [rbp-64], r9",
    "mov qword ptr [rbp-72], rax",
    "mov qword ptr [rbp-80], rbx",
    "mov qword ptr [rbp-88], r12",
    "mov qword ptr [rbp-96], r13",
    "mov qword ptr [rbp-104], r14",
    "mov qword ptr [rbp-112], r15",
    "movdqu xmmword ptr [rbp-256], xmm0",
    "movdqu xmmword ptr [rbp-240], xmm1",
    "movdqu xmmword ptr [rbp-224], xmm2",
    "movdqu xmmword ptr [rbp-208], xmm3",
    "movdqu xmmword ptr [rbp-192], xmm4",
    "movdqu xmmword ptr [rbp-176], xmm5",
    "movdqu xmmword ptr [rbp-160], xmm6",
    "movdqu xmmword ptr [rbp-144], xmm7",
    "lea rsi, [rbp+16]",
    "mov rdi, rsp",
    "mov ecx, {qwords}",
    "cld",
    "rep movsq",
    "mov rdi, qword ptr [rbp-24]",
    "mov rsi, qword ptr [rbp-32]",
    "mov rcx, qword ptr [rbp-48]",
    "mov r11, qword ptr [rbp-16]",
    "call qword ptr [r11+16]",
    ".cfi_remember_state",
    "leave",
    ".cfi_def_cfa rsp, 8",
    ".cfi_restore rbp",
    "ret",
    ".cfi_restore_state",
    ".globl hotagent_guard_rerun",
    ".hidden hotagent_guard_rerun",
    "hotagent_guard_rerun:",
    "lea rsp, [rbp-512]",
    "lea rsi, [rbp+16]",
    "mov rdi, rsp",
    "mov ecx, {qwords}",
    "cld",
    "rep movsq",
    "movdqu xmm0, xmmword ptr [rbp-256]",
    "movdqu xmm1, xmmword ptr [rbp-240]",
    "movdqu xmm2, xmmword ptr [rbp-224]",
    "movdqu xmm3, xmmword ptr [rbp-208]",
    "movdqu xmm4, xmmword ptr [rbp-192]",
    "movdqu xmm5, xmmword ptr [rbp-176]",
    "movdqu xmm6, xmmword ptr [rbp-160]",
    "movdqu xmm7, xmmword ptr [rbp-144]",
    "mov rbx, qword ptr [rbp-80]",
    "mov r12, qword ptr [rbp-88]",
    "mov r13, qword ptr [rbp-96]",
    "mov r14, qword ptr [rbp-104]",
    "mov r15, qword ptr [rbp-112]",
    "mov rax, qword ptr [rbp-72]",
    "mov r9, qword ptr [rbp-64]",
    "mov r8, qword ptr [rbp-56]",
    "mov rcx, qword ptr [rbp-48]",
    "mov rdx, qword ptr [rbp-40]",
    "mov rsi, qword ptr [rbp-32]",
    "mov rdi, qword ptr [rbp-24]",
    "mov r11, qword ptr [rbp-16]",
    "call qword ptr [r11+8]",
    "leave",
    ".cfi_def_cfa rsp, 8",
    ".cfi_restore rbp",
    "ret",
    ".cfi_endproc",
    ".size hotagent_guard_enter, .-hotagent_guard_enter",
    // A signal return trampoline for handlers installed with the raw system call, byte for byte
    // glibc's `__restore_rt` (`mov rax, 15; syscall`), the pattern unwinders recognise.
    ".p2align 4",
    ".globl hotagent_guard_restorer",
    ".hidden hotagent_guard_restorer",
    ".type hotagent_guard_restorer,@function",
    "hotagent_guard_restorer:",
    ".byte 0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05",
    ".size hotagent_guard_restorer, .-hotagent_guard_restorer",
    ".popsection",
    qwords = const STACK_ARGS / 8,
);

extern "C" {
    fn hotagent_guard_enter();
    fn hotagent_guard_rerun();
    fn hotagent_guard_restorer();
}

/// Where a guarded call's frame continues after the handler rewrote a crashed thread's context.
pub fn rerun_address() -> u64 {
    hotagent_guard_rerun as unsafe extern "C" fn() as usize as u64
}

/// The address of the common guard routine.
pub fn enter_address() -> u64 {
    hotagent_guard_enter as unsafe extern "C" fn() as usize as u64
}

/// A signal return trampoline (`rt_sigreturn`).
pub fn restorer_address() -> u64 {
    hotagent_guard_restorer as unsafe extern "C" fn() as usize as u64
}

/// The per-process secret a frame's cookie is XORed with (never 0 once drawn).
static SECRET: AtomicU64 = AtomicU64::new(0);

/// The cookie secret, drawn from `getrandom` at first use.
pub fn secret() -> io::Result<u64> {
    let s = SECRET.load(Ordering::SeqCst);
    if s != 0 {
        return Ok(s);
    }
    let drawn = raw::random_u64().map_err(io::Error::from_raw_os_error)? | 1;
    Ok(
        match SECRET.compare_exchange(0, drawn, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => drawn,
            Err(other) => other,
        },
    )
}

/// What a stub hands `guard_enter` in r11; offsets are the assembly's.
#[repr(C)]
pub(crate) struct Descriptor {
    state: *const AtomicU32,
    old: u64,
    new: u64,
    pub(crate) index: u64,
    secret: u64,
}

// SAFETY: a descriptor never changes after `GuardSet::new` builds it, and `state` points at a
// leaked atomic: sharing it between threads (the agent's, and the guards' callers) is sound.
unsafe impl Sync for Descriptor {}
// SAFETY: as above; nothing in it is tied to the thread that made it.
unsafe impl Send for Descriptor {}

/// One guarded function: the previous generation's entry, the new one and its size.
#[derive(Clone, Debug)]
pub struct GuardFn {
    pub old: u64,
    pub new: u64,
    pub new_size: u64,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardState {
    Active,
    Passed,
    Reverted,
}

/// What the probation handler saw when it reverted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crash {
    pub signal: i32,
    pub pc: u64,
    pub function: Option<usize>,
    pub rerun: bool,
}

/// The guards of one generation on probation. Leaked, never freed: a pointer taken during
/// probation may reach a stub forever.
pub struct GuardSet {
    state: &'static AtomicU32,
    descs: &'static [Descriptor],
    stubs: u64,
    funcs: Vec<GuardFn>,
    text: Vec<(u64, u64)>,
    pub(crate) label: String,
    pub(crate) back: String,
    crash_signal: AtomicI32,
    crash_pc: AtomicU64,
    crash_function: AtomicUsize,
    crash_rerun: AtomicBool,
    /// Set last, once the fields above hold the crash.
    crashed: AtomicBool,
}

impl GuardSet {
    /// `text`: the new library's executable ranges `[start, end)`; `label`/`back` go into the
    /// warning line ("generation 2 (libfoo_v2.so)", "generation 1").
    pub fn new(
        funcs: Vec<GuardFn>,
        text: Vec<(u64, u64)>,
        label: &str,
        back: &str,
    ) -> io::Result<&'static GuardSet> {
        let secret = secret()?;
        let state: &'static AtomicU32 = Box::leak(Box::new(AtomicU32::new(ACTIVE)));
        let descs: &'static [Descriptor] = Box::leak(
            funcs
                .iter()
                .enumerate()
                .map(|(i, f)| Descriptor {
                    state,
                    old: f.old,
                    new: f.new,
                    index: i as u64,
                    secret,
                })
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        let enter = enter_address();
        let stubs = if descs.is_empty() {
            0
        } else {
            super::thunk::install(descs.len() * STUB_SIZE, |_| {
                descs.iter().flat_map(|d| stub_code(d, enter)).collect()
            })?
        };
        Ok(Box::leak(Box::new(GuardSet {
            state,
            descs,
            stubs,
            funcs,
            text,
            label: label.to_owned(),
            back: back.to_owned(),
            crash_signal: AtomicI32::new(0),
            crash_pc: AtomicU64::new(0),
            crash_function: AtomicUsize::new(usize::MAX),
            crash_rerun: AtomicBool::new(false),
            crashed: AtomicBool::new(false),
        })))
    }

    /// The stub standing for function `i`: what GOT slots point at during probation.
    pub fn stub(&self, i: usize) -> u64 {
        assert!(i < self.descs.len(), "no guarded function {i}");
        self.stubs + (i * STUB_SIZE) as u64
    }

    pub fn len(&self) -> usize {
        self.funcs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.funcs.is_empty()
    }

    pub fn function(&self, i: usize) -> &GuardFn {
        &self.funcs[i]
    }

    pub fn state(&self) -> GuardState {
        match self.state.load(Ordering::SeqCst) {
            ACTIVE => GuardState::Active,
            PASSED => GuardState::Passed,
            _ => GuardState::Reverted,
        }
    }

    /// Active -> Passed: calls through the stubs go straight to the new code.
    pub fn pass(&self) -> bool {
        self.transition(PASSED)
    }

    /// Active -> Reverted (an operator's rollback during probation).
    pub fn revert(&self) -> bool {
        self.transition(REVERTED)
    }

    pub(crate) fn transition(&self, to: u32) -> bool {
        self.state
            .compare_exchange(ACTIVE, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// What the handler recorded, once it reverted on a crash.
    pub fn crash(&self) -> Option<Crash> {
        if !self.crashed.load(Ordering::Acquire) {
            return None;
        }
        let f = self.crash_function.load(Ordering::SeqCst);
        Some(Crash {
            signal: self.crash_signal.load(Ordering::SeqCst),
            pc: self.crash_pc.load(Ordering::SeqCst),
            function: (f != usize::MAX).then_some(f),
            rerun: self.crash_rerun.load(Ordering::SeqCst),
        })
    }

    /// Records a crash (by the handler that won the revert; allocates nothing).
    pub(crate) fn record(&self, c: &Crash) {
        self.crash_signal.store(c.signal, Ordering::SeqCst);
        self.crash_pc.store(c.pc, Ordering::SeqCst);
        self.crash_function
            .store(c.function.unwrap_or(usize::MAX), Ordering::SeqCst);
        self.crash_rerun.store(c.rerun, Ordering::SeqCst);
        self.crashed.store(true, Ordering::Release);
    }

    pub(crate) fn in_text(&self, addr: u64) -> bool {
        self.text.iter().any(|&(s, e)| (s..e).contains(&addr))
    }

    /// The guarded function whose new code holds `pc`.
    pub(crate) fn function_at(&self, pc: u64) -> Option<usize> {
        self.funcs
            .iter()
            .position(|f| (f.new..f.new.saturating_add(f.new_size)).contains(&pc))
    }

    /// The index of the descriptor at address `addr`, if it is one of this set's.
    pub(crate) fn descriptor_at(&self, addr: u64) -> Option<usize> {
        let base = self.descs.as_ptr() as u64;
        let size = std::mem::size_of::<Descriptor>() as u64;
        let off = addr.checked_sub(base)?;
        (off % size == 0 && off / size < self.descs.len() as u64).then_some((off / size) as usize)
    }

    pub(crate) fn secret(&self) -> u64 {
        self.descs.first().map_or(0, |d| d.secret)
    }
}

/// `endbr64; movabs r11, desc; jmp [rip+2]; int3 x4; .quad enter`.
fn stub_code(d: &Descriptor, enter: u64) -> [u8; STUB_SIZE] {
    let mut s = [0xccu8; STUB_SIZE];
    s[..4].copy_from_slice(&[0xf3, 0x0f, 0x1e, 0xfa]);
    s[4..6].copy_from_slice(&[0x49, 0xbb]);
    s[6..14].copy_from_slice(&(d as *const Descriptor as u64).to_le_bytes());
    s[14..16].copy_from_slice(&[0xff, 0x25]);
    s[16..20].copy_from_slice(&4i32.to_le_bytes());
    s[24..32].copy_from_slice(&enter.to_le_bytes());
    s
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
