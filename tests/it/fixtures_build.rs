//! Every fixture compiles in every configuration it is used in, and the artifacts have the
//! properties the other tests rely on. Needs no agent.

use hotagent_tests::files::elf;
use hotagent_tests::{all_artifacts, matrix_artifacts, Bind, Config, Target};
use std::path::Path;
use std::process::Command;

fn readelf(args: &[&str], file: &Path) -> String {
    let out = Command::new("readelf")
        .args(args)
        .arg(file)
        .output()
        .expect("run readelf (binutils)");
    assert!(
        out.status.success(),
        "readelf {args:?} {} failed",
        file.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_fixture_builds_in_every_config() {
    for cfg in Config::ALL {
        for artifact in matrix_artifacts() {
            assert!(cfg.path(artifact).is_file(), "{artifact} in {cfg}");
        }
    }
    for artifact in all_artifacts() {
        assert!(Config::DEFAULT.path(artifact).is_file(), "{artifact}");
    }
}

#[test]
fn matrix_flags_took_effect() {
    for cfg in Config::ALL {
        let exe = cfg.path("basic");
        let header = readelf(&["-h"], &exe);
        let dynamic = readelf(&["-d"], &exe);
        let relocs = readelf(&["-r"], &exe);
        if cfg.pie {
            assert!(
                header.contains("DYN"),
                "{cfg}: basic should be a PIE:\n{header}"
            );
            assert!(dynamic.contains("PIE"), "{cfg}: basic should have DF_1_PIE");
        } else {
            assert!(
                header.contains("EXEC"),
                "{cfg}: basic should be ET_EXEC:\n{header}"
            );
        }
        let bind_now = dynamic.contains("BIND_NOW") || dynamic.contains("NOW");
        match cfg.bind {
            Bind::Lazy => {
                assert!(!bind_now, "{cfg}: should bind lazily:\n{dynamic}");
                assert!(
                    relocs.contains("R_X86_64_JUMP_SLO"),
                    "{cfg}: lazy PLT relocations"
                );
            }
            Bind::Now => assert!(bind_now, "{cfg}: should bind now:\n{dynamic}"),
            Bind::NoPlt => {
                assert!(bind_now, "{cfg}: should bind now:\n{dynamic}");
                // -fno-plt: calls go through GLOB_DAT GOT slots, not through PLT jump slots.
                assert!(
                    relocs.contains("R_X86_64_GLOB_DAT") && relocs.contains("foo_version"),
                    "{cfg}: foo_version should be reached through the GOT:\n{relocs}"
                );
                assert!(
                    !relocs
                        .lines()
                        .any(|l| l.contains("JUMP_SLO") && l.contains("foo_version")),
                    "{cfg}: no PLT slot for foo_version with -fno-plt:\n{relocs}"
                );
            }
        }
        // The program reads foo_counter directly: a copy relocation, the realistic hazard.
        assert!(
            relocs.contains("R_X86_64_COPY"),
            "{cfg}: expected a copy relocation of foo_counter"
        );
        let lib = readelf(&["-d"], &cfg.path("libfoo_v2.so"));
        assert!(
            lib.contains("[libfoo.so]"),
            "{cfg}: libfoo_v2.so's soname is libfoo.so:\n{lib}"
        );
    }
}

#[test]
fn special_fixtures_are_what_they_claim() {
    let cfg = Config::DEFAULT;
    // The versioned library defines both versions of ver_fn.
    let syms = readelf(&["--dyn-syms", "-W"], &cfg.path("libver.so"));
    assert!(syms.contains("ver_fn@VER_1"), "{syms}");
    assert!(syms.contains("ver_fn@@VER_2"), "{syms}");
    // The IFUNC is an IFUNC.
    let syms = readelf(&["--dyn-syms", "-W"], &cfg.path("libifunc.so"));
    assert!(
        syms.lines()
            .any(|l| l.contains("IFUNC") && l.contains("ifunc_value")),
        "{syms}"
    );
    // foo_version became data.
    let syms = readelf(&["--dyn-syms", "-W"], &cfg.path("libbad_data.so"));
    assert!(
        syms.lines()
            .any(|l| l.contains("OBJECT") && l.ends_with(" foo_version")),
        "{syms}"
    );
    // The dependency that does not exist.
    let dynamic = readelf(&["-d"], &cfg.path("libbad_needed.so"));
    assert!(dynamic.contains("[libghost.so]"), "{dynamic}");
    assert!(!cfg.dir().join("libghost.so").exists());
    // An undefined function reference.
    let syms = readelf(&["--dyn-syms", "-W"], &cfg.path("libbad_undef.so"));
    assert!(
        syms.lines()
            .any(|l| l.contains("UND") && l.contains("nobody_defines_this_function")),
        "{syms}"
    );
    // The probe's libraries kept their extra constructor or destructor (a null write the compiler
    // may prove undefined and drop): one more init/fini array entry than libfoo v2.
    let size = |artifact: &str, tag: u64| {
        let bytes = std::fs::read(cfg.path(artifact)).unwrap();
        elf::dynamic_entry(&bytes, tag).val
    };
    let init = size("libfoo_v2.so", elf::DT_INIT_ARRAYSZ);
    for artifact in ["libcrash_ctor.so", "libabort_ctor.so", "libnoisy_ctor.so"] {
        assert_eq!(
            size(artifact, elf::DT_INIT_ARRAYSZ),
            init + 8,
            "{artifact} lost its constructor"
        );
    }
    let fini = size("libfoo_v2.so", elf::DT_FINI_ARRAYSZ);
    assert_eq!(
        size("libcrash_dtor.so", elf::DT_FINI_ARRAYSZ),
        fini + 8,
        "libcrash_dtor.so lost its destructor"
    );
    // Rust calls libfoo through the GOT, bound at start.
    let rust = cfg.path("rust_app");
    let dynamic = readelf(&["-d"], &rust);
    assert!(dynamic.contains("[libfoo.so]"), "{dynamic}");
}

/// A fixture program of the default configuration, started without the agent.
fn without_agent(program: &str) -> Target {
    Target::builder(Config::DEFAULT.path(program))
        .without_agent()
        .spawn()
}

#[test]
fn fixtures_answer_without_agent() {
    // The programs themselves work (independent of the agent): v1 answers.
    let mut t = without_agent("basic");
    t.expect("version", 1);
    t.expect("add 2 3", 5);
    t.expect("twice", 2);
    t.expect("bump", 1);
    t.expect("counter", 1);
    t.expect("late", 11);
    t.expect("only", 501);
    t.expect("table 2", 3);
    t.expect("table_v1 3", 4);
    let plugin = Config::DEFAULT.path("libplugin.so");
    t.expect(&format!("dlopen {}", plugin.display()), "ok");
    t.expect("plugin", 1);
    t.expect("plugin_ctor", 1);
    t.finish().assert_clean();

    let mut t = without_agent("versioned");
    t.expect("new", 2);
    t.expect("old", 1);

    let mut t = without_agent("cpp");
    t.expect("make", 0);
    t.expect("area 0", 10);
    t.expect("describe 0", 1);

    let mut t = without_agent("rust_app");
    t.expect("version", 1);
    t.expect("twice", 2);

    let mut t = without_agent("ifunc");
    t.expect("value", 1);
    t.expect("twice", 2);

    let mut t = without_agent("libcpatch");
    t.expect("abs -5", 5);

    let mut t = without_agent("forker");
    t.expect("version", 1);
    let child = t.cmd("fork");
    assert!(child.starts_with("child "), "{child}");
    t.expect("child version", 1);
    let pid = child["child ".len()..].to_string();
    t.expect("child pid", pid);
    t.expect("child quit", "bye");

    let mut t = without_agent("reaper");
    t.expect("version", 1);
    t.expect("add 2 3", 5);
    t.expect("reaped", 0);
    t.cmd_i("spawn");
    assert!(
        t.wait_for_count("reaped", 1) >= 1,
        "the SIGCHLD handler reaped nothing"
    );
    t.cmd_i("hold");
    let done = t.finish();
    assert!(done.status.success(), "{done:?}");

    let mut t = without_agent("threads");
    let stats = t.cmd("stats");
    assert!(stats.starts_with("calls="), "{stats}");
    assert!(stats.contains(" bad=0 "), "{stats}");
}
