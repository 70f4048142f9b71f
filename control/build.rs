//! Links the unwinder into hotctl instead of depending on libgcc_s.so.1 (as agent/build.rs does
//! for the agent): one library fewer for the loader to open, map and relocate, and no
//! `__cpu_indicator_init` constructor (whose `cpuid`s trap in a virtual machine) on every run.
//! `hotctl reload` is one short process whose start-up is part of the reload's wall time.
//!
//! Rust's std asks for `-lgcc_s` on linux-gnu; this folder, searched first, holds a
//! `libgcc_s.so` that is a linker script naming the static `libgcc_eh.a`.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = out.join("static-unwinder");
    std::fs::create_dir_all(&dir).expect("create the linker-script folder");
    std::fs::write(dir.join("libgcc_s.so"), "INPUT(-lgcc_eh)\n").expect("write the linker script");
    // ld applies every -L to every -l, wherever it stands on the command line.
    println!("cargo:rustc-link-arg-bins=-L{}", dir.display());
    println!("cargo:rerun-if-changed=build.rs");
}
