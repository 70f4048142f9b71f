//! libhotagent.so is preloaded into every target: it must not interpose anything. Every dynamic
//! symbol it defines is `hotagent_*`.

use hotagent_tests::agent_so;
use std::process::Command;

/// The names of the dynamic symbols `file` defines (`nm -D --defined-only`).
fn defined_dynamic_symbols(file: &std::path::Path) -> Vec<String> {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(file)
        .output()
        .expect("run nm (binutils)");
    assert!(out.status.success(), "nm failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        // `name@@VERSION` / `name@VERSION`
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

#[test]
fn agent_exports_only_hotagent_symbols() {
    let so = agent_so();
    let syms = defined_dynamic_symbols(&so);
    let foreign: Vec<_> = syms
        .iter()
        .filter(|n| !n.starts_with("hotagent_"))
        .collect();
    assert!(
        foreign.is_empty(),
        "{} exports symbols that could interpose the target's: {foreign:?}",
        so.display()
    );
}

#[test]
fn nm_sees_fixture_exports() {
    // The check above is only as good as the symbol listing: make sure it finds known exports.
    let syms = defined_dynamic_symbols(&hotagent_tests::Config::DEFAULT.path("libfoo.so"));
    for want in ["foo_version", "foo_counter", "foo_table", "foo_only_v1"] {
        assert!(
            syms.iter().any(|s| s == want),
            "{want} missing from {syms:?}"
        );
    }
    let syms = defined_dynamic_symbols(&hotagent_tests::Config::DEFAULT.path("libver.so"));
    assert!(syms.iter().any(|s| s == "ver_fn"), "{syms:?}");
}
