//! Guarded calls with real machine code and real signals, in the test process.

use super::*;
use crate::sys::probation;
use std::arch::{asm, global_asm};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Signal state is process-wide: one test at a time.
static LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `(start, size)` of a function of this test binary, from its symbol table.
fn symbol(name: &str) -> (u64, u64) {
    static TABLE: OnceLock<Vec<(String, u64, u64)>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let bytes = std::fs::read("/proc/self/exe").unwrap();
        let elf = goblin::elf::Elf::parse(&bytes).unwrap();
        elf.syms
            .iter()
            .filter_map(|s| {
                let n = elf.strtab.get_at(s.st_name)?;
                Some((n.to_owned(), s.st_value, s.st_size))
            })
            .collect()
    });
    let &(_, value, size) = table
        .iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("no symbol {name}"));
    (value, size)
}

/// A guarded function from two `#[no_mangle]`/asm functions of this binary, its new code as
/// the generation's text.
fn guarded(old: u64, new: u64, new_name: &str) -> (GuardFn, (u64, u64)) {
    let (_, size) = symbol(new_name);
    let f = GuardFn {
        old,
        new,
        new_size: size,
        name: new_name.to_owned(),
    };
    (f, (new, new + size))
}

const SEGV: u64 = 13;
const ILL: u64 = 14;
const FPE: u64 = 15;
const OLD_TAG: u64 = 0x0dd0_0000_0000_0000;

type Many = extern "C" fn(
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
    u64,
    u64,
    u64,
    u64,
    u64,
    u64,
    u64,
) -> u64;

#[allow(clippy::too_many_arguments)]
fn mix(i: [u64; 6], d: [f64; 8], s: [u64; 9]) -> u64 {
    let mut h = 17u64;
    for v in i.into_iter().chain(d.map(f64::to_bits)).chain(s) {
        h = h.wrapping_mul(1_000_003).wrapping_add(v);
    }
    h
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
extern "C" fn hotagent_test_many_old(
    a0: u64,
    a1: u64,
    a2: u64,
    a3: u64,
    a4: u64,
    a5: u64,
    d0: f64,
    d1: f64,
    d2: f64,
    d3: f64,
    d4: f64,
    d5: f64,
    d6: f64,
    d7: f64,
    s0: u64,
    s1: u64,
    s2: u64,
    s3: u64,
    s4: u64,
    s5: u64,
    s6: u64,
    s7: u64,
    s8: u64,
) -> u64 {
    mix(
        [a0, a1, a2, a3, a4, a5],
        [d0, d1, d2, d3, d4, d5, d6, d7],
        [s0, s1, s2, s3, s4, s5, s6, s7, s8],
    ) ^ OLD_TAG
}

#[no_mangle]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
extern "C" fn hotagent_test_many_new(
    a0: u64,
    a1: u64,
    a2: u64,
    a3: u64,
    a4: u64,
    a5: u64,
    d0: f64,
    d1: f64,
    d2: f64,
    d3: f64,
    d4: f64,
    d5: f64,
    d6: f64,
    d7: f64,
    s0: u64,
    s1: u64,
    s2: u64,
    s3: u64,
    s4: u64,
    s5: u64,
    s6: u64,
    s7: u64,
    s8: u64,
) -> u64 {
    match a0 {
        // SAFETY: deliberately faults (a load from address 0): the test's crash.
        SEGV => unsafe { asm!("mov {0}, qword ptr [{0}]", inout(reg) 0u64 => _) },
        // SAFETY: deliberately raises #UD.
        ILL => unsafe { asm!("ud2") },
        // SAFETY: deliberately divides by zero.
        FPE => unsafe {
            asm!("div {0}", in(reg) 0u64, inout("rax") 1u64 => _, inout("rdx") 0u64 => _)
        },
        _ => {}
    }
    mix(
        [a0, a1, a2, a3, a4, a5],
        [d0, d1, d2, d3, d4, d5, d6, d7],
        [s0, s1, s2, s3, s4, s5, s6, s7, s8],
    )
}

/// Calls `f` with 23 arguments: six integers, eight doubles and nine integers on the stack.
fn call_many(f: u64, a0: u64) -> (u64, [u64; 6], [f64; 8], [u64; 9]) {
    let i = [a0, 2, 3, 4, 5, 6];
    let d = [1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5];
    let s = [101, 102, 103, 104, 105, 106, 107, 108, 109];
    // SAFETY: `f` is a stub or a function of type `Many`.
    let f: Many = unsafe { std::mem::transmute::<u64, Many>(f) };
    let r = f(
        i[0], i[1], i[2], i[3], i[4], i[5], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], s[0],
        s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8],
    );
    (r, i, d, s)
}

global_asm!(
    ".pushsection .text.hotagent_test_guard,\"ax\",@progbits",
    // Variadic-style: returns the incoming rax (al: the vector count) plus rdi.
    ".globl hotagent_test_rax_new",
    ".type hotagent_test_rax_new,@function",
    "hotagent_test_rax_new:",
    "lea rax, [rax+rdi]",
    "ret",
    ".size hotagent_test_rax_new, .-hotagent_test_rax_new",
    ".globl hotagent_test_rax_old",
    ".type hotagent_test_rax_old,@function",
    "hotagent_test_rax_old:",
    "lea rax, [rax+rdi+1000]",
    "ret",
    ".size hotagent_test_rax_old, .-hotagent_test_rax_old",
    // Clobbers rax and every callee-saved register, then crashes.
    ".globl hotagent_test_clobber_crash",
    ".type hotagent_test_clobber_crash,@function",
    "hotagent_test_clobber_crash:",
    "xor eax, eax",
    "mov rbx, -1",
    "mov r12, -2",
    "mov r13, -3",
    "mov r14, -4",
    "mov r15, -5",
    "ud2",
    ".size hotagent_test_clobber_crash, .-hotagent_test_clobber_crash",
    // (f, arg, out): sets rbx, r12-r15 to known values, calls f(arg) with al = 3, and writes
    // rax, rbx, r12-r15 as they came back to out[0..6].
    ".globl hotagent_test_keep_regs",
    ".type hotagent_test_keep_regs,@function",
    "hotagent_test_keep_regs:",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdx",
    "sub rsp, 8",
    "mov r11, rdi",
    "mov rdi, rsi",
    "movabs rbx, 0x1111111111111111",
    "movabs r12, 0x2222222222222222",
    "movabs r13, 0x3333333333333333",
    "movabs r14, 0x4444444444444444",
    "movabs r15, 0x5555555555555555",
    "mov eax, 3",
    "call r11",
    "mov r11, qword ptr [rsp+8]",
    "mov qword ptr [r11], rax",
    "mov qword ptr [r11+8], rbx",
    "mov qword ptr [r11+16], r12",
    "mov qword ptr [r11+24], r13",
    "mov qword ptr [r11+32], r14",
    "mov qword ptr [r11+40], r15",
    "add rsp, 16",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "ret",
    ".size hotagent_test_keep_regs, .-hotagent_test_keep_regs",
    // A fault outside any guarded set: a load from 0 (3 bytes: 48 8b 00) the test handler skips.
    ".globl hotagent_test_outside_fault",
    ".type hotagent_test_outside_fault,@function",
    "hotagent_test_outside_fault:",
    "xor eax, eax",
    ".globl hotagent_test_outside_fault_at",
    "hotagent_test_outside_fault_at:",
    "mov rax, qword ptr [rax]",
    "mov eax, 77",
    "ret",
    ".size hotagent_test_outside_fault, .-hotagent_test_outside_fault",
    // New code called without a guard (as by a thread it started): a load from 0 at a label.
    ".globl hotagent_test_direct_fault",
    ".type hotagent_test_direct_fault,@function",
    "hotagent_test_direct_fault:",
    "xor eax, eax",
    ".globl hotagent_test_direct_fault_at",
    "hotagent_test_direct_fault_at:",
    "mov rax, qword ptr [rax]",
    "mov eax, 55",
    "ret",
    ".size hotagent_test_direct_fault, .-hotagent_test_direct_fault",
    ".popsection",
);

extern "C" {
    fn hotagent_test_rax_new();
    fn hotagent_test_rax_old();
    fn hotagent_test_clobber_crash();
    fn hotagent_test_keep_regs(f: u64, arg: u64, out: *mut [u64; 6]);
    fn hotagent_test_outside_fault() -> u64;
    fn hotagent_test_outside_fault_at();
    fn hotagent_test_direct_fault() -> u64;
    fn hotagent_test_direct_fault_at();
}

fn addr(f: unsafe extern "C" fn()) -> u64 {
    f as usize as u64
}

/// Calls `f(arg)` with al = 3 from asm that checks the callee-saved registers: [rax, rbx, r12..r15].
fn keep_regs(f: u64, arg: u64) -> [u64; 6] {
    let mut out = [0u64; 6];
    // SAFETY: `f` takes one integer and follows the C ABI (or crashes into a guarded re-run).
    unsafe { hotagent_test_keep_regs(f, arg, &mut out) };
    out
}

const KEPT: [u64; 5] = [
    0x1111111111111111,
    0x2222222222222222,
    0x3333333333333333,
    0x4444444444444444,
    0x5555555555555555,
];

fn many_set() -> &'static GuardSet {
    let (f, text) = guarded(
        hotagent_test_many_old as Many as usize as u64,
        hotagent_test_many_new as Many as usize as u64,
        "hotagent_test_many_new",
    );
    GuardSet::new(
        vec![f],
        vec![text],
        "generation 2 (libmany.so)",
        "generation 1",
    )
    .unwrap()
}

#[test]
fn an_active_guarded_call_reaches_new_with_every_argument() {
    let _g = serial();
    let set = many_set();
    assert_eq!(set.state(), GuardState::Active);
    let (r, i, d, s) = call_many(set.stub(0), 1);
    assert_eq!(r, mix(i, d, s));
    let (r, i, d, s) = call_many(set.stub(0), 9);
    assert_eq!(r, mix(i, d, s), "new's answer, every argument intact");

    let (f, text) = guarded(
        addr(hotagent_test_rax_old),
        addr(hotagent_test_rax_new),
        "hotagent_test_rax_new",
    );
    let set = GuardSet::new(vec![f], vec![text], "g", "b").unwrap();
    let out = keep_regs(set.stub(0), 5);
    assert_eq!(out[0], 8, "al (3) reached new with rdi (5)");
    assert_eq!(out[1..], KEPT);
}

#[test]
fn passed_goes_to_new_and_reverted_to_old() {
    let _g = serial();
    let set = many_set();
    assert!(set.pass());
    assert!(!set.revert(), "only from Active");
    assert_eq!(set.state(), GuardState::Passed);
    let (r, i, d, s) = call_many(set.stub(0), 2);
    assert_eq!(r, mix(i, d, s));

    let set = many_set();
    assert!(set.revert());
    assert!(!set.pass());
    assert_eq!(set.state(), GuardState::Reverted);
    let (r, i, d, s) = call_many(set.stub(0), 2);
    assert_eq!(r, mix(i, d, s) ^ OLD_TAG, "old's answer");
    assert_eq!(set.crash(), None, "an operator's revert is no crash");
}

fn crash_reruns_on_old(a0: u64, signal: i32) {
    let _g = serial();
    let set = many_set();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("crashed");
    let (rx, tx) = raw::socketpair().unwrap();
    let c = std::ffi::CString::new(marker.to_str().unwrap()).unwrap();
    probation::arm(set, tx, Some(c)).unwrap();
    let (ok, ..) = call_many(set.stub(0), 3);
    assert_eq!(set.state(), GuardState::Active, "no crash yet: {ok:x}");
    let (r, i, d, s) = call_many(set.stub(0), a0);
    probation::disarm();
    assert_eq!(
        r,
        mix(i, d, s) ^ OLD_TAG,
        "old's answer for the same arguments"
    );
    assert_eq!(set.state(), GuardState::Reverted);
    let crash = set.crash().expect("recorded");
    assert_eq!(crash.signal, signal);
    assert_eq!(crash.function, Some(0));
    assert!(crash.rerun);
    let f = set.function(0);
    assert!((f.new..f.new + f.new_size).contains(&crash.pc), "{crash:?}");
    assert!(std::ptr::eq(probation::take_reverted().unwrap(), set));
    assert!(probation::take_reverted().is_none(), "taken once");
    let mut byte = [0u8; 4];
    assert_eq!(raw::read(rx, &mut byte), Ok(1), "the agent was woken");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        format!("{signal} hotagent_test_many_new\n")
    );
    // Reverted: the next call goes straight to old.
    let (r, i, d, s) = call_many(set.stub(0), a0);
    assert_eq!(r, mix(i, d, s) ^ OLD_TAG);
    // SAFETY: the test's own pair, used no more.
    unsafe {
        raw::close(rx);
        raw::close(tx);
    }
}

#[test]
fn a_segfault_in_new_reruns_the_call_on_old() {
    crash_reruns_on_old(SEGV, libc::SIGSEGV);
}

#[test]
fn an_illegal_instruction_in_new_reruns_the_call_on_old() {
    crash_reruns_on_old(ILL, libc::SIGILL);
}

#[test]
fn a_division_by_zero_in_new_reruns_the_call_on_old() {
    crash_reruns_on_old(FPE, libc::SIGFPE);
}

#[test]
fn a_rerun_restores_callee_saved_registers_and_rax() {
    let _g = serial();
    let (f, text) = guarded(
        addr(hotagent_test_rax_old),
        addr(hotagent_test_clobber_crash),
        "hotagent_test_clobber_crash",
    );
    let set = GuardSet::new(vec![f], vec![text], "g", "b").unwrap();
    probation::arm(set, -1, None).unwrap();
    let out = keep_regs(set.stub(0), 5);
    probation::disarm();
    assert_eq!(set.state(), GuardState::Reverted);
    assert_eq!(out[0], 1008, "old ran with al = 3 and rdi = 5");
    assert_eq!(out[1..], KEPT, "rbx, r12-r15 as at the call");
    assert_eq!(set.crash().unwrap().signal, libc::SIGILL);
    let _ = probation::take_reverted();
}

#[no_mangle]
#[inline(never)]
extern "C" fn hotagent_test_abort_new(x: u64) -> u64 {
    if std::hint::black_box(x) == 7 {
        // SAFETY: deliberately aborts: the test's crash.
        unsafe { libc::abort() };
    }
    x + 1
}

extern "C" fn abort_old(x: u64) -> u64 {
    x + 100
}

#[test]
fn an_abort_called_by_new_reruns_the_call_on_old() {
    let _g = serial();
    let new = hotagent_test_abort_new as extern "C" fn(u64) -> u64 as usize as u64;
    let (f, text) = guarded(
        abort_old as extern "C" fn(u64) -> u64 as usize as u64,
        new,
        "hotagent_test_abort_new",
    );
    let set = GuardSet::new(vec![f], vec![text], "g", "b").unwrap();
    // SAFETY: the stub stands for `fn(u64) -> u64`.
    let call: extern "C" fn(u64) -> u64 = unsafe { std::mem::transmute(set.stub(0)) };
    probation::arm(set, -1, None).unwrap();
    assert_eq!(call(1), 2, "new");
    assert_eq!(call(7), 107, "old's answer after new aborted");
    probation::disarm();
    let crash = set.crash().unwrap();
    assert_eq!(
        (crash.signal, crash.function, crash.rerun),
        (libc::SIGABRT, Some(0), true)
    );
    assert!(
        !(new..new + set.function(0).new_size).contains(&crash.pc),
        "in libc"
    );
    let _ = probation::take_reverted();
}

static SKIPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The program's own SIGSEGV handler: skips the known faulting load.
extern "C" fn skip_fault(_: i32, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let ctx = ctx.cast::<libc::ucontext_t>();
    // SAFETY: the kernel's ucontext for this SA_SIGINFO handler.
    unsafe {
        let rip = &mut (*ctx).uc_mcontext.gregs[libc::REG_RIP as usize];
        let at = *rip as u64;
        if at == addr(hotagent_test_outside_fault_at) || at == addr(hotagent_test_direct_fault_at) {
            *rip += 3;
            SKIPPED.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Installs [`skip_fault`] for SIGSEGV; returns the action it replaced.
fn install_skip_fault() -> libc::sigaction {
    // SAFETY: a plain SA_SIGINFO handler; callers put the previous action back.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction =
            skip_fault as extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) as usize;
        act.sa_flags = libc::SA_SIGINFO;
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(libc::SIGSEGV, &act, &mut old), 0);
        old
    }
}

fn restore_sigsegv(before: &libc::sigaction) {
    // SAFETY: puts back an action sigaction reported.
    unsafe { libc::sigaction(libc::SIGSEGV, before, std::ptr::null_mut()) };
}

#[test]
fn a_fault_outside_the_set_chains_to_the_programs_handler() {
    let _g = serial();
    let before = install_skip_fault();
    let set = many_set();
    probation::arm(set, -1, None).unwrap();
    SKIPPED.store(0, Ordering::SeqCst);
    // SAFETY: faults once, and the program's handler skips the faulting load.
    assert_eq!(unsafe { hotagent_test_outside_fault() }, 77);
    assert_eq!(
        SKIPPED.load(Ordering::SeqCst),
        1,
        "the program's handler ran"
    );
    assert_eq!(set.state(), GuardState::Active, "not ours");
    // Its own crash still is ours, and the program's handler does not see it.
    let (r, i, d, s) = call_many(set.stub(0), SEGV);
    assert_eq!(r, mix(i, d, s) ^ OLD_TAG);
    assert_eq!(SKIPPED.load(Ordering::SeqCst), 1);
    // After a revert, a fault outside still reaches the program.
    // SAFETY: as above.
    assert_eq!(unsafe { hotagent_test_outside_fault() }, 77);
    assert_eq!(SKIPPED.load(Ordering::SeqCst), 2);
    probation::disarm();
    let _ = probation::take_reverted();
    restore_sigsegv(&before);
}

#[test]
fn a_crash_in_new_code_reached_without_a_guard_reverts_then_takes_its_course() {
    let _g = serial();
    let before = install_skip_fault();
    let (f, text) = guarded(
        addr(hotagent_test_rax_old),
        hotagent_test_direct_fault as unsafe extern "C" fn() -> u64 as usize as u64,
        "hotagent_test_direct_fault",
    );
    let set = GuardSet::new(vec![f], vec![text], "g", "b").unwrap();
    probation::arm(set, -1, None).unwrap();
    SKIPPED.store(0, Ordering::SeqCst);
    // SAFETY: faults once; the program's handler (the signal's course) skips the load.
    assert_eq!(unsafe { hotagent_test_direct_fault() }, 55);
    probation::disarm();
    assert_eq!(
        SKIPPED.load(Ordering::SeqCst),
        1,
        "the signal went on to the program"
    );
    assert_eq!(
        set.state(),
        GuardState::Reverted,
        "rolled back all the same"
    );
    let crash = set.crash().unwrap();
    assert_eq!(
        (crash.signal, crash.function, crash.rerun, crash.pc),
        (
            libc::SIGSEGV,
            Some(0),
            false,
            addr(hotagent_test_direct_fault_at)
        )
    );
    assert!(std::ptr::eq(probation::take_reverted().unwrap(), set));
    restore_sigsegv(&before);
}

static ENTERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static GO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// 1: waits (at most 10 s) for GO, then faults; 2: faults at once; else x + 1.
#[no_mangle]
#[inline(never)]
extern "C" fn hotagent_test_wait_new(x: u64) -> u64 {
    if x == 1 {
        ENTERED.store(true, Ordering::SeqCst);
        let t = std::time::Instant::now();
        while !GO.load(Ordering::SeqCst) && t.elapsed().as_secs() < 10 {
            std::hint::spin_loop();
        }
    }
    if x == 1 || x == 2 {
        // SAFETY: deliberately faults (a load from address 0).
        unsafe { asm!("mov {0}, qword ptr [{0}]", inout(reg) 0u64 => _) };
    }
    x + 1
}

#[test]
fn a_call_in_flight_when_another_thread_crashed_is_rerun_too() {
    let _g = serial();
    let new = hotagent_test_wait_new as extern "C" fn(u64) -> u64 as usize as u64;
    let (f, text) = guarded(
        abort_old as extern "C" fn(u64) -> u64 as usize as u64,
        new,
        "hotagent_test_wait_new",
    );
    let set = GuardSet::new(vec![f], vec![text], "g", "b").unwrap();
    // SAFETY: the stub stands for `fn(u64) -> u64`.
    let call: extern "C" fn(u64) -> u64 = unsafe { std::mem::transmute(set.stub(0)) };
    probation::arm(set, -1, None).unwrap();
    ENTERED.store(false, Ordering::SeqCst);
    GO.store(false, Ordering::SeqCst);
    let waiting = std::thread::spawn(move || call(1));
    let t = std::time::Instant::now();
    while !ENTERED.load(Ordering::SeqCst) {
        assert!(t.elapsed().as_secs() < 10, "the thread never entered new");
        std::thread::yield_now();
    }
    assert_eq!(call(2), 102, "the first crash re-runs on old");
    assert_eq!(set.state(), GuardState::Reverted);
    GO.store(true, Ordering::SeqCst);
    assert_eq!(
        waiting.join().unwrap(),
        101,
        "the in-flight crash re-runs on old too"
    );
    probation::disarm();
    assert!(set.crash().unwrap().rerun);
    let _ = probation::take_reverted();
}

#[test]
fn probation_and_the_fatal_watch_coexist_in_either_order() {
    let _g = serial();
    assert!(
        crate::sys::stop::install().is_some(),
        "a signal return trampoline to borrow"
    );
    let original = raw::rt_sigaction(libc::SIGSEGV, None).unwrap();
    let set = many_set();
    probation::arm(set, -1, None).unwrap();
    let ours = raw::rt_sigaction(libc::SIGSEGV, None).unwrap().handler;
    let (rx, tx) = raw::socketpair().unwrap();
    // The watch in front of probation, then probation armed again (a second reload).
    assert!(crate::sys::fatal::arm(tx));
    let watch = raw::rt_sigaction(libc::SIGSEGV, None).unwrap().handler;
    assert_ne!(watch, ours);
    let set = many_set();
    probation::arm(set, -1, None).unwrap();
    assert_eq!(
        raw::rt_sigaction(libc::SIGSEGV, None).unwrap().handler,
        watch,
        "not installed in front of the watch that will put it back"
    );
    let (r, i, d, s) = call_many(set.stub(0), SEGV);
    assert_eq!(r, mix(i, d, s) ^ OLD_TAG, "re-run through the watch");
    assert_eq!(
        raw::read(rx, &mut [0u8; 64]),
        Err(libc::EAGAIN),
        "no death reported"
    );
    crate::sys::fatal::disarm();
    probation::disarm();
    assert_eq!(raw::rt_sigaction(libc::SIGSEGV, None).unwrap(), original);
    // Probation in front of the watch: it re-runs its crash, and its leave puts the watch back.
    let set = many_set();
    assert!(crate::sys::fatal::arm(tx));
    probation::arm(set, -1, None).unwrap();
    assert_eq!(
        raw::rt_sigaction(libc::SIGSEGV, None).unwrap().handler,
        ours
    );
    let (r, i, d, s) = call_many(set.stub(0), SEGV);
    assert_eq!(r, mix(i, d, s) ^ OLD_TAG);
    probation::disarm();
    assert_eq!(
        raw::rt_sigaction(libc::SIGSEGV, None).unwrap().handler,
        watch
    );
    crate::sys::fatal::disarm();
    assert_eq!(raw::rt_sigaction(libc::SIGSEGV, None).unwrap(), original);
    let _ = probation::take_reverted();
    // SAFETY: the test's own pair, used no more.
    unsafe {
        raw::close(rx);
        raw::close(tx);
    }
}

#[test]
fn the_warning_line_names_the_crash() {
    let set = many_set();
    let f = set.function(0).new;
    let c = Crash {
        signal: libc::SIGSEGV,
        pc: f + 0x1a,
        function: Some(0),
        rerun: true,
    };
    let mut line = probation::Line::new();
    let n = probation::warning(set, "SIGSEGV", &c, &mut line);
    let text = std::str::from_utf8(&line.bytes()[..n]).unwrap();
    assert_eq!(
        text,
        format!(
            "hotagent: generation 2 (libmany.so) crashed on probation (SIGSEGV in \
             hotagent_test_many_new+0x1a at {:#x}): rolled back to generation 1; the call was \
             run again there\n",
            f + 0x1a
        )
    );
    let c = Crash {
        function: None,
        rerun: false,
        ..c
    };
    let mut line = probation::Line::new();
    let n = probation::warning(set, "SIGSEGV", &c, &mut line);
    let text = std::str::from_utf8(&line.bytes()[..n]).unwrap();
    assert!(text.ends_with(&format!(
        "(SIGSEGV at {:#x}): rolled back to generation 1; the signal takes its course\n",
        f + 0x1a
    )));
}

#[test]
fn guard_enter_has_call_frame_information() {
    let (enter, size) = symbol("hotagent_guard_enter");
    assert!(size > 0);
    let out = std::process::Command::new("readelf")
        .arg("--debug-dump=frames")
        .arg(std::env::current_exe().unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let fde = text
        .split("\n\n")
        .find(|block| {
            block
                .lines()
                .next()
                .and_then(|l| l.split("pc=").nth(1))
                .is_some_and(|r| {
                    let (a, b) = r.split_once("..").unwrap();
                    let a = u64::from_str_radix(a.trim(), 16).unwrap();
                    let b = u64::from_str_radix(b.trim(), 16).unwrap();
                    (a..b).contains(&enter)
                })
        })
        .expect("an FDE covers hotagent_guard_enter");
    for op in [
        "DW_CFA_def_cfa_offset: 16",
        "DW_CFA_offset: r6 (rbp)",
        "DW_CFA_def_cfa_register: r6 (rbp)",
        "DW_CFA_remember_state",
        "DW_CFA_restore_state",
    ] {
        assert!(fde.contains(op), "{op} missing in\n{fde}");
    }
}

/// Measures an Active guarded call against a direct call (`--ignored --nocapture`).
#[test]
#[ignore]
fn measure_a_guarded_call() {
    let _g = serial();
    let set = many_set();
    let n = 2_000_000u64;
    let time = |f: u64| {
        let t = std::time::Instant::now();
        for k in 0..n {
            std::hint::black_box(call_many(std::hint::black_box(f), k % 8));
        }
        t.elapsed().as_nanos() as f64 / n as f64
    };
    let direct = time(set.function(0).new);
    let active = time(set.stub(0));
    set.pass();
    let passed = time(set.stub(0));
    println!(
        "23-argument call: direct {direct:.1} ns, Active guard {active:.1} ns (+{:.1}), Passed \
         stub {passed:.1} ns (+{:.1})",
        active - direct,
        passed - direct
    );
}
