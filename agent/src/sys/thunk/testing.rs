//! Test-only ways to call code by address, as compiled C++ calls a method: the conversion tests
//! run real thunks with real registers.

use core::arch::x86_64::{__m128i, _mm_set_epi64x};
use std::arch::{asm, global_asm};
use std::sync::Mutex;

/// A method `u64 f(Obj *this)`.
pub fn call_method(f: u64, obj: u64) -> u64 {
    // SAFETY: the tests pass thunks or `extern "C" fn(&Obj) -> u64` methods, and live objects.
    let f: extern "C" fn(u64) -> u64 = unsafe { std::mem::transmute(f) };
    f(obj)
}

/// `this`, five integers (the rest of the six integer registers), eight doubles (xmm0-7) and two
/// integers on the stack.
pub type ArgsMethod = extern "C" fn(
    u64,
    u64,
    u64,
    u64,
    u64,
    u64,
    f64,
    f64,
    f64,
    f64,
    f64,
    f64,
    f64,
    f64,
    u64,
    u64,
) -> u64;

pub fn call_args(f: u64, obj: u64, i: [u64; 5], x: [f64; 8], s: [u64; 2]) -> u64 {
    // SAFETY: the tests pass a thunk whose target is an `ArgsMethod`.
    let f: ArgsMethod = unsafe { std::mem::transmute(f) };
    f(
        obj, i[0], i[1], i[2], i[3], i[4], x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], s[0],
        s[1],
    )
}

/// What the recorder saw: rdi, rsi, rdx, rcx, r8, r9, rax, r10, xmm0-7 (two words each), the two
/// stack words above the return address, and rsp itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registers {
    pub gpr: [u64; 8],
    pub xmm: [[u64; 2]; 8],
    pub stack: [u64; 2],
    pub rsp: u64,
}

static mut RECORD: [u64; 27] = [0; 27];
static RECORDER_LOCK: Mutex<()> = Mutex::new(());

global_asm!(
    ".pushsection .text",
    ".globl hotagent_test_recorder",
    ".hidden hotagent_test_recorder",
    "hotagent_test_recorder:",
    "lea r11, [rip + {rec}]",
    "mov [r11], rdi",
    "mov [r11 + 8], rsi",
    "mov [r11 + 16], rdx",
    "mov [r11 + 24], rcx",
    "mov [r11 + 32], r8",
    "mov [r11 + 40], r9",
    "mov [r11 + 48], rax",
    "mov [r11 + 56], r10",
    "movdqu [r11 + 64], xmm0",
    "movdqu [r11 + 80], xmm1",
    "movdqu [r11 + 96], xmm2",
    "movdqu [r11 + 112], xmm3",
    "movdqu [r11 + 128], xmm4",
    "movdqu [r11 + 144], xmm5",
    "movdqu [r11 + 160], xmm6",
    "movdqu [r11 + 176], xmm7",
    "mov rax, [rsp + 8]",
    "mov [r11 + 192], rax",
    "mov rax, [rsp + 16]",
    "mov [r11 + 200], rax",
    "mov [r11 + 208], rsp",
    "ret",
    ".popsection",
    rec = sym RECORD,
);

extern "C" {
    fn hotagent_test_recorder();
}

/// The address of a method that records every argument register and the stack, then returns.
pub fn recorder() -> u64 {
    hotagent_test_recorder as *const () as u64
}

/// Calls `f` with the given argument registers and stack words, as a caller would; returns what
/// the recorder saw (when `f` leads to it) and the rsp the callee must have seen on entry.
pub fn call_with_registers(f: u64, r: &Registers) -> (Registers, u64) {
    let _one = RECORDER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: building vector values from integers has no preconditions (SSE2 is baseline).
    let x: [__m128i; 8] =
        std::array::from_fn(|k| unsafe { _mm_set_epi64x(r.xmm[k][1] as i64, r.xmm[k][0] as i64) });
    let entry_rsp: u64;
    // SAFETY: `f` is a thunk that preserves every register the C ABI says a callee preserves and
    // returns through the recorder; r12-r14 are callee-saved, so they survive the call; the stack
    // is realigned and restored around it.
    unsafe {
        asm!(
            "mov r12, rsp",
            "and rsp, -16",
            "push qword ptr [r13 + 8]",
            "push qword ptr [r13]",
            "lea r14, [rsp - 8]",
            "call r11",
            "mov rsp, r12",
            in("rdi") r.gpr[0],
            in("rsi") r.gpr[1],
            in("rdx") r.gpr[2],
            in("rcx") r.gpr[3],
            in("r8") r.gpr[4],
            in("r9") r.gpr[5],
            in("rax") r.gpr[6],
            in("r10") r.gpr[7],
            in("r11") f,
            in("r13") r.stack.as_ptr(),
            out("r12") _,
            lateout("r14") entry_rsp,
            in("xmm0") x[0],
            in("xmm1") x[1],
            in("xmm2") x[2],
            in("xmm3") x[3],
            in("xmm4") x[4],
            in("xmm5") x[5],
            in("xmm6") x[6],
            in("xmm7") x[7],
            clobber_abi("C"),
        );
    }
    // SAFETY: the recorder wrote RECORD in this thread, under the lock; read it by value.
    let w: [u64; 27] = unsafe { std::ptr::addr_of!(RECORD).read_volatile() };
    let mut xmm = [[0u64; 2]; 8];
    for (k, pair) in xmm.iter_mut().enumerate() {
        *pair = [w[8 + 2 * k], w[9 + 2 * k]];
    }
    (
        Registers {
            gpr: w[..8].try_into().expect("8 words"),
            xmm,
            stack: [w[24], w[25]],
            rsp: w[26],
        },
        entry_rsp,
    )
}
