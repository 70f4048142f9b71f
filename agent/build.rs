//! Links the unwinder into libhotagent.so instead of depending on libgcc_s.so.1.
//!
//! Rust's std asks for `-lgcc_s` on linux-gnu, and a shared library that needs libgcc_s makes
//! the loader open, map and relocate it in every process the agent is preloaded into, and run
//! its constructor (`__cpu_indicator_init`, whose `cpuid`s trap in a virtual machine): about a
//! third of the agent's start-up cost before its own constructor runs. Stable Rust has no switch
//! for a static unwinder in a cdylib, so the cdylib's link alone gets a folder searched first
//! whose `libgcc_s.so` is a linker script naming the static `libgcc_eh.a`. The unwinder's
//! symbols stay local: rustc's version script exports only `hotagent_*`.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = out.join("static-unwinder");
    std::fs::create_dir_all(&dir).expect("create the linker-script folder");
    std::fs::write(dir.join("libgcc_s.so"), "INPUT(-lgcc_eh)\n").expect("write the linker script");
    // ld applies every -L to every -l, wherever it stands on the command line.
    println!("cargo:rustc-cdylib-link-arg=-L{}", dir.display());
    println!("cargo:rerun-if-changed=build.rs");
}
