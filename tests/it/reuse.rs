//! A reload of bytes a loaded generation already holds reuses that loaded copy: cycles between
//! two builds stage and load nothing new (no new memfd in the target's maps), calls reach the
//! right build each time, and the stack, status and rollback stay right.

use crate::common::{assert_foo, basic, V1, V2, V3};
use hotagent_tests::*;
use std::collections::BTreeSet;

const CFG: Config = Config::DEFAULT;

/// The inodes of the memfd copies mapped in `pid`: one per loaded generation.
pub fn memfd_copies(pid: u32) -> BTreeSet<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("maps")
        .lines()
        .filter(|l| l.contains("/memfd:"))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .collect()
}

#[test]
fn cycling_between_two_builds_loads_each_once() {
    let mut t = basic(CFG);
    let (v2, v3) = (CFG.path("libfoo_v2.so"), CFG.path("libfoo_v3.so"));
    assert_eq!(reload(&t, &v2, &["--no-probe"]).generation, 1);
    let first = status(&t).generations[0].staged.clone();
    assert_eq!(reload(&t, &v3, &["--no-probe"]).generation, 2);
    let loaded = memfd_copies(t.pid());
    assert_eq!(loaded.len(), 2, "{loaded:?}");
    for _ in 0..5 {
        assert_eq!(rollback(&t).generation, 1);
        assert_foo(&mut t, &V2);
        assert_eq!(rollback(&t).generation, 0);
        assert_foo(&mut t, &V1);
        let r = reload(&t, &v2, &["--no-probe"]);
        assert!(r.generation == 1 && !r.unchanged && r.slots > 0, "{r:?}");
        assert_foo(&mut t, &V2);
        assert_eq!(reload(&t, &v3, &["--no-probe"]).generation, 2);
        assert_foo(&mut t, &V3);
        assert_eq!(memfd_copies(t.pid()), loaded, "a copy was loaded again");
    }
    let st = status(&t);
    assert_eq!(st.generations.len(), 2, "{st:?}");
    assert_eq!(
        st.generations[0].staged, first,
        "generation 1 runs its first copy"
    );
    t.finish().assert_clean();
}

/// Reuse also takes a copy still on the stack below: the same bytes as generation 1, pushed as
/// generation 3, rolled back to generation 2's code.
#[test]
fn a_copy_below_on_the_stack_is_reused_too() {
    let mut t = basic(CFG);
    let (v2, v3) = (CFG.path("libfoo_v2.so"), CFG.path("libfoo_v3.so"));
    reload(&t, &v2, &["--no-probe"]);
    reload(&t, &v3, &["--no-probe"]);
    let loaded = memfd_copies(t.pid());
    assert_eq!(reload(&t, &v2, &["--no-probe"]).generation, 3);
    assert_foo(&mut t, &V2);
    assert_eq!(memfd_copies(t.pid()), loaded);
    assert_eq!(rollback(&t).generation, 2);
    assert_foo(&mut t, &V3);
    assert_eq!(rollback(&t).generation, 1);
    assert_foo(&mut t, &V2);
    assert_eq!(rollback(&t).generation, 0);
    assert_foo(&mut t, &V1);
    t.finish().assert_clean();
}

/// `--force` asks for a load: a fresh copy, as before reuse.
#[test]
fn force_loads_a_fresh_copy() {
    let mut t = basic(CFG);
    let v2 = CFG.path("libfoo_v2.so");
    reload(&t, &v2, &["--no-probe"]);
    rollback(&t);
    let before = memfd_copies(t.pid());
    reload(&t, &v2, &["--no-probe", "--force"]);
    assert_eq!(memfd_copies(t.pid()).len(), before.len() + 1);
    assert_foo(&mut t, &V2);
    t.finish().assert_clean();
}
