//! The patch carries the soname of the library it replaces, so `hotctl reload` finds the module
//! to replace by itself (no `--replace libcounter.so`).
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcounter.so");
}
