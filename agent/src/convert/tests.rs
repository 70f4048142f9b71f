//! The conversion runtime run for real, in this process: vtables built in memory whose slots
//! are `extern "C"` methods, objects carrying a vptr, calls made as compiled C++ makes them
//! (load the vptr, call the slot with `this` in rdi), the thunks' machine code executed.

use super::*;
use crate::sys::object;
use crate::sys::thunk::testing::{self, Registers};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

/// An object of the test class. Version 1 uses `a`; version 2 also `b`, which its converter
/// sets to 77 (first to 1: a half-converted object is visible if any call runs too early).
#[repr(C)]
struct Obj {
    vptr: AtomicU64,
    a: AtomicU64,
    b: AtomicU64,
    ups: AtomicU64,
    downs: AtomicU64,
    /// Calls that found the object in the wrong layout for their code.
    wrong: AtomicU64,
    /// What the converter saw when it called its own object (re-entry tests).
    seen: AtomicU64,
}

impl Obj {
    fn new(vptr: u64) -> &'static Obj {
        Box::leak(Box::new(Obj {
            vptr: AtomicU64::new(vptr),
            a: AtomicU64::new(2008),
            b: AtomicU64::new(0),
            ups: AtomicU64::new(0),
            downs: AtomicU64::new(0),
            wrong: AtomicU64::new(0),
            seen: AtomicU64::new(0),
        }))
    }

    fn addr(&self) -> u64 {
        self as *const Obj as u64
    }

    /// A virtual call of slot i, as compiled code makes it.
    fn call(&self, i: usize) -> u64 {
        let vptr = self.vptr.load(Ordering::Acquire);
        testing::call_method(object::load_word(vptr + 8 * i as u64), self.addr())
    }
}

fn check(o: &Obj, version: u64) {
    let b = o.b.load(Ordering::Acquire);
    let good = if version == 1 { b == 0 } else { b == 77 };
    if !good || o.a.load(Ordering::Relaxed) != 2008 {
        o.wrong.fetch_add(1, Ordering::Relaxed);
    }
}

extern "C" fn v1_hello(o: &Obj) -> u64 {
    check(o, 1);
    1000
}
extern "C" fn v1_foo(o: &Obj) -> u64 {
    check(o, 1);
    1001
}
extern "C" fn v1_bar(o: &Obj) -> u64 {
    check(o, 1);
    1002
}
extern "C" fn v2_hello(o: &Obj) -> u64 {
    check(o, 2);
    2000
}
extern "C" fn v2_foo(o: &Obj) -> u64 {
    check(o, 2);
    2001
}
extern "C" fn v2_bar(o: &Obj) -> u64 {
    check(o, 2);
    2002
}

fn spin() {
    for _ in 0..200 {
        std::hint::spin_loop();
    }
}

extern "C" fn upgrade(o: &Obj) {
    o.b.store(1, Ordering::Release);
    spin();
    o.b.store(77, Ordering::Release);
    o.ups.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn downgrade(o: &Obj) {
    o.b.store(1, Ordering::Release);
    spin();
    o.b.store(0, Ordering::Release);
    o.downs.fetch_add(1, Ordering::Relaxed);
}

/// A converter that calls slot 0 of the object it is converting, before and after its change.
extern "C" fn upgrade_reentrant(o: &Obj) {
    let before = o.call(0);
    o.b.store(77, Ordering::Release);
    o.seen.store(before, Ordering::Relaxed);
    o.ups.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn downgrade_reentrant(o: &Obj) {
    let before = o.call(1);
    o.b.store(0, Ordering::Release);
    o.seen.store(before, Ordering::Relaxed);
    o.downs.fetch_add(1, Ordering::Relaxed);
}

fn leak_table(words: &[u64]) -> &'static [AtomicU64] {
    Box::leak(
        words
            .iter()
            .map(|&w| AtomicU64::new(w))
            .collect::<Box<[_]>>(),
    )
}

/// The executable mappings of this process, read once per call.
pub(super) fn is_code() -> impl Fn(u64) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    let ranges: Vec<(u64, u64)> = maps
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|p| p.contains('x')))
        .filter_map(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect();
    move |a| ranges.iter().any(|&(s, e)| a >= s && a < e)
}

/// An old and a new vtable in (writable) memory, and the class between them.
struct Fixture {
    old: &'static [AtomicU64],
    new: &'static [AtomicU64],
    class: &'static Class,
}

impl Fixture {
    fn with(up: usize, down: Option<usize>) -> Fixture {
        Self::with_methods(
            &[
                v1_hello as *const () as usize,
                v1_foo as *const () as usize,
                v1_bar as *const () as usize,
            ],
            &[
                v2_hello as *const () as usize,
                v2_foo as *const () as usize,
                v2_bar as *const () as usize,
            ],
            up,
            down,
        )
    }

    fn with_methods(old_m: &[usize], new_m: &[usize], up: usize, down: Option<usize>) -> Self {
        let words = |m: &[usize]| {
            let mut w = vec![0, 0];
            w.extend(m.iter().map(|&f| f as u64));
            w
        };
        let old = leak_table(&words(old_m));
        let new = leak_table(&words(new_m));
        let class = Class::new(
            vtable("_ZTV6nsImp1", old),
            vtable("_ZTV6nsImp2", new),
            up,
            down,
            &is_code(),
        )
        .expect("a valid class");
        Fixture { old, new, class }
    }

    fn old_vptr(&self) -> u64 {
        self.old.as_ptr() as u64 + 16
    }

    fn new_vptr(&self) -> u64 {
        self.new.as_ptr() as u64 + 16
    }

    /// Applies writes as the reload does: compare, then store, each word on its own.
    fn apply(&self, writes: &[SlotWrite]) {
        for w in writes {
            let slot = [self.old, self.new]
                .into_iter()
                .find_map(|t| {
                    let base = t.as_ptr() as u64;
                    let k = w.addr.checked_sub(base)? / 8;
                    t.get(k as usize).filter(|_| w.addr.is_multiple_of(8))
                })
                .expect("a write into one of the two vtables");
            slot.compare_exchange(w.expected, w.value, Ordering::AcqRel, Ordering::Acquire)
                .expect("the slot holds the expected value");
        }
    }

    fn switch(&self) {
        self.apply(&self.class.upgrade_writes());
    }

    fn rollback(&self) {
        self.apply(&self.class.rollback_writes().expect("a downgrade converter"));
    }
}

fn vtable(name: &str, t: &'static [AtomicU64]) -> Vtable {
    Vtable {
        name: name.to_string(),
        addr: t.as_ptr() as u64,
        size: t.len() as u64 * 8,
    }
}

#[test]
fn first_call_converts_once_then_the_new_method_runs() {
    let f = Fixture::with(
        upgrade as *const () as usize,
        Some(downgrade as *const () as usize),
    );
    let o = Obj::new(f.old_vptr());
    assert_eq!(o.call(1), 1001, "before the switch the old code runs");
    f.switch();
    assert_eq!(
        o.call(0),
        2000,
        "the first call after the switch runs the new Hello"
    );
    assert_eq!(o.vptr.load(Ordering::Relaxed), f.new_vptr());
    assert_eq!(o.call(1), 2001);
    assert_eq!(o.call(2), 2002);
    assert_eq!(o.ups.load(Ordering::Relaxed), 1);
    assert_eq!(o.wrong.load(Ordering::Relaxed), 0);
    assert_eq!(f.class.counts(), (1, 0));

    let born_new = Obj::new(f.new_vptr());
    born_new.b.store(77, Ordering::Relaxed);
    assert_eq!(born_new.call(0), 2000);
    assert_eq!(
        born_new.ups.load(Ordering::Relaxed),
        0,
        "a new object is never converted"
    );

    f.rollback();
    assert_eq!(
        o.call(2),
        1002,
        "after rollback the first call converts back, runs old code"
    );
    assert_eq!(o.vptr.load(Ordering::Relaxed), f.old_vptr());
    assert_eq!(born_new.call(1), 1001, "an object born new goes back too");
    assert_eq!((o.downs.load(Ordering::Relaxed), o.call(0)), (1, 1000));
    assert_eq!(born_new.downs.load(Ordering::Relaxed), 1);
    assert_eq!(
        o.wrong.load(Ordering::Relaxed) + born_new.wrong.load(Ordering::Relaxed),
        0
    );
    assert_eq!(f.class.counts(), (1, 2));
    for (i, m) in [
        v1_hello as *const () as usize,
        v1_foo as *const () as usize,
        v1_bar as *const () as usize,
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            f.old[2 + i].load(Ordering::Relaxed),
            *m as u64,
            "old slots restored"
        );
        assert_eq!(f.class.old_method(i), *m as u64);
    }
}

#[test]
fn entry_thunk_converts_old_objects_and_lets_new_ones_through() {
    let f = Fixture::with(
        upgrade as *const () as usize,
        Some(downgrade as *const () as usize),
    );
    let entry = f
        .class
        .entry_thunk(v2_foo as *const () as usize as u64)
        .unwrap();
    assert_eq!(
        f.class
            .entry_thunk(v2_foo as *const () as usize as u64)
            .unwrap(),
        entry,
        "one per method"
    );
    f.switch();
    let old = Obj::new(f.old_vptr());
    assert_eq!(testing::call_method(entry, old.addr()), 2001);
    assert_eq!(old.vptr.load(Ordering::Relaxed), f.new_vptr());
    assert_eq!(testing::call_method(entry, old.addr()), 2001);
    assert_eq!(old.ups.load(Ordering::Relaxed), 1);
    let new = Obj::new(f.new_vptr());
    new.b.store(77, Ordering::Relaxed);
    assert_eq!(testing::call_method(entry, new.addr()), 2001);
    assert_eq!(new.ups.load(Ordering::Relaxed), 0);
    assert_eq!(
        old.wrong.load(Ordering::Relaxed) + new.wrong.load(Ordering::Relaxed),
        0
    );

    // Rollback: direct calls of the old method convert a new object back first.
    f.rollback();
    let back = f
        .class
        .rollback_entry_thunk(v1_foo as *const () as usize as u64)
        .unwrap();
    assert_eq!(testing::call_method(back, new.addr()), 1001);
    assert_eq!(new.vptr.load(Ordering::Relaxed), f.old_vptr());
    assert_eq!(testing::call_method(back, new.addr()), 1001);
    assert_eq!(
        (
            new.downs.load(Ordering::Relaxed),
            new.wrong.load(Ordering::Relaxed)
        ),
        (1, 0)
    );
}

fn registers(obj: u64) -> Registers {
    Registers {
        gpr: [
            obj,
            0x1111_2222_3333_4444,
            0x5555_6666_7777_8888,
            0x9999_aaaa_bbbb_cccc,
            0xdddd_eeee_ffff_0001,
            0x0123_4567_89ab_cdef,
            3, // al: vector registers used by a variadic call
            0xfeed_face_cafe_beef,
        ],
        xmm: std::array::from_fn(|k| [0x1000 + k as u64, 0x7fff_0000_0000 + k as u64]),
        stack: [0xaaaa_0000_0000_0007, 0xbbbb_0000_0000_0008],
        rsp: 0,
    }
}

fn assert_preserved(thunk: u64, obj: &Obj, what: &str) {
    let want = registers(obj.addr());
    let (seen, entry_rsp) = testing::call_with_registers(thunk, &want);
    assert_eq!(seen.gpr, want.gpr, "{what}: rdi rsi rdx rcx r8 r9 rax r10");
    assert_eq!(seen.xmm, want.xmm, "{what}: xmm0-7, both halves");
    assert_eq!(seen.stack, want.stack, "{what}: stack arguments");
    assert_eq!(
        seen.rsp, entry_rsp,
        "{what}: the stack pointer the method starts with"
    );
}

#[test]
fn thunks_hand_every_argument_register_and_the_stack_over_untouched() {
    let rec = testing::recorder() as usize;
    let f = Fixture::with_methods(
        &[v1_hello as *const () as usize, rec],
        &[v2_hello as *const () as usize, rec],
        upgrade as *const () as usize,
        Some(downgrade as *const () as usize),
    );
    f.switch();
    let o = Obj::new(f.old_vptr());
    // Slow path of an upgrade thunk (the object is converted on the way), then the busy-free
    // dispatch through the new vtable.
    assert_preserved(f.class.upgrade_thunk(1), o, "upgrade thunk, converting");
    assert_eq!(o.vptr.load(Ordering::Relaxed), f.new_vptr());
    assert_preserved(f.class.upgrade_thunk(1), o, "upgrade thunk, already new");
    let entry = f.class.entry_thunk(rec as u64).unwrap();
    assert_preserved(entry, o, "entry thunk, fast path");
    let old = Obj::new(f.old_vptr());
    assert_preserved(entry, old, "entry thunk, converting");
    assert_eq!(old.ups.load(Ordering::Relaxed), 1);
    f.rollback();
    assert_preserved(f.new[3].load(Ordering::Relaxed), old, "downgrade thunk");
    assert_eq!(old.downs.load(Ordering::Relaxed), 1);
}

extern "C" fn v1_args(
    o: &Obj,
    i1: u64,
    i2: u64,
    i3: u64,
    i4: u64,
    i5: u64,
    x0: f64,
    x1: f64,
    x2: f64,
    x3: f64,
    x4: f64,
    x5: f64,
    x6: f64,
    x7: f64,
    s1: u64,
    s2: u64,
) -> u64 {
    check(o, 1);
    digest(
        &[i1, i2, i3, i4, i5, s1, s2],
        &[x0, x1, x2, x3, x4, x5, x6, x7],
    ) ^ 1
}

extern "C" fn v2_args(
    o: &Obj,
    i1: u64,
    i2: u64,
    i3: u64,
    i4: u64,
    i5: u64,
    x0: f64,
    x1: f64,
    x2: f64,
    x3: f64,
    x4: f64,
    x5: f64,
    x6: f64,
    x7: f64,
    s1: u64,
    s2: u64,
) -> u64 {
    check(o, 2);
    digest(
        &[i1, i2, i3, i4, i5, s1, s2],
        &[x0, x1, x2, x3, x4, x5, x6, x7],
    ) ^ 2
}

/// Order-sensitive, so a swapped pair of arguments shows.
fn digest(ints: &[u64], floats: &[f64]) -> u64 {
    let words = ints
        .iter()
        .copied()
        .chain(floats.iter().map(|x| x.to_bits()));
    words.fold(0xcbf2_9ce4_8422_2325, |h, w| {
        (h ^ w).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn a_method_with_six_ints_eight_doubles_and_stack_args_gets_them_all() {
    let f = Fixture::with_methods(
        &[
            v1_hello as *const () as usize,
            v1_args as *const () as usize,
        ],
        &[
            v2_hello as *const () as usize,
            v2_args as *const () as usize,
        ],
        upgrade as *const () as usize,
        Some(downgrade as *const () as usize),
    );
    let ints = [11, 22, 33, 44, 55];
    let floats = [0.5, 1.25, -2.0, 3.75, 1e300, -0.0, 7.0, f64::MIN_POSITIVE];
    let stack = [u64::MAX, 0x8000_0000_0000_0001];
    let want = digest(&[11, 22, 33, 44, 55, stack[0], stack[1]], &floats);
    let o = Obj::new(f.old_vptr());
    let slot = |o: &Obj| object::load_word(o.vptr.load(Ordering::Relaxed) + 8);
    assert_eq!(
        testing::call_args(slot(o), o.addr(), ints, floats, stack),
        want ^ 1
    );
    f.switch();
    assert_eq!(
        testing::call_args(slot(o), o.addr(), ints, floats, stack),
        want ^ 2
    );
    assert_eq!(o.ups.load(Ordering::Relaxed), 1);
    let entry = f
        .class
        .entry_thunk(v2_args as *const () as usize as u64)
        .unwrap();
    let o2 = Obj::new(f.old_vptr());
    assert_eq!(
        testing::call_args(entry, o2.addr(), ints, floats, stack),
        want ^ 2
    );
    f.rollback();
    assert_eq!(
        testing::call_args(slot(o), o.addr(), ints, floats, stack),
        want ^ 1
    );
    assert_eq!(o.downs.load(Ordering::Relaxed), 1);
    assert_eq!(
        o.wrong.load(Ordering::Relaxed) + o2.wrong.load(Ordering::Relaxed),
        0
    );
}

#[test]
fn eight_threads_racing_over_1000_objects_convert_each_exactly_once_each_way() {
    const THREADS: usize = 8;
    const OBJECTS: usize = 1000;
    let f = Arc::new(Fixture::with(
        upgrade as *const () as usize,
        Some(downgrade as *const () as usize),
    ));
    let objs: Arc<Vec<&'static Obj>> =
        Arc::new((0..OBJECTS).map(|_| Obj::new(f.old_vptr())).collect());
    let entry = f
        .class
        .entry_thunk(v2_bar as *const () as usize as u64)
        .unwrap();
    let back = f
        .class
        .rollback_entry_thunk(v1_bar as *const () as usize as u64)
        .unwrap();
    let race = |direct: u64, version: u64| {
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (objs, barrier) = (objs.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for round in 0..3 {
                        for k in 0..OBJECTS {
                            // Every thread starts on the same objects: they meet on each.
                            let o = objs[(k + round * 7) % OBJECTS];
                            let got = if (t + k) % 4 == 0 {
                                testing::call_method(direct, o.addr())
                            } else {
                                o.call((t + k) % 3)
                            };
                            assert_eq!(got / 1000, version, "thread {t} object {k}");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a racing thread");
        }
    };
    f.switch();
    race(entry, 2);
    for o in objs.iter() {
        assert_eq!(
            o.ups.load(Ordering::Relaxed),
            1,
            "each object upgraded exactly once"
        );
        assert_eq!(o.vptr.load(Ordering::Relaxed), f.new_vptr());
    }
    assert_eq!(f.class.counts(), (OBJECTS as u64, 0));
    f.rollback();
    race(back, 1);
    for o in objs.iter() {
        assert_eq!(
            o.downs.load(Ordering::Relaxed),
            1,
            "each object downgraded exactly once"
        );
        assert_eq!(o.vptr.load(Ordering::Relaxed), f.old_vptr());
        assert_eq!(
            o.wrong.load(Ordering::Relaxed),
            0,
            "no call saw a half-converted object"
        );
    }
    assert_eq!(f.class.counts(), (OBJECTS as u64, OBJECTS as u64));
}

#[test]
fn a_converter_calling_its_own_object_runs_the_code_of_its_current_layout() {
    let f = Fixture::with(
        upgrade_reentrant as *const () as usize,
        Some(downgrade_reentrant as *const () as usize),
    );
    f.switch();
    let o = Obj::new(f.old_vptr());
    assert_eq!(
        o.call(2),
        2002,
        "no deadlock: the converter's own call did not wait"
    );
    assert_eq!(
        o.seen.load(Ordering::Relaxed),
        1000,
        "during upgrade: the old Hello"
    );
    let e = Obj::new(f.old_vptr());
    let entry = f
        .class
        .entry_thunk(v2_foo as *const () as usize as u64)
        .unwrap();
    assert_eq!(testing::call_method(entry, e.addr()), 2001);
    assert_eq!(e.seen.load(Ordering::Relaxed), 1000);
    f.rollback();
    assert_eq!(o.call(0), 1000);
    assert_eq!(
        o.seen.load(Ordering::Relaxed),
        2001,
        "during downgrade: the new Foo"
    );
    assert_eq!(f.class.counts(), (2, 1));
    // The re-entrant calls themselves ran on a half-converted object, by the converter's choice.
    assert_eq!(
        (
            o.ups.load(Ordering::Relaxed),
            o.downs.load(Ordering::Relaxed)
        ),
        (1, 1)
    );
}

fn words(methods: &[usize]) -> Vec<u64> {
    let mut w = vec![0, 0];
    w.extend(methods.iter().map(|&m| m as u64));
    w
}

fn class_of(old: &[u64], new: &[u64]) -> Result<&'static Class, ConvertError> {
    Class::new(
        vtable("_ZTV6nsImp1", leak_table(old)),
        vtable("_ZTV6nsImp2", leak_table(new)),
        upgrade as *const () as usize,
        Some(downgrade as *const () as usize),
        &is_code(),
    )
}

#[test]
fn vtables_that_do_not_fit_are_refused_with_the_symbol_named() {
    let three = words(&[
        v1_hello as *const () as usize,
        v1_foo as *const () as usize,
        v1_bar as *const () as usize,
    ]);
    let two = words(&[v2_hello as *const () as usize, v2_foo as *const () as usize]);
    let e = class_of(&three, &two).unwrap_err().to_string();
    assert_eq!(
        e,
        "_ZTV6nsImp1 has 3 virtual methods but _ZTV6nsImp2 has 2: a class can only be converted \
         to one with the same methods in the same slots"
    );

    // Multiple inheritance: a secondary vtable [-8, typeinfo, thunk] after the primary's slots.
    let mut multi = words(&[v1_hello as *const () as usize, v1_foo as *const () as usize]);
    multi.extend([(-8i64) as u64, 0, v1_bar as *const () as usize as u64]);
    let e = class_of(&multi, &three).unwrap_err().to_string();
    assert_eq!(
        e,
        "_ZTV6nsImp1: multiple or virtual inheritance (a secondary vtable at offset 32) is not \
         supported"
    );

    let mut virtual_base = three.clone();
    virtual_base[0] = 16;
    let e = class_of(&three, &virtual_base).unwrap_err().to_string();
    assert!(
        e.starts_with("_ZTV6nsImp2: its first word is 0x10, not an offset-to-top of 0"),
        "{e}"
    );

    let mut data = three.clone();
    data[3] = &data as *const Vec<u64> as u64; // a heap address: not code
    let e = class_of(&data, &three).unwrap_err().to_string();
    assert!(e.starts_with("_ZTV6nsImp1: method slot 1 holds 0x"), "{e}");
    assert!(e.ends_with("which does not point into code"), "{e}");

    let e = Class::new(
        Vtable {
            name: "_ZTV4Gone".into(),
            addr: 8,
            size: 40,
        },
        vtable("_ZTV6nsImp2", leak_table(&three)),
        upgrade as *const () as usize,
        None,
        &is_code(),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(e, "_ZTV4Gone: cannot read its 40 bytes at 0x8");

    let e = Class::new(
        Vtable {
            name: "_ZTV4Tiny".into(),
            addr: 4096,
            size: 12,
        },
        vtable("_ZTV6nsImp2", leak_table(&three)),
        upgrade as *const () as usize,
        None,
        &is_code(),
    )
    .unwrap_err();
    assert!(matches!(e, ConvertError::BadSize { size: 12, .. }), "{e}");
}

#[test]
fn converters_are_checked_and_a_missing_downgrade_refuses_the_rollback() {
    let three = words(&[
        v1_hello as *const () as usize,
        v1_foo as *const () as usize,
        v1_bar as *const () as usize,
    ]);
    let new = words(&[
        v2_hello as *const () as usize,
        v2_foo as *const () as usize,
        v2_bar as *const () as usize,
    ]);
    let make = |up: usize, down: Option<usize>| {
        Class::new(
            vtable("_ZTV6nsImp1", leak_table(&three)),
            vtable("_ZTV6nsImp2", leak_table(&new)),
            up,
            down,
            &is_code(),
        )
    };
    let e = make(0, None).unwrap_err().to_string();
    assert_eq!(
        e,
        "_ZTV6nsImp1 -> _ZTV6nsImp2: the upgrade converter is NULL"
    );
    let not_code = &three as *const Vec<u64> as usize;
    let e = make(upgrade as *const () as usize, Some(not_code))
        .unwrap_err()
        .to_string();
    assert!(e.contains("the downgrade converter (0x"), "{e}");

    let class =
        make(upgrade as *const () as usize, None).expect("no downgrade is fine for the reload");
    assert_eq!(class.upgrade_writes().len(), 3);
    let e = class.rollback_writes().unwrap_err().to_string();
    assert_eq!(
        e,
        "_ZTV6nsImp2: objects converted from _ZTV6nsImp1 cannot go back: no downgrade converter \
         was given (hotagent_convert_class with downgrade NULL)"
    );
    assert!(class
        .rollback_entry_thunk(v1_foo as *const () as usize as u64)
        .is_err());
}

extern "C" fn upgrade_cheap(o: &Obj) {
    o.b.store(77, Ordering::Relaxed);
}

/// Not a check: the costs, printed (`cargo test --release -p hotagent --lib measure -- --ignored
/// --nocapture`).
#[test]
#[ignore]
fn measure_call_and_conversion_costs() {
    const N: usize = 200_000;
    let f = Fixture::with(upgrade_cheap as *const () as usize, None);
    let entry = f
        .class
        .entry_thunk(v2_hello as *const () as usize as u64)
        .unwrap();
    let new = Obj::new(f.new_vptr());
    new.b.store(77, Ordering::Relaxed);
    let time = |what: &str, n: usize, mut call: Box<dyn FnMut(usize)>| {
        let t = std::time::Instant::now();
        for k in 0..n {
            call(k);
        }
        println!("{what}: {:.1} ns", t.elapsed().as_nanos() as f64 / n as f64);
    };
    let direct = v2_hello as *const () as usize as u64;
    time(
        "direct call of the new method",
        N,
        Box::new(move |_| {
            testing::call_method(direct, new.addr());
        }),
    );
    time(
        "entry thunk, new object (fast path)",
        N,
        Box::new(move |_| {
            testing::call_method(entry, new.addr());
        }),
    );
    f.switch();
    let objs: Vec<&'static Obj> = (0..N).map(|_| Obj::new(f.old_vptr())).collect();
    let objs2 = objs.clone();
    let objs3 = objs.clone();
    time(
        "first call of an old object (convert + call)",
        N,
        Box::new(move |k| {
            objs2[k].call(0);
        }),
    );
    time(
        "later virtual call of it",
        N,
        Box::new(move |k| {
            objs[k].call(0);
        }),
    );
    let up = f.class.upgrade_thunk(0);
    time(
        "a stale call through the upgrade thunk (slow path, no conversion)",
        N,
        Box::new(move |k| {
            testing::call_method(up, objs3[k].addr());
        }),
    );
}
