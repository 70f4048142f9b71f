//! The runtime against vtables and calls that g++ itself produced: two builds of a class loaded
//! into this process, objects made by version 1 and called by version 1's compiled virtual
//! calls, the old vtable (in RELRO) switched as the reload would switch it.

use super::*;
use crate::sys::thunk::testing;
use crate::sys::{dl, self_mem};
use std::path::Path;

const BASE: &str = r#"
struct Base { virtual ~Base(); virtual long bump() = 0; virtual long get() = 0; };
Base::~Base() {}
struct L { virtual int l(); }; int L::l() { return 1; }
struct R { virtual int r(); }; int R::r() { return 2; }
struct Both : L, R { int l() override; int r() override; }; int Both::l() { return 3; } int Both::r() { return 4; }
struct Virt : virtual L { int l() override; }; int Virt::l() { return 5; }
void *keep_alive[] = { new Both, new Virt };
extern "C" long drive(Base *o) { return o->bump(); }
extern "C" long get(Base *o) { return o->get(); }
"#;

const V1: &str = r#"
struct Impl1 : Base { long n = 0; long spare = 0; long bump() override; long get() override; };
long Impl1::bump() { return ++n; }
long Impl1::get() { return n; }
extern "C" Base *make(long) { return new Impl1; }
"#;

const V2: &str = r#"
struct Impl2 : Base { long n = 0; long m = 77; long bump() override; long get() override; };
long Impl2::bump() { return ++n + 1000 * m; }
long Impl2::get() { return n + 1000 * m; }
extern "C" Base *make(long) { return new Impl2; }
extern "C" void up(Impl2 *o) { o->m = 77; }
extern "C" void down(Impl2 *o) { o->m = 0; }
"#;

fn build(dir: &Path, name: &str, src: &str) -> String {
    let cpp = dir.join(format!("{name}.cpp"));
    let so = dir.join(format!("{name}.so"));
    std::fs::write(&cpp, format!("{BASE}{src}")).unwrap();
    let st = std::process::Command::new("g++")
        .args(["-O2", "-fPIC", "-shared", "-o"])
        .arg(&so)
        .arg(&cpp)
        .status()
        .expect("g++ runs");
    assert!(st.success(), "g++ {name}");
    so.to_str().unwrap().to_string()
}

/// The symbol `name` of the loaded library at `path`: its address (dlsym) and size (the file).
fn vtable_of(path: &str, h: dl::Handle, name: &str) -> Vtable {
    let bytes = std::fs::read(path).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let size = elf
        .dynsyms
        .iter()
        .find(|s| elf.dynstrtab.get_at(s.st_name) == Some(name))
        .expect("the vtable symbol")
        .st_size;
    Vtable {
        name: name.to_string(),
        addr: dl::symbol(h, name, None).expect("dlsym"),
        size,
    }
}

/// Writes as the reload does into RELRO: through /proc/self/mem, after checking the old value.
fn apply(writes: &[SlotWrite]) {
    let mem = self_mem::open_proc_mem().unwrap();
    for w in writes {
        assert_eq!(object::load_word(w.addr), w.expected);
        self_mem::write_through_proc_mem(&mem, w.addr, &w.value.to_le_bytes()).unwrap();
    }
}

#[test]
fn objects_of_a_gxx_built_class_convert_on_their_first_compiled_virtual_call() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (build(dir.path(), "v1", V1), build(dir.path(), "v2", V2));
    let h1 = dl::open_now_local(&p1).unwrap();
    let h2 = dl::open_now_local(&p2).unwrap();
    let sym = |h, n: &str| dl::symbol(h, n, None).unwrap();
    let is_code = super::tests::is_code();

    let class = Class::new(
        vtable_of(&p1, h1, "_ZTV5Impl1"),
        vtable_of(&p2, h2, "_ZTV5Impl2"),
        sym(h2, "up") as usize,
        Some(sym(h2, "down") as usize),
        &is_code,
    )
    .expect("a primary vtable with a virtual destructor is accepted");
    // ~D1, ~D0, bump, get.
    assert_eq!(class.methods(), 4);

    let o = testing::call_method(sym(h1, "make"), 0);
    let drive = sym(h1, "drive"); // version 1's compiled `o->bump()`
    assert_eq!(testing::call_method(drive, o), 1);
    apply(&class.upgrade_writes());
    assert_eq!(
        testing::call_method(drive, o),
        77_002,
        "converted, then Impl2::bump ran"
    );
    assert_eq!(testing::call_method(sym(h1, "get"), o), 77_002);
    let born_new = testing::call_method(sym(h2, "make"), 0);
    assert_eq!(testing::call_method(drive, born_new), 77_001);
    assert_eq!(class.counts(), (1, 0));

    apply(&class.rollback_writes().unwrap());
    assert_eq!(
        testing::call_method(drive, o),
        3,
        "converted back, then Impl1::bump ran"
    );
    assert_eq!(testing::call_method(drive, born_new), 2);
    assert_eq!(class.counts(), (1, 2));

    let e = Class::new(
        vtable_of(&p1, h1, "_ZTV4Both"),
        vtable_of(&p2, h2, "_ZTV4Both"),
        sym(h2, "up") as usize,
        None,
        &is_code,
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "_ZTV4Both: multiple or virtual inheritance (a secondary vtable at offset 32) is not \
         supported"
    );
    let virt = vtable_of(&p1, h1, "_ZTV4Virt");
    let e = Class::new(virt.clone(), virt, sym(h2, "up") as usize, None, &is_code).unwrap_err();
    // Virt's vtable starts with its virtual base's offsets: refused one way or the other.
    assert!(
        matches!(
            e,
            ConvertError::NotPrimary { .. } | ConvertError::Secondary { .. }
        ),
        "{e}"
    );
}
