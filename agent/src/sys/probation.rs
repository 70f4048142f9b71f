//! The probation signal handler: a crash in a generation on probation reverts it, from the
//! handler, and re-runs the crashed call on the previous generation (see [`super::guard`]).
//!
//! It watches SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT with SA_SIGINFO (the fault address
//! and the sender), SA_ONSTACK (a stack overflow reaches us on the thread's alternate stack, as
//! it would reach the program's handler) and no SA_NODEFER: returning through `rt_sigreturn`
//! restores the interrupted mask, so a crash of the re-run call is delivered normally, while a
//! fault inside the handler itself (it has none: memory it is not sure of is read with
//! `process_vm_readv`) could not recurse.
//!
//! A signal is ours when a set is armed and Active (or Reverted, for a call already in flight in
//! the new code when another thread's crash reverted it), the signal is synchronous (si_code > 0;
//! SIGABRT: sent by this process), and either the PC lies in the generation's text or the thread
//! is inside a guarded call whose frame is found on its stack with a word between the
//! interrupted rsp and that frame pointing into the text (the new code is on the call path:
//! abort(), a libc call it made). Anything else chains to the action that was there before us,
//! as `sys/fatal.rs` does; the two coexist in either order.
//!
//! Everything in the handler is a raw system call, with no allocation and no lock.

// The integrator wires this into the reload; until then only the tests call it.

use super::guard::{self, Crash, GuardSet, GuardState, FRAME_BELOW_RBP};
use super::raw::{self, KernelSigaction};
use std::ffi::CString;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};

use super::saved_action::{SavedAction, FATAL_SIGNALS as SIGNALS, SA_RESTORER};

const NAMES: [&str; 5] = ["SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT"];
/// How far up a crashed thread's stack the guard frame is looked for.
const SCAN_LIMIT: u64 = 1 << 20;
/// The scan's chunk: small, since the handler may run on an alternate stack of 8 KiB that
/// already holds an AVX-512 signal frame.
const CHUNK: usize = 512;

/// The action each signal had before ours, and whether ours is in its chain.
struct Saved {
    action: SavedAction,
    /// Ours is somewhere in the signal's chain (installed by us, not removed by us).
    installed: AtomicBool,
}

impl Saved {
    const fn new() -> Saved {
        Saved {
            action: SavedAction::new(),
            installed: AtomicBool::new(false),
        }
    }
    fn store(&self, a: KernelSigaction) {
        self.action.store(a);
    }
    fn load(&self) -> KernelSigaction {
        self.action.load()
    }
}

static PREVIOUS: [Saved; 5] = [const { Saved::new() }; 5];
static SET: AtomicPtr<GuardSet> = AtomicPtr::new(std::ptr::null_mut());
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// A leaked C string, never freed (a handler may be reading an older one).
static MARKER: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());
static PENDING: AtomicPtr<GuardSet> = AtomicPtr::new(std::ptr::null_mut());

fn our_handler() -> usize {
    on_signal as extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) as usize
}

/// Arms the handler for `set` (one set at a time; a new arm replaces the old one). `wake_fd`: a
/// socket the handler sends one byte to after a revert (-1: none). `marker`: a file the handler
/// creates on a revert.
pub fn arm(set: &'static GuardSet, wake_fd: i32, marker: Option<CString>) -> io::Result<()> {
    let marker = marker.map_or(std::ptr::null_mut(), CString::into_raw);
    MARKER.store(marker, Ordering::SeqCst);
    WAKE_FD.store(wake_fd, Ordering::SeqCst);
    SET.store(set as *const GuardSet as *mut GuardSet, Ordering::SeqCst);
    let ours = KernelSigaction {
        handler: our_handler(),
        flags: (libc::SA_SIGINFO | libc::SA_ONSTACK) as u64 | SA_RESTORER,
        restorer: guard::restorer_address() as usize,
        mask: 0,
    };
    for (i, &sig) in SIGNALS.iter().enumerate() {
        let current = raw::rt_sigaction(sig, None).map_err(io::Error::from_raw_os_error)?;
        if current.handler == ours.handler {
            continue;
        }
        // The fatal watch in front of us puts ours back when it leaves: installing ours in
        // front of it again would make each chain to the other.
        if PREVIOUS[i].installed.load(Ordering::SeqCst)
            && super::fatal::is_watch_handler(current.handler)
        {
            continue;
        }
        PREVIOUS[i].store(current);
        let was = raw::rt_sigaction(sig, Some(&ours)).map_err(io::Error::from_raw_os_error)?;
        if was != current && was.handler != ours.handler {
            // Changed between our two calls: what was really there is the previous one.
            PREVIOUS[i].store(was);
        }
        PREVIOUS[i].installed.store(true, Ordering::SeqCst);
    }
    Ok(())
}

/// Stops watching (our handler leaves only if still installed; one that stays chains straight
/// through).
pub fn disarm() {
    SET.store(std::ptr::null_mut(), Ordering::SeqCst);
    for (i, &sig) in SIGNALS.iter().enumerate() {
        if raw::rt_sigaction(sig, None).is_ok_and(|a| a.handler == our_handler())
            && raw::rt_sigaction(sig, Some(&PREVIOUS[i].load())).is_ok()
        {
            PREVIOUS[i].installed.store(false, Ordering::SeqCst);
        }
    }
}

/// A revert the agent has not handled yet (set by the handler; cleared by this call).
pub fn take_reverted() -> Option<&'static GuardSet> {
    let p = PENDING.swap(std::ptr::null_mut(), Ordering::SeqCst);
    // SAFETY: PENDING only ever holds pointers from `arm`'s `&'static GuardSet`.
    unsafe { p.as_ref() }
}

/// In a forked child: no wake fd (the parent's), the rest as is.
pub fn forget_parent() {
    WAKE_FD.store(-1, Ordering::SeqCst);
}

/// The interrupted thread's registers, as the kernel saved them.
struct Context(*mut libc::ucontext_t);

impl Context {
    fn get(&self, reg: libc::c_int) -> u64 {
        // SAFETY: the kernel passes a valid ucontext to an SA_SIGINFO handler; reg < NGREG.
        unsafe { (*self.0).uc_mcontext.gregs[reg as usize] as u64 }
    }
    fn set(&self, reg: libc::c_int, v: u64) {
        // SAFETY: as in `get`; the thread is stopped in this handler and resumes from here.
        unsafe { (*self.0).uc_mcontext.gregs[reg as usize] = v as i64 }
    }
}

/// A guard frame found on a crashed thread's stack.
struct Frame {
    rbp: u64,
    index: usize,
    /// A word between the interrupted rsp and the frame points into the new text.
    text_on_path: bool,
}

/// Looks up the crashed thread's stack from `rsp` for the innermost guard frame of `set`.
fn find_frame(set: &GuardSet, rsp: u64) -> Option<Frame> {
    let secret = set.secret();
    let mut buf = [0u64; CHUNK / 8];
    let mut text_on_path = false;
    let mut below: Option<u64> = None;
    let mut addr = rsp & !7;
    let end = addr.saturating_add(SCAN_LIMIT);
    while addr < end {
        // Up to the next chunk boundary, so one unmapped page ends the scan cleanly.
        let len = (CHUNK as u64 - addr % CHUNK as u64).min(end - addr) as usize;
        // SAFETY: viewing u64s as bytes; `len` <= CHUNK.
        let bytes = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), len) };
        let got = match raw::read_own_memory(addr, bytes) {
            Ok(n) if n >= 8 => n / 8,
            _ => return None,
        };
        for (k, &w) in buf[..got].iter().enumerate() {
            let at = addr + 8 * k as u64;
            if w == secret ^ (at + 8) {
                if let Some(index) = below.and_then(|d| set.descriptor_at(d)) {
                    return Some(Frame {
                        rbp: at + 8,
                        index,
                        text_on_path,
                    });
                }
            }
            text_on_path |= set.in_text(w);
            below = Some(w);
        }
        addr += 8 * got as u64;
    }
    None
}

extern "C" fn on_signal(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(i) = SIGNALS.iter().position(|&s| s == sig) else {
        return;
    };
    if !info.is_null() && !ctx.is_null() && take(i, sig, info, Context(ctx.cast())) {
        return;
    }
    chain(i, sig, info, ctx);
}

/// Handles the signal when it is ours: true when the thread resumes in a re-run.
fn take(i: usize, sig: i32, info: *mut libc::siginfo_t, ctx: Context) -> bool {
    // SAFETY: SET holds null or a leaked `&'static GuardSet` from `arm`.
    let Some(set) = (unsafe { SET.load(Ordering::SeqCst).as_ref() }) else {
        return false;
    };
    let state = set.state();
    if state == GuardState::Passed {
        return false;
    }
    // SAFETY: the kernel's (or a chaining handler's) siginfo, valid for the handler's duration.
    let (code, pid) = unsafe { ((*info).si_code, (*info).si_pid()) };
    let synchronous = if sig == libc::SIGABRT {
        pid == raw::getpid()
    } else {
        code > 0
    };
    if !synchronous {
        return false;
    }
    let pc = ctx.get(libc::REG_RIP);
    let frame = find_frame(set, ctx.get(libc::REG_RSP));
    let in_new = set.in_text(pc) || frame.as_ref().is_some_and(|f| f.text_on_path);
    if !in_new {
        return false;
    }
    if state == GuardState::Active {
        // Losing the race means another thread's crash reverted it: this call re-runs all the same.
        if set.transition(guard::REVERTED) {
            let crash = Crash {
                signal: sig,
                pc,
                function: set.function_at(pc).or(frame.as_ref().map(|f| f.index)),
                rerun: frame.is_some(),
            };
            set.record(&crash);
            warn(set, NAMES[i], &crash);
            mark(set, sig, &crash);
            PENDING.store(set as *const GuardSet as *mut GuardSet, Ordering::SeqCst);
            let fd = WAKE_FD.load(Ordering::SeqCst);
            if fd >= 0 {
                let _ = raw::send(fd, &[1]);
            }
        }
    }
    // Already Reverted: a call that was in flight in the new code when it was; re-run it too.
    let Some(frame) = frame else {
        return false;
    };
    ctx.set(libc::REG_RSP, frame.rbp - FRAME_BELOW_RBP);
    ctx.set(libc::REG_RBP, frame.rbp);
    ctx.set(libc::REG_RIP, guard::rerun_address());
    true
}

/// Goes on to the action that was there before ours.
fn chain(i: usize, sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREVIOUS[i].load();
    let fault = !info.is_null() && {
        // SAFETY: as in `take`.
        unsafe { (*info).si_code > 0 }
    };
    if prev.handler == libc::SIG_IGN && !fault {
        return;
    }
    if prev.handler <= libc::SIG_IGN {
        // The fault repeats under the previous action as we return; a sent signal, blocked
        // while we run, is taken under it as the handler returns.
        if raw::rt_sigaction(sig, None).is_ok_and(|a| a.handler == our_handler())
            && raw::rt_sigaction(sig, Some(&prev)).is_ok()
        {
            PREVIOUS[i].installed.store(false, Ordering::SeqCst);
        }
        if !fault {
            let _ = raw::tgkill(raw::getpid(), raw::gettid(), sig);
        }
    } else {
        // SAFETY: `prev` is the action the kernel reported for `sig` before ours, a function
        // here, and `info`/`ctx` are this delivery's.
        unsafe { super::saved_action::call_handler(&prev, sig, info, ctx) };
    }
}

/// A line built in a fixed buffer, allocating nothing; what does not fit is cut.
pub(crate) struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    pub(crate) fn new() -> Line {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }
    fn push(&mut self, s: &[u8]) -> &mut Line {
        let n = s.len().min(self.buf.len() - 1 - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
        self
    }
    fn hex(&mut self, v: u64) -> &mut Line {
        let mut digits = [0u8; 18];
        digits[..2].copy_from_slice(b"0x");
        let width = (64 - v.leading_zeros()).div_ceil(4).max(1) as usize;
        for k in 0..width {
            digits[2 + width - 1 - k] = b"0123456789abcdef"[((v >> (4 * k)) & 15) as usize];
        }
        self.push(&digits[..2 + width])
    }
    fn dec(&mut self, v: u32) -> &mut Line {
        let mut digits = [0u8; 10];
        let mut k = digits.len();
        let mut v = v;
        loop {
            k -= 1;
            digits[k] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[k..])
    }
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }
    fn newline(&mut self) -> &[u8] {
        self.buf[self.len] = b'\n';
        &self.buf[..self.len + 1]
    }
}

/// `hotagent: <label> crashed on probation (SIGSEGV in f+0x1a at 0x..): rolled back to <back>; ..`
pub(crate) fn warning(set: &GuardSet, name: &str, c: &Crash, line: &mut Line) -> usize {
    line.push(b"hotagent: ")
        .push(set.label.as_bytes())
        .push(b" crashed on probation (")
        .push(name.as_bytes());
    if let Some(f) = c.function {
        let g = set.function(f);
        line.push(b" in ").push(g.name.as_bytes());
        if (g.new..g.new.saturating_add(g.new_size)).contains(&c.pc) {
            line.push(b"+").hex(c.pc - g.new);
        }
    }
    line.push(b" at ")
        .hex(c.pc)
        .push(b"): rolled back to ")
        .push(set.back.as_bytes())
        .push(if c.rerun {
            b"; the call was run again there".as_slice()
        } else {
            b"; the signal takes its course".as_slice()
        });
    line.newline().len()
}

fn warn(set: &GuardSet, name: &str, c: &Crash) {
    let mut line = Line::new();
    let n = warning(set, name, c, &mut line);
    let _ = raw::write_all(2, &line.buf[..n]);
}

/// Creates the marker file: the signal number and the function's name.
fn mark(set: &GuardSet, sig: i32, c: &Crash) {
    let p = MARKER.load(Ordering::SeqCst);
    if p.is_null() {
        return;
    }
    // SAFETY: MARKER holds a leaked, never-freed CString from `arm`.
    let path = unsafe { std::ffi::CStr::from_ptr(p) };
    let Ok(fd) = raw::create_file(path, 0o600) else {
        return;
    };
    let mut line = Line::new();
    line.dec(sig as u32).push(b" ");
    if let Some(f) = c.function {
        line.push(set.function(f).name.as_bytes());
    }
    let _ = raw::write_all(fd, line.newline());
    // SAFETY: created above by this function, used no more.
    unsafe { raw::close(fd) };
}
