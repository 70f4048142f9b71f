//! OpenSSL's `libcrypto.so.3`, as Debian ships it (stripped, hand-written assembly with
//! constant tables in `.text`), reloaded whole inside python3 while hashlib, hmac and ssl hold
//! live objects. Its private state — provider registry, method stores, library context, DRBG,
//! locks — must be the running copy's after the switch (proven by sections: no symbols), or
//! every digest would go to an empty provider store.

use super::{python, PYTHON};
use hotagent_tests::{entries_holding_int3, reload, rollback, status, HasAgent};
use std::path::Path;

const SYSTEM: &str = "/lib/x86_64-linux-gnu/libcrypto.so.3";

/// What the driver answers, one command each.
fn answers(t: &mut hotagent_tests::Target) -> Vec<String> {
    ["digest", "hello", "random"]
        .iter()
        .map(|c| t.cmd(c))
        .collect()
}

#[test]
fn openssl_debian_copy_shares_its_state() {
    let empty = tempfile::tempdir().expect("a folder");
    let copy_dir = tempfile::tempdir().expect("a folder");
    let copy = copy_dir.path().join("libcrypto.so.3");
    std::fs::copy(SYSTEM, &copy).expect("copy Debian's libcrypto.so.3");
    let mut t = python("openssl_driver.py", empty.path(), &[]);
    let mapped = std::fs::canonicalize(t.cmd("lib")).expect("the mapped libcrypto");
    assert_eq!(
        mapped,
        std::fs::canonicalize(SYSTEM).expect("Debian's libcrypto"),
        "{PYTHON} should run Debian's libcrypto here"
    );
    t.expect("begin", "begun");
    let before = answers(&mut t);
    assert!(
        before[1].starts_with("hello ") && before[1] != "hello 0",
        "{before:?}"
    );
    assert!(!before.iter().any(|a| a.starts_with("error")), "{before:?}");
    assert_eq!(before[2], "random 16 fresh");

    let share = |w: &[String]| {
        w.iter()
            .find(|l| l.starts_with("private state shared with libcrypto.so.3"))
            .cloned()
            .unwrap_or_else(|| panic!("no private-state line: {w:?}"))
    };
    let dry = reload(&t, Path::new(&copy), &["--dry-run"]);
    let line = share(&dry.warnings);
    assert!(line.contains("evidence: section sizes"), "{line}");
    let r = reload(&t, Path::new(&copy), &[]);
    assert_eq!(
        share(&r.warnings),
        line,
        "the dry run and the reload differ"
    );
    assert_eq!(r.generation, 1);
    // Its 5,363 entries were switched behind `int3`s: none may stay (each call would trap; a
    // switch that gave up half way once left thousands, and `hello` then took over 10 s).
    let trapped = entries_holding_int3(t.pid(), &mapped);
    assert!(
        trapped.is_empty(),
        "int3 left at {} entries: {:?}",
        trapped.len(),
        &trapped[..trapped.len().min(5)]
    );
    // The live objects, fresh digests, a TLS client and the DRBG all work on the new code.
    assert_eq!(answers(&mut t), before);

    rollback(&t);
    assert_eq!(status(&t).generation, 0);
    let trapped = entries_holding_int3(t.pid(), &mapped);
    assert!(
        trapped.is_empty(),
        "int3 left at {} entries after the rollback: {:?}",
        trapped.len(),
        &trapped[..trapped.len().min(5)]
    );
    assert_eq!(answers(&mut t), before);
    t.finish().assert_clean();
}
