//! Executable thunks for per-object class conversion (x86-64), and the `extern "C"` slow path
//! they call.
//!
//! A thunk is reached like the method it stands for: by a call whose `this` is in rdi. Its slow
//! part saves every argument register (rdi, rsi, rdx, rcx, r8, r9, rax for variadic calls, r10,
//! xmm0-7), calls [`slow_path`] with its dispatcher, the object and its two constants, restores
//! them all and jumps to the address the dispatcher returned, the stack exactly as the caller
//! left it. An entry thunk first takes a fast path: unless the object's vptr is one of three
//! values it jumps straight on, at the cost of a load and three compares.
//!
//! Code pages are mapped once and never unmapped: a thread may be inside a thunk at any time.

use super::raw;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a thunk's slow path asks: given the object and the thunk's constants, where to jump.
/// Implementations must not unwind out (the slow path catches panics and asks `fallback`).
pub trait Dispatch: Sync {
    fn dispatch(&self, obj: u64, code: u64, target: u64) -> u64;
    /// Where to go when `dispatch` panicked: must not panic itself.
    fn fallback(&self, code: u64, target: u64) -> u64;
}

/// A dispatcher as one thin pointer a thunk can hold, kept for the life of the process.
pub fn dispatcher(d: &'static dyn Dispatch) -> u64 {
    Box::leak(Box::new(d)) as *const &'static dyn Dispatch as u64
}

/// Called by every thunk's slow path with the registers saved; returns the jump target.
extern "C" fn slow_path(d: u64, obj: u64, code: u64, target: u64) -> u64 {
    // SAFETY: `d` is embedded by `encode` from `dispatcher`, a leaked, never-freed box.
    let d: &'static dyn Dispatch = unsafe { *(d as *const &'static dyn Dispatch) };
    match catch_unwind(AssertUnwindSafe(|| d.dispatch(obj, code, target))) {
        Ok(t) => t,
        // A panic must not unwind into the program's caller, which is in the middle of a call.
        Err(_) => d.fallback(code, target),
    }
}

/// Bytes one thunk takes, code and constants.
pub const THUNK_SIZE: usize = 320;

/// One thunk: the slow path's constants, and for an entry thunk its fast path.
pub struct ThunkSpec {
    /// From [`dispatcher`].
    pub dispatch: u64,
    pub code: u64,
    pub target: u64,
    /// Jump to `target` at once unless the object's vptr is one of these.
    pub fast_unless: Option<[u64; 3]>,
}

/// A tiny assembler: bytes, and rip-relative references to the constants placed after the code.
struct Asm {
    code: Vec<u8>,
    consts: Vec<u64>,
    /// (offset of a disp32 that ends its instruction, index of the constant)
    refs: Vec<(usize, usize)>,
    /// (offset of a rel32, label)
    jumps: Vec<usize>,
}

impl Asm {
    fn bytes(&mut self, b: &[u8]) {
        self.code.extend_from_slice(b);
    }
    /// `op` then a rip-relative disp32 to a new constant `value`.
    fn rip(&mut self, op: &[u8], value: u64) {
        self.bytes(op);
        let k = match self.consts.iter().position(|&c| c == value) {
            Some(k) => k,
            None => {
                self.consts.push(value);
                self.consts.len() - 1
            }
        };
        self.refs.push((self.code.len(), k));
        self.bytes(&[0; 4]);
    }
    /// `je rel32` to the slow label, patched by `slow_here`.
    fn je_slow(&mut self) {
        self.bytes(&[0x0f, 0x84]);
        self.jumps.push(self.code.len());
        self.bytes(&[0; 4]);
    }
    fn slow_here(&mut self) {
        let here = self.code.len();
        for &at in &self.jumps {
            let rel = (here - (at + 4)) as i32;
            self.code[at..at + 4].copy_from_slice(&rel.to_le_bytes());
        }
    }
    fn finish(mut self) -> [u8; THUNK_SIZE] {
        let base = self.code.len().next_multiple_of(8);
        for &(at, k) in &self.refs {
            let rel = (base + 8 * k - (at + 4)) as i32;
            self.code[at..at + 4].copy_from_slice(&rel.to_le_bytes());
        }
        let mut out = [0xccu8; THUNK_SIZE]; // int3 padding
        out[..self.code.len()].copy_from_slice(&self.code);
        for (k, v) in self.consts.iter().enumerate() {
            out[base + 8 * k..base + 8 * k + 8].copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// Frame of the slow part: 8 pushes, then xmm0-7 (128 bytes) and 8 bytes that realign the stack.
const XMM_AREA: u8 = 136;
/// Where the caller's rdi lies above the final rsp: 136 + 7 * 8.
const SAVED_RDI: u32 = 192;

/// The machine code of one thunk, position-independent (its constants follow it).
pub fn encode(spec: &ThunkSpec) -> [u8; THUNK_SIZE] {
    let mut a = Asm {
        code: Vec::with_capacity(THUNK_SIZE),
        consts: Vec::new(),
        refs: Vec::new(),
        jumps: Vec::new(),
    };
    a.bytes(&[0xf3, 0x0f, 0x1e, 0xfa]); // endbr64: an indirect-branch target under IBT
    if let Some(unless) = spec.fast_unless {
        a.bytes(&[0x4c, 0x8b, 0x1f]); // mov r11, [rdi]
        for v in unless {
            a.rip(&[0x4c, 0x3b, 0x1d], v); // cmp r11, [rip+v]
            a.je_slow();
        }
        a.rip(&[0xff, 0x25], spec.target); // jmp [rip+target]
        a.slow_here();
    }
    // push rdi, rsi, rdx, rcx, r8, r9, rax, r10
    a.bytes(&[
        0x57, 0x56, 0x52, 0x51, 0x41, 0x50, 0x41, 0x51, 0x50, 0x41, 0x52,
    ]);
    a.bytes(&[0x48, 0x81, 0xec, XMM_AREA, 0, 0, 0]); // sub rsp, 136
    for k in 0..8u8 {
        a.bytes(&[0xf3, 0x0f, 0x7f, 0x44 | (k << 3), 0x24, 16 * k]); // movdqu [rsp+16k], xmmk
    }
    a.bytes(&[0x48, 0x8b, 0xb4, 0x24]); // mov rsi, [rsp+192]: the object
    a.bytes(&SAVED_RDI.to_le_bytes());
    a.rip(&[0x48, 0x8b, 0x3d], spec.dispatch); // mov rdi, [rip+dispatch]
    a.rip(&[0x48, 0x8b, 0x15], spec.code); // mov rdx, [rip+code]
    a.rip(&[0x48, 0x8b, 0x0d], spec.target); // mov rcx, [rip+target]
    a.rip(
        &[0xff, 0x15],
        slow_path as extern "C" fn(u64, u64, u64, u64) -> u64 as usize as u64,
    ); // call
    a.bytes(&[0x49, 0x89, 0xc3]); // mov r11, rax
    for k in 0..8u8 {
        a.bytes(&[0xf3, 0x0f, 0x6f, 0x44 | (k << 3), 0x24, 16 * k]); // movdqu xmmk, [rsp+16k]
    }
    a.bytes(&[0x48, 0x81, 0xc4, XMM_AREA, 0, 0, 0]); // add rsp, 136
                                                     // pop r10, rax, r9, r8, rcx, rdx, rsi, rdi
    a.bytes(&[
        0x41, 0x5a, 0x58, 0x41, 0x59, 0x41, 0x58, 0x59, 0x5a, 0x5e, 0x5f,
    ]);
    a.bytes(&[0x41, 0xff, 0xe3]); // jmp r11
    a.finish()
}

/// Maps `len` bytes of new memory holding `build(base)` (which may embed its own address) and
/// makes it read+execute for good; returns its base. Where the process may not turn writable
/// memory executable, the bytes are written into a fresh read+execute mapping through
/// `/proc/self/mem` instead.
pub fn install(len: usize, build: impl Fn(u64) -> Vec<u8>) -> io::Result<u64> {
    let len = len.next_multiple_of(super::page::page_size() as usize);
    let rw = map_anywhere(len, libc::PROT_READ | libc::PROT_WRITE)?;
    let bytes = build(rw);
    assert!(bytes.len() <= len, "thunk image larger than its mapping");
    // SAFETY: our fresh mapping of `len` bytes, read-write, not known to anyone yet.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), rw as *mut u8, bytes.len()) };
    // SAFETY: our fresh mapping, not known to anyone yet.
    let sealed =
        unsafe { super::mprotect::mprotect(rw, len as u64, libc::PROT_READ | libc::PROT_EXEC) };
    if sealed.is_ok() {
        return Ok(rw);
    }
    // SAFETY: the mapping just made; nothing references it.
    let _ = unsafe { raw::munmap(rw, len as u64) };
    let rx = map_anywhere(len, libc::PROT_READ | libc::PROT_EXEC)?;
    let written = super::self_mem::open_proc_mem()
        .and_then(|mem| super::self_mem::write_through_proc_mem(&mem, rx, &build(rx)));
    if let Err(e) = written {
        // SAFETY: as above: never handed out.
        let _ = unsafe { raw::munmap(rx, len as u64) };
        return Err(e);
    }
    Ok(rx)
}

fn map_anywhere(len: usize, prot: i32) -> io::Result<u64> {
    // SAFETY: a new anonymous private mapping at an address of the kernel's choosing replaces
    // nothing.
    unsafe {
        raw::syscall(
            libc::SYS_mmap,
            &[
                0,
                len,
                prot as usize,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as usize,
                usize::MAX,
                0,
            ],
        )
    }
    .map(|p| p as u64)
    .map_err(io::Error::from_raw_os_error)
}

#[cfg(test)]
pub mod testing;
