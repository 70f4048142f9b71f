//! Builds the C, C++ and Rust fixtures into `target/fixtures/<config>/`, once per test-binary run.
//!
//! Every artifact has its own once-cell, so parallel tests wait for each other instead of building
//! twice, and a test builds only what it uses. Across processes the build is race-free as well: the
//! compiler writes a temporary name that is then renamed into place, and a stamp file next to the
//! artifact (a hash of the command line and of every input's contents) tells when it is up to date.

use crate::paths::{fixtures_src, target_dir};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// How calls to other modules are bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bind {
    /// `-Wl,-z,lazy`, partial RELRO: PLT slots resolved on first call, GOT writable.
    Lazy,
    /// `-Wl,-z,now -Wl,-z,relro`: everything bound at start, GOT read-only (full RELRO).
    Now,
    /// `-fno-plt` with full RELRO: calls go through the GOT directly, no PLT at all.
    NoPlt,
}

/// One build configuration of the C/C++ fixtures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    pub bind: Bind,
    /// Position-independent executables (`-fPIE -pie`), else `-fno-pie -no-pie`.
    pub pie: bool,
}

impl Config {
    /// The configuration binding as `bind`, PIE or not.
    pub const fn new(bind: Bind, pie: bool) -> Config {
        Config { bind, pie }
    }

    pub const LAZY_PIE: Config = Config::new(Bind::Lazy, true);
    pub const LAZY_NOPIE: Config = Config::new(Bind::Lazy, false);
    pub const NOW_PIE: Config = Config::new(Bind::Now, true);
    pub const NOW_NOPIE: Config = Config::new(Bind::Now, false);
    pub const NOPLT_PIE: Config = Config::new(Bind::NoPlt, true);
    pub const NOPLT_NOPIE: Config = Config::new(Bind::NoPlt, false);

    /// Every configuration of the matrix.
    pub const ALL: [Config; 6] = [
        Config::LAZY_PIE,
        Config::LAZY_NOPIE,
        Config::NOW_PIE,
        Config::NOW_NOPIE,
        Config::NOPLT_PIE,
        Config::NOPLT_NOPIE,
    ];

    /// The configuration of the tests that do not run the whole matrix: what a distribution's
    /// compiler produces by default (PIE, lazy binding, partial RELRO).
    pub const DEFAULT: Config = Config::LAZY_PIE;

    /// `lazy-pie`, `now-nopie`, ...
    pub fn name(self) -> String {
        let bind = match self.bind {
            Bind::Lazy => "lazy",
            Bind::Now => "now",
            Bind::NoPlt => "noplt",
        };
        let pie = if self.pie { "pie" } else { "nopie" };
        format!("{bind}-{pie}")
    }

    /// The folder this configuration's artifacts are built into.
    pub fn dir(self) -> PathBuf {
        target_dir().join("fixtures").join(self.name())
    }

    fn bind_flags(self) -> &'static [&'static str] {
        match self.bind {
            Bind::Lazy => &["-Wl,-z,lazy", "-Wl,-z,relro"],
            Bind::Now => &["-Wl,-z,now", "-Wl,-z,relro"],
            Bind::NoPlt => &["-fno-plt", "-Wl,-z,now", "-Wl,-z,relro"],
        }
    }

    fn exe_flags(self) -> &'static [&'static str] {
        if self.pie {
            &["-fPIE", "-pie"]
        } else {
            &["-fno-pie", "-no-pie"]
        }
    }

    /// The path of a fixture artifact (e.g. `libfoo_v2.so`, `basic`), built first if needed.
    /// Panics with the compiler's output when the build fails.
    pub fn path(self, artifact: &str) -> PathBuf {
        let spec = spec(artifact);
        let cell = {
            let mut memo = memo().lock().unwrap_or_else(|e| e.into_inner());
            memo.entry((self, spec.out)).or_default().clone()
        };
        match cell.get_or_init(|| build(self, spec)) {
            Ok(path) => path.clone(),
            Err(why) => panic!(
                "building fixture {} ({}) failed:\n{why}",
                spec.out,
                self.name()
            ),
        }
    }
}

impl std::fmt::Display for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lang {
    C,
    Cxx,
    Rust,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A shared library with this soname.
    Lib(&'static str),
    Exe,
}

/// How to build one artifact.
#[derive(Debug)]
struct Spec {
    /// The file name of the artifact.
    out: &'static str,
    lang: Lang,
    kind: Kind,
    /// The main source file in `tests/fixtures/`.
    src: &'static str,
    /// Other inputs (headers) whose contents decide whether to rebuild.
    inputs: &'static [&'static str],
    /// Fixture libraries (artifact names) linked with `-l`, built first.
    links: &'static [&'static str],
    /// A version script in `tests/fixtures/`.
    map: Option<&'static str>,
    /// Extra compiler/linker arguments, appended to the command line (e.g.
    /// `-Wl,-Bsymbolic-functions`).
    flags: &'static [&'static str],
    /// Link against `libghost.so` built in a temporary folder that is then deleted, so the
    /// artifact has a DT_NEEDED entry nothing can satisfy.
    ghost: bool,
    /// Built in every configuration by [`matrix_artifacts`]; the others only in [`Config::DEFAULT`].
    matrix: bool,
}

const fn lib(out: &'static str, soname: &'static str, lang: Lang, src: &'static str) -> Spec {
    Spec {
        out,
        lang,
        kind: Kind::Lib(soname),
        src,
        inputs: &[],
        links: &[],
        map: None,
        flags: &[],
        ghost: false,
        matrix: false,
    }
}

const fn exe(
    out: &'static str,
    lang: Lang,
    src: &'static str,
    links: &'static [&'static str],
) -> Spec {
    Spec {
        out,
        lang,
        kind: Kind::Exe,
        src,
        inputs: &[],
        links,
        map: None,
        flags: &[],
        ghost: false,
        matrix: false,
    }
}

const fn with_inputs(mut s: Spec, inputs: &'static [&'static str]) -> Spec {
    s.inputs = inputs;
    s
}

const fn in_matrix(mut s: Spec) -> Spec {
    s.matrix = true;
    s
}

const FOO_H: &[&str] = &["foo.h"];
const SHAPE_H: &[&str] = &["shape.h"];
/// The programs' shared line loop.
const CMDLOOP_H: &[&str] = &["cmdloop.h"];
const HOLD_H: &[&str] = &["hold.h"];
const HOLD_PROGRAM: &[&str] = &["cmdloop.h", "hold.h"];
const SPIN_H: &[&str] = &["spin.h"];
const SPIN_PROGRAM: &[&str] = &["cmdloop.h", "spin.h"];
/// Programs on libfoo.so.
const FOO_PROGRAM: &[&str] = &["foo.h", "cmdloop.h"];
/// Programs on libfoo.so that answer each of its calls.
const FOO_COMMANDS: &[&str] = &["foo.h", "cmdloop.h", "foo_commands.h"];
const SHAPE_PROGRAM: &[&str] = &["shape.h", "cmdloop.h"];
const DIRECT_H: &[&str] = &["direct.h"];
const DIRECT_PROGRAM: &[&str] = &["direct.h", "cmdloop.h"];
const TLS_H: &[&str] = &["tls.h"];
const TLS_PROGRAM: &[&str] = &["tls.h", "cmdloop.h"];
const PRIV_H: &[&str] = &["priv.h"];
const PRIV_PROGRAM: &[&str] = &["priv.h", "cmdloop.h"];
const STR_H: &[&str] = &["str.h"];
const STR_PROGRAM: &[&str] = &["str.h", "cmdloop.h"];
const SHADOWY_H: &[&str] = &["shadowy.h"];
/// A patch using the agent's API (the header is found relative to the fixture's folder).
const SHADOWY_PATCH: &[&str] = &["shadowy.h", "../../include/hotagent.h"];
const SHADOWY_PROGRAM: &[&str] = &["shadowy.h", "cmdloop.h"];
/// A library's calls to its own exported functions bind inside it, not through its GOT.
const BSYMBOLIC_FUNCTIONS: &[&str] = &["-Wl,-Bsymbolic-functions"];
/// Sources that `#include "libfoo_v2.c"`.
const FOO_V2: &[&str] = &["foo.h", "libfoo_v2.c"];

const GROW_H: &[&str] = &["grow.h"];
const COUNTER_H: &[&str] = &["counter.h"];
const COUNTER_PROGRAM: &[&str] = &["counter.h", "cmdloop.h"];
const MULTI_H: &[&str] = &["multi.h"];
const MULTI_PROGRAM: &[&str] = &["multi.h", "cmdloop.h"];
const GROW_PROGRAM: &[&str] = &["grow.h", "cmdloop.h"];
const CALLCOST_H: &[&str] = &["callcost.h"];
const CALLCOST_PROGRAM: &[&str] = &["callcost.h", "cmdloop.h"];
const RESET_H: &[&str] = &["reset.h"];
const RESET_PROGRAM: &[&str] = &["reset.h", "cmdloop.h"];
const PROB_H: &[&str] = &["prob.h"];
const PROB_PROGRAM: &[&str] = &["prob.h", "prob_load.h", "cmdloop.h"];

/// libgrow_v2.c built with `flags` (which hooks it has and how they behave).
const fn grow_variant(out: &'static str, flags: &'static [&'static str]) -> Spec {
    Spec {
        flags,
        ..with_inputs(lib(out, "libgrow.so", Lang::C, "libgrow_v2.c"), GROW_H)
    }
}

/// A patch of libfoo.so whose source `#include`s libfoo_v2.c and adds to it.
const fn on_v2(out: &'static str, src: &'static str) -> Spec {
    with_inputs(lib(out, "libfoo.so", Lang::C, src), FOO_V2)
}

static SPECS: &[Spec] = &[
    // libfoo and the programs around it: the whole matrix.
    in_matrix(with_inputs(
        lib("libfoo.so", "libfoo.so", Lang::C, "libfoo_v1.c"),
        FOO_H,
    )),
    in_matrix(with_inputs(
        lib("libfoo_v2.so", "libfoo.so", Lang::C, "libfoo_v2.c"),
        FOO_H,
    )),
    in_matrix(with_inputs(
        lib("libfoo_v3.so", "libfoo.so", Lang::C, "libfoo_v3.c"),
        FOO_H,
    )),
    in_matrix(lib(
        "libfoo_partial.so",
        "libfoo.so",
        Lang::C,
        "libfoo_partial.c",
    )),
    in_matrix(Spec {
        links: &["libfoo.so"],
        ..with_inputs(
            lib("libplugin.so", "libplugin.so", Lang::C, "plugin.c"),
            FOO_H,
        )
    }),
    in_matrix(with_inputs(
        exe("basic", Lang::C, "basic.c", &["libfoo.so"]),
        FOO_COMMANDS,
    )),
    // IFUNC.
    in_matrix(lib("libifunc.so", "libifunc.so", Lang::C, "libifunc_v1.c")),
    in_matrix(lib(
        "libifunc_v2.so",
        "libifunc.so",
        Lang::C,
        "libifunc_v2.c",
    )),
    in_matrix(lib(
        "libifunc_v3.so",
        "libifunc.so",
        Lang::C,
        "libifunc_v3.c",
    )),
    in_matrix(with_inputs(
        exe("ifunc", Lang::C, "ifunc.c", &["libifunc.so"]),
        CMDLOOP_H,
    )),
    // Symbol versions.
    in_matrix(Spec {
        map: Some("libver.map"),
        ..lib("libver.so", "libver.so", Lang::C, "libver_v1.c")
    }),
    in_matrix(lib("libver_v2.so", "libver.so", Lang::C, "libver_v2.c")),
    in_matrix(Spec {
        map: Some("libver.map"),
        ..lib("libver_v3.so", "libver.so", Lang::C, "libver_v3.c")
    }),
    in_matrix(with_inputs(
        exe("versioned", Lang::C, "versioned.c", &["libver.so"]),
        CMDLOOP_H,
    )),
    // Versions as real libraries use them (tests/it/versions_real.rs): a library built with a
    // version script shaped like zlib's, a rebuild whose versions are numbered apart, a program
    // on the distribution's own zlib, and a patch that only shows it is wrong once loaded.
    Spec {
        map: Some("libzlike.map"),
        ..lib("libzlike.so", "libzlike.so", Lang::C, "libzlike_v1.c")
    },
    Spec {
        map: Some("libzlike2.map"),
        ..lib("libzlike_v2.so", "libzlike.so", Lang::C, "libzlike_v2.c")
    },
    with_inputs(
        exe("zlike", Lang::C, "zlike.c", &["libzlike.so"]),
        CMDLOOP_H,
    ),
    Spec {
        flags: &["-lz"],
        ..with_inputs(exe("zuser", Lang::C, "zuser.c", &[]), CMDLOOP_H)
    },
    with_inputs(
        lib(
            "libfoo_backref.so",
            "libfoo.so",
            Lang::C,
            "libfoo_backref.c",
        ),
        FOO_H,
    ),
    with_inputs(
        lib(
            "libfoo_backref_thread.so",
            "libfoo.so",
            Lang::C,
            "libfoo_backref_thread.c",
        ),
        &["foo.h", "libfoo_backref.c"],
    ),
    Spec {
        flags: &["-Wl,-z,nodelete"],
        ..with_inputs(
            lib(
                "libfoo_backref_pinned.so",
                "libfoo.so",
                Lang::C,
                "libfoo_backref.c",
            ),
            FOO_H,
        )
    },
    // Patching libc itself.
    in_matrix(lib(
        "libc_patch.so",
        "libc_patch.so",
        Lang::C,
        "libc_patch.c",
    )),
    in_matrix(with_inputs(
        exe("libcpatch", Lang::C, "libcpatch.c", &[]),
        CMDLOOP_H,
    )),
    // A program whose start-up takes a realistic time (the try bench).
    with_inputs(
        exe("slowstart", Lang::C, "slowstart.c", &["libfoo.so"]),
        FOO_PROGRAM,
    ),
    // State that changes shape (issue 10): a struct that grows, migrate/unmigrate hooks, and
    // the ways a hook refuses.
    with_inputs(
        lib("libgrow.so", "libgrow.so", Lang::C, "libgrow_v1.c"),
        GROW_H,
    ),
    with_inputs(
        lib("libgrow_v2.so", "libgrow.so", Lang::C, "libgrow_v2.c"),
        GROW_H,
    ),
    grow_variant("libgrow_veto.so", &["-DGROW_VETO"]),
    grow_variant("libgrow_failmig.so", &["-DGROW_FAIL_MIGRATE"]),
    grow_variant("libgrow_nohook.so", &["-DGROW_NO_HOOKS"]),
    grow_variant("libgrow_crash.so", &["-DGROW_CRASH_PREPARE"]),
    grow_variant("libgrow_hang.so", &["-DGROW_HANG_PREPARE"]),
    with_inputs(
        exe("grow", Lang::C, "grow.c", &["libgrow.so"]),
        GROW_PROGRAM,
    ),
    with_inputs(
        exe("grow_copy", Lang::C, "grow_copy.c", &["libgrow.so"]),
        GROW_PROGRAM,
    ),
    // C++ objects converted on their first call (issue 10): Counter grows its data block; the
    // program (exporting the counters the converters keep) drives 8 threads over the objects.
    with_inputs(
        lib(
            "libcounter.so",
            "libcounter.so",
            Lang::Cxx,
            "libcounter_v1.cpp",
        ),
        COUNTER_H,
    ),
    with_inputs(
        lib(
            "libcounter_v2.so",
            "libcounter.so",
            Lang::Cxx,
            "libcounter_v2.cpp",
        ),
        COUNTER_H,
    ),
    Spec {
        flags: &["-DCOUNTER_MISSING_VTABLE"],
        ..with_inputs(
            lib(
                "libcounter_missing.so",
                "libcounter.so",
                Lang::Cxx,
                "libcounter_v2.cpp",
            ),
            COUNTER_H,
        )
    },
    Spec {
        flags: &["-DCOUNTER_WRONG_SHAPE"],
        ..with_inputs(
            lib(
                "libcounter_shape.so",
                "libcounter.so",
                Lang::Cxx,
                "libcounter_v2.cpp",
            ),
            COUNTER_H,
        )
    },
    Spec {
        flags: &["-DCOUNTER_NO_DOWNGRADE"],
        ..with_inputs(
            lib(
                "libcounter_oneway.so",
                "libcounter.so",
                Lang::Cxx,
                "libcounter_v2.cpp",
            ),
            COUNTER_H,
        )
    },
    Spec {
        flags: &["-rdynamic"],
        ..with_inputs(
            exe("counter", Lang::Cxx, "counter.cpp", &["libcounter.so"]),
            COUNTER_PROGRAM,
        )
    },
    // The same, the library linked with -Bsymbolic-functions: its own direct calls of a method
    // reach only the old entry.
    Spec {
        flags: BSYMBOLIC_FUNCTIONS,
        ..with_inputs(
            lib(
                "libcountersym.so",
                "libcountersym.so",
                Lang::Cxx,
                "libcounter_v1.cpp",
            ),
            COUNTER_H,
        )
    },
    Spec {
        flags: BSYMBOLIC_FUNCTIONS,
        ..with_inputs(
            lib(
                "libcountersym_v2.so",
                "libcountersym.so",
                Lang::Cxx,
                "libcounter_v2.cpp",
            ),
            COUNTER_H,
        )
    },
    Spec {
        flags: &["-rdynamic"],
        ..with_inputs(
            exe(
                "counter_symbolic",
                Lang::Cxx,
                "counter.cpp",
                &["libcountersym.so"],
            ),
            COUNTER_PROGRAM,
        )
    },
    // Multiple inheritance: a secondary vtable, refused.
    with_inputs(
        lib("libmulti.so", "libmulti.so", Lang::Cxx, "libmulti_v1.cpp"),
        MULTI_H,
    ),
    with_inputs(
        lib(
            "libmulti_v2.so",
            "libmulti.so",
            Lang::Cxx,
            "libmulti_v2.cpp",
        ),
        MULTI_H,
    ),
    with_inputs(
        exe("multi", Lang::Cxx, "multi.cpp", &["libmulti.so"]),
        MULTI_PROGRAM,
    ),
    // The bench's hook and conversion costs (tests/bench/hooks.rs): libfoo v2 with hooks that
    // only return 0 (and without any, the floor); a class whose converters do nothing.
    on_v2("libfoo_hooks_none.so", "libfoo_hooks.c"),
    Spec {
        flags: &["-DHOOK_PREPARE", "-DHOOK_COMMITTED"],
        ..on_v2("libfoo_hooks_nomigrate.so", "libfoo_hooks.c")
    },
    Spec {
        flags: &["-DHOOK_PREPARE", "-DHOOK_MIGRATE", "-DHOOK_COMMITTED"],
        ..on_v2("libfoo_hooks_all.so", "libfoo_hooks.c")
    },
    with_inputs(
        lib(
            "libcallcost.so",
            "libcallcost.so",
            Lang::Cxx,
            "libcallcost_v1.cpp",
        ),
        CALLCOST_H,
    ),
    with_inputs(
        lib(
            "libcallcost_v2.so",
            "libcallcost.so",
            Lang::Cxx,
            "libcallcost_v2.cpp",
        ),
        CALLCOST_H,
    ),
    with_inputs(
        exe("callcost", Lang::Cxx, "callcost.cpp", &["libcallcost.so"]),
        CALLCOST_PROGRAM,
    ),
    // C++.
    in_matrix(with_inputs(
        lib("libshape.so", "libshape.so", Lang::Cxx, "libshape_v1.cpp"),
        SHAPE_H,
    )),
    in_matrix(with_inputs(
        lib(
            "libshape_v2.so",
            "libshape.so",
            Lang::Cxx,
            "libshape_v2.cpp",
        ),
        SHAPE_H,
    )),
    in_matrix(with_inputs(
        exe("cpp", Lang::Cxx, "cpp.cpp", &["libshape.so"]),
        SHAPE_PROGRAM,
    )),
    // The same classes and program, the library linked with -Bsymbolic-functions: its vtable
    // holds relative relocations, no symbol a slot could be switched by.
    in_matrix(Spec {
        flags: BSYMBOLIC_FUNCTIONS,
        ..with_inputs(
            lib(
                "libshapesym.so",
                "libshapesym.so",
                Lang::Cxx,
                "libshape_v1.cpp",
            ),
            SHAPE_H,
        )
    }),
    in_matrix(Spec {
        flags: BSYMBOLIC_FUNCTIONS,
        ..with_inputs(
            lib(
                "libshapesym_v2.so",
                "libshapesym.so",
                Lang::Cxx,
                "libshape_v2.cpp",
            ),
            SHAPE_H,
        )
    }),
    in_matrix(with_inputs(
        exe("cpp_symbolic", Lang::Cxx, "cpp.cpp", &["libshapesym.so"]),
        SHAPE_PROGRAM,
    )),
    // A library whose calls to its own functions never read a GOT slot (-Bsymbolic-functions, a
    // hidden alias), its partial patch, and a program on it: only entry jumps reach those calls.
    in_matrix(Spec {
        flags: BSYMBOLIC_FUNCTIONS,
        ..with_inputs(
            lib("libdirect.so", "libdirect.so", Lang::C, "libdirect_v1.c"),
            DIRECT_H,
        )
    }),
    in_matrix(Spec {
        flags: BSYMBOLIC_FUNCTIONS,
        ..with_inputs(
            lib("libdirect_v2.so", "libdirect.so", Lang::C, "libdirect_v2.c"),
            DIRECT_H,
        )
    }),
    in_matrix(with_inputs(
        exe("direct", Lang::C, "direct.c", &["libdirect.so"]),
        DIRECT_PROGRAM,
    )),
    // Default configuration only.
    with_inputs(
        exe("threads", Lang::C, "threads.c", &["libfoo.so"]),
        FOO_PROGRAM,
    ),
    // Threads that block every signal: asleep (located, not stopped) or spinning.
    with_inputs(
        exe("blockers", Lang::C, "blockers.c", &["libfoo.so"]),
        FOO_PROGRAM,
    ),
    // A thread that stays inside the first bytes of a function (blocked in a system call there).
    lib("libpark.so", "libpark.so", Lang::C, "libpark_v1.c"),
    lib("libpark_v2.so", "libpark.so", Lang::C, "libpark_v2.c"),
    with_inputs(exe("park", Lang::C, "park.c", &["libpark.so"]), CMDLOOP_H),
    // A thread kept inside a function (blocked in read() there): purge must refuse.
    with_inputs(
        lib("libhold.so", "libhold.so", Lang::C, "libhold_v1.c"),
        HOLD_H,
    ),
    with_inputs(
        lib("libhold_v2.so", "libhold.so", Lang::C, "libhold_v2.c"),
        HOLD_H,
    ),
    with_inputs(
        exe("hold", Lang::C, "hold.c", &["libhold.so"]),
        HOLD_PROGRAM,
    ),
    // A thread spinning at the very first bytes of a function (a loop back to its entry).
    with_inputs(
        lib("libspin.so", "libspin.so", Lang::C, "libspin_v1.c"),
        SPIN_H,
    ),
    with_inputs(
        lib("libspin_v2.so", "libspin.so", Lang::C, "libspin_v2.c"),
        SPIN_H,
    ),
    with_inputs(
        exe("spin", Lang::C, "spin.c", &["libspin.so"]),
        SPIN_PROGRAM,
    ),
    with_inputs(
        exe("forker", Lang::C, "forker.c", &["libfoo.so"]),
        FOO_PROGRAM,
    ),
    exe("rust_app", Lang::Rust, "rust_app.rs", &["libfoo.so"]),
    exe("peer_client", Lang::C, "peer_client.c", &[]),
    // A listener that answers anything with a fake success and records what it was sent.
    exe("impostor", Lang::C, "impostor.c", &[]),
    // Bad patches of libfoo.so.
    lib("libbad_undef.so", "libfoo.so", Lang::C, "libbad_undef.c"),
    lib("libbad_data.so", "libfoo.so", Lang::C, "libbad_data.c"),
    lib("libbad_size.so", "libfoo.so", Lang::C, "libbad_size.c"),
    lib("libnothing.so", "libfoo.so", Lang::C, "libnothing.c"),
    Spec {
        ghost: true,
        ..lib("libbad_needed.so", "libfoo.so", Lang::C, "libbad_needed.c")
    },
    // Patches that pass every check of the file but crash whoever loads them, or talk while loading
    // (the probe's cases).
    on_v2("libcrash_ctor.so", "libcrash_ctor.c"),
    on_v2("libabort_ctor.so", "libabort_ctor.c"),
    on_v2("libcrash_dtor.so", "libcrash_dtor.c"),
    on_v2("libnoisy_ctor.so", "libnoisy_ctor.c"),
    // Persistence (issue 11): a program whose first act is a call into libfoo, and a patch that
    // crashes in its constructor only when asked to (at a later start).
    with_inputs(
        exe("firstcall", Lang::C, "firstcall.c", &["libfoo.so"]),
        FOO_COMMANDS,
    ),
    on_v2("libcrash_when_ctor.so", "libcrash_when_ctor.c"),
    // Thread-local state: the same size in v2, grown in libtls_grow (issue 8).
    with_inputs(lib("libtls.so", "libtls.so", Lang::C, "libtls_v1.c"), TLS_H),
    with_inputs(
        lib("libtls_v2.so", "libtls.so", Lang::C, "libtls_v2.c"),
        TLS_H,
    ),
    with_inputs(
        lib("libtls_v3.so", "libtls.so", Lang::C, "libtls_v3.c"),
        TLS_H,
    ),
    with_inputs(
        lib("libtls_grow.so", "libtls.so", Lang::C, "libtls_grow.c"),
        TLS_H,
    ),
    with_inputs(exe("tls", Lang::C, "tls.c", &["libtls.so"]), TLS_PROGRAM),
    // Private (static) state of every kind: v2 changes one function, v3 the layout.
    with_inputs(
        lib("libpriv.so", "libpriv.so", Lang::C, "libpriv.c"),
        PRIV_H,
    ),
    Spec {
        flags: &["-DPRIV_V2"],
        ..with_inputs(
            lib("libpriv_v2.so", "libpriv.so", Lang::C, "libpriv.c"),
            PRIV_H,
        )
    },
    Spec {
        flags: &["-DPRIV_V3"],
        ..with_inputs(
            lib("libpriv_v3.so", "libpriv.so", Lang::C, "libpriv.c"),
            PRIV_H,
        )
    },
    // --changed-only: v4 fixes one function and grows an object only unchanged code uses, v5
    // also changes a function that uses it, and a second build of v1 changes nothing.
    Spec {
        flags: &["-DPRIV_V4"],
        ..with_inputs(
            lib("libpriv_v4.so", "libpriv.so", Lang::C, "libpriv.c"),
            PRIV_H,
        )
    },
    Spec {
        flags: &["-DPRIV_V5"],
        ..with_inputs(
            lib("libpriv_v5.so", "libpriv.so", Lang::C, "libpriv.c"),
            PRIV_H,
        )
    },
    with_inputs(
        lib("libpriv_same.so", "libpriv.so", Lang::C, "libpriv.c"),
        PRIV_H,
    ),
    with_inputs(
        exe("priv", Lang::C, "priv.c", &["libpriv.so"]),
        PRIV_PROGRAM,
    ),
    // 6,000 functions, four builds: switched in turn they outgrow the table of entries
    // rewritten behind an int3.
    lib("libmany.so", "libmany.so", Lang::C, "libmany.c"),
    Spec {
        flags: &["-DMANY_V=2"],
        ..lib("libmany_v2.so", "libmany.so", Lang::C, "libmany.c")
    },
    Spec {
        flags: &["-DMANY_V=3"],
        ..lib("libmany_v3.so", "libmany.so", Lang::C, "libmany.c")
    },
    Spec {
        flags: &["-DMANY_V=4"],
        ..lib("libmany_v4.so", "libmany.so", Lang::C, "libmany.c")
    },
    with_inputs(exe("many", Lang::C, "many.c", &["libmany.so"]), CMDLOOP_H),
    // `try --reset`: v2 pollutes every kind of global state v1 keeps.
    with_inputs(
        lib("libreset.so", "libreset.so", Lang::C, "libreset.c"),
        RESET_H,
    ),
    Spec {
        flags: &["-DRESET_V2"],
        ..with_inputs(
            lib("libreset_v2.so", "libreset.so", Lang::C, "libreset.c"),
            RESET_H,
        )
    },
    with_inputs(
        exe("reset", Lang::C, "reset.c", &["libreset.so"]),
        RESET_PROGRAM,
    ),
    // --changed-only and unnamed read-only data: v2's longer banner literal moves the others.
    with_inputs(lib("libstr.so", "libstr.so", Lang::C, "libstr.c"), STR_H),
    Spec {
        flags: &["-DSTR_V2"],
        ..with_inputs(lib("libstr_v2.so", "libstr.so", Lang::C, "libstr.c"), STR_H)
    },
    with_inputs(exe("str", Lang::C, "str.c", &["libstr.so"]), STR_PROGRAM),
    // `hotctl diff`: a string literal, functions added and removed with a grown array, and a
    // second build of the same source.
    lib("libdiff.so", "libdiff.so", Lang::C, "libdiff.c"),
    Spec {
        flags: &["-DDIFF_STR"],
        ..lib("libdiff_str.so", "libdiff.so", Lang::C, "libdiff.c")
    },
    Spec {
        flags: &["-DDIFF_V2"],
        ..lib("libdiff_v2.so", "libdiff.so", Lang::C, "libdiff.c")
    },
    lib("libdiff_same.so", "libdiff.so", Lang::C, "libdiff.c"),
    // Another user attacking a world-writable folder: the library it plants, and the racer.
    lib("libevil.so", "libfoo.so", Lang::C, "libevil.c"),
    exe("racer", Lang::C, "racer.c", &[]),
    on_v2("libhang_ctor.so", "libhang_ctor.c"),
    // A program that reaps every child (the probe's child included).
    with_inputs(
        exe("reaper", Lang::C, "reaper.c", &["libfoo.so"]),
        FOO_COMMANDS,
    ),
    // Liveness: a program that forks (and forks a lot), a patch whose constructor takes its
    // time, and a patch of libc that cuts every socket call.
    with_inputs(
        exe("lively", Lang::C, "lively.c", &["libfoo.so"]),
        FOO_COMMANDS,
    ),
    on_v2("libfoo_slow.so", "libfoo_slow.c"),
    // The adversary's kinds (tests/it/adversary.rs): a program that closes descriptors it did not
    // open and opens files of its own, a patch whose constructor does the same, a patch of libc's
    // clock.
    with_inputs(
        exe("adversary", Lang::C, "adversary.c", &["libfoo.so"]),
        FOO_COMMANDS,
    ),
    on_v2("libfd_thief.so", "libfd_thief.c"),
    on_v2("libhelper_ctor.so", "libhelper_ctor.c"),
    lib("libc_clock.so", "libc_clock.so", Lang::C, "libc_clock.c"),
    lib("libc_random.so", "libc_random.so", Lang::C, "libc_random.c"),
    lib(
        "libc_lifeline.so",
        "libc_lifeline.so",
        Lang::C,
        "libc_lifeline.c",
    ),
    // The agent's lifeline and aliases: a program whose `wrap_calls` the wrapper patches of libc
    // find (-rdynamic), and the patches.
    Spec {
        flags: &["-rdynamic"],
        ..with_inputs(
            exe("lifeline", Lang::C, "lifeline.c", &["libfoo.so"]),
            FOO_COMMANDS,
        )
    },
    lib(
        "libsigaction_broken.so",
        "libsigaction_broken.so",
        Lang::C,
        "libsigaction_broken.c",
    ),
    lib(
        "libsigaction_wrap.so",
        "libsigaction_wrap.so",
        Lang::C,
        "libsigaction_wrap.c",
    ),
    lib(
        "libmutex_wrap.so",
        "libmutex_wrap.so",
        Lang::C,
        "libmutex_wrap.c",
    ),
    lib(
        "libmmap_alias.so",
        "libmmap_alias.so",
        Lang::C,
        "libmmap_alias.c",
    ),
    // A library whose constructor sleeps: another thread is inside dlopen meanwhile.
    lib(
        "libslow_ctor.so",
        "libslow_ctor.so",
        Lang::C,
        "libslow_ctor.c",
    ),
    // A thread that keeps the loader's module-list lock held (or dlopens a slow library).
    with_inputs(
        exe("busyloader", Lang::C, "busyloader.c", &["libfoo.so"]),
        FOO_PROGRAM,
    ),
    // A target that dies (tests/it/dead_target.rs): a thread of its own calls libfoo all the
    // time, and a patch of libfoo whose foo_version() faults.
    with_inputs(
        exe("deadly", Lang::C, "deadly.c", &["libfoo.so"]),
        FOO_COMMANDS,
    ),
    with_inputs(
        lib("libfoo_segv.so", "libfoo.so", Lang::C, "libfoo_segv.c"),
        FOO_H,
    ),
    on_v2("libkill_ctor.so", "libkill_ctor.c"),
    // A program that drops root privileges (setgroups/setgid/setuid, or setpriv's keep-caps way).
    with_inputs(
        exe("dropper", Lang::C, "dropper.c", &["libfoo.so"]),
        FOO_PROGRAM,
    ),
    // Shadow variables (tests/it/shadow.rs): connection objects, and a patch that adds a count
    // to each without changing their layout.
    with_inputs(
        lib("libshadowy.so", "libshadowy.so", Lang::C, "libshadowy_v1.c"),
        SHADOWY_H,
    ),
    with_inputs(
        lib(
            "libshadowy_v2.so",
            "libshadowy.so",
            Lang::C,
            "libshadowy_v2.c",
        ),
        SHADOWY_PATCH,
    ),
    with_inputs(
        exe("shadowy", Lang::C, "shadowy.c", &["libshadowy.so"]),
        SHADOWY_PROGRAM,
    ),
    // Probation (tests/it/probation.rs): libprob v2 crashes on some inputs, aborts on one, and
    // starts a thread that faults; programs that call it flat out, one with its own SIGSEGV
    // handler.
    with_inputs(
        lib("libprob.so", "libprob.so", Lang::C, "libprob_v1.c"),
        PROB_H,
    ),
    with_inputs(
        lib("libprob_v2.so", "libprob.so", Lang::C, "libprob_v2.c"),
        PROB_H,
    ),
    with_inputs(
        exe("prob_server", Lang::C, "prob_server.c", &["libprob.so"]),
        PROB_PROGRAM,
    ),
    with_inputs(
        exe("prob_ownsegv", Lang::C, "prob_ownsegv.c", &["libprob.so"]),
        PROB_PROGRAM,
    ),
];

fn spec(artifact: &str) -> &'static Spec {
    SPECS
        .iter()
        .find(|s| s.out == artifact)
        .unwrap_or_else(|| panic!("no fixture artifact named {artifact:?}"))
}

/// Artifacts built in every configuration.
pub fn matrix_artifacts() -> Vec<&'static str> {
    SPECS.iter().filter(|s| s.matrix).map(|s| s.out).collect()
}

/// Every artifact (all are built in [`Config::DEFAULT`]).
pub fn all_artifacts() -> Vec<&'static str> {
    SPECS.iter().map(|s| s.out).collect()
}

type Cell = Arc<OnceLock<Result<PathBuf, String>>>;

fn memo() -> &'static Mutex<HashMap<(Config, &'static str), Cell>> {
    static MEMO: OnceLock<Mutex<HashMap<(Config, &'static str), Cell>>> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

/// A file name no other thread or process uses.
fn temp_name(dir: &Path, base: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{base}.tmp.{}.{n}", std::process::id()))
}

fn c_compiler(lang: Lang) -> String {
    let (var, default) = match lang {
        Lang::C => ("CC", "gcc"),
        Lang::Cxx => ("CXX", "g++"),
        Lang::Rust => ("RUSTC", "rustc"),
    };
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// The arguments of the compiler, except the output (`-o` is added by the caller) and the ghost
/// library's folder.
fn args(cfg: Config, spec: &Spec, dir: &Path) -> Vec<String> {
    let src = fixtures_src();
    let mut a: Vec<String> = Vec::new();
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    match spec.lang {
        Lang::Rust => {
            a.extend(["-O", "--edition", "2021", "--crate-type", "bin"].map(String::from));
            a.push("--crate-name".into());
            a.push(spec.out.replace('-', "_"));
            a.push("-L".into());
            a.push(format!("native={}", dir.display()));
            a.push("-C".into());
            a.push(format!("link-arg={rpath}"));
            a.push(src.join(spec.src).display().to_string());
            return a;
        }
        Lang::C | Lang::Cxx => {}
    }
    a.extend(["-O2", "-fno-builtin", "-Wall", "-g"].map(String::from));
    a.extend(cfg.bind_flags().iter().map(|s| s.to_string()));
    match spec.kind {
        Kind::Lib(soname) => {
            a.extend(["-fPIC", "-shared"].map(String::from));
            a.push(format!("-Wl,-soname,{soname}"));
        }
        Kind::Exe => a.extend(cfg.exe_flags().iter().map(|s| s.to_string())),
    }
    if let Some(map) = spec.map {
        a.push(format!("-Wl,--version-script={}", src.join(map).display()));
    }
    a.push(format!("-I{}", src.display()));
    // The patch-author API (include/hotagent.h).
    a.push(format!(
        "-I{}",
        crate::paths::repo_root().join("include").display()
    ));
    a.push(src.join(spec.src).display().to_string());
    a.push(format!("-L{}", dir.display()));
    a.push(rpath);
    a.push("-Wl,--no-as-needed".into());
    for l in spec.links {
        let name = l
            .strip_prefix("lib")
            .and_then(|n| n.strip_suffix(".so"))
            .unwrap_or_else(|| panic!("fixture link {l:?} must be named lib*.so"));
        a.push(format!("-l{name}"));
    }
    if spec.kind == Kind::Exe {
        a.extend(["-ldl", "-lpthread"].map(String::from));
    }
    a.extend(spec.flags.iter().map(|s| s.to_string()));
    a
}

fn run(tool: &str, args: &[String]) -> Result<(), String> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{tool} {}\nexited with {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn stamp_path(artifact: &Path) -> PathBuf {
    let mut name = artifact.file_name().unwrap_or_default().to_os_string();
    name.push(".stamp");
    artifact.with_file_name(name)
}

fn build(cfg: Config, spec: &'static Spec) -> Result<PathBuf, String> {
    // Dependencies first (each through its own once-cell).
    let mut hasher = DefaultHasher::new();
    for dep in spec.links {
        let dep_path = cfg.path(dep);
        std::fs::read_to_string(stamp_path(&dep_path))
            .unwrap_or_default()
            .hash(&mut hasher);
    }
    let dir = cfg.dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let out = dir.join(spec.out);
    let tool = c_compiler(spec.lang);
    let args = args(cfg, spec, &dir);

    tool.hash(&mut hasher);
    args.hash(&mut hasher);
    spec.ghost.hash(&mut hasher);
    let src = fixtures_src();
    let inputs = std::iter::once(spec.src)
        .chain(spec.inputs.iter().copied())
        .chain(spec.map)
        .chain(spec.ghost.then_some("libghost.c"));
    for input in inputs {
        let path = src.join(input);
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        bytes.hash(&mut hasher);
    }
    let stamp = format!("{:016x}\n", hasher.finish());
    let stamp_file = stamp_path(&out);
    if out.is_file() && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(&stamp) {
        return Ok(out);
    }

    let tmp = temp_name(&dir, spec.out);
    let mut full = args;
    // The ghost library lives in a temporary folder that is gone once the artifact is linked.
    let ghost_dir = if spec.ghost {
        let g = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let ghost = g.path().join("libghost.so");
        let gargs: Vec<String> = vec![
            "-O2".into(),
            "-fPIC".into(),
            "-shared".into(),
            "-Wl,-soname,libghost.so".into(),
            "-o".into(),
            ghost.display().to_string(),
            src.join("libghost.c").display().to_string(),
        ];
        run(&c_compiler(Lang::C), &gargs)?;
        full.push(format!("-L{}", g.path().display()));
        full.push("-lghost".into());
        Some(g)
    } else {
        None
    };
    full.push("-o".into());
    full.push(tmp.display().to_string());
    let result = run(&tool, &full);
    drop(ghost_dir);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &out).map_err(|e| format!("rename to {}: {e}", out.display()))?;
    let stamp_tmp = temp_name(&dir, "stamp");
    std::fs::write(&stamp_tmp, &stamp).map_err(|e| format!("write stamp: {e}"))?;
    std::fs::rename(&stamp_tmp, &stamp_file).map_err(|e| format!("rename stamp: {e}"))?;
    Ok(out)
}
