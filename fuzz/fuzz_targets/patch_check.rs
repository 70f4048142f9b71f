//! The patch-file checks over arbitrary bytes: everything the agent reads from a patch file
//! before `dlopen` sees it. Any input must give a verdict, never a panic or a hang.
#![no_main]

use hotagent::reload::check_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match check_bytes("/fuzz/libfuzz.so", data) {
        Ok(file) => {
            assert_eq!(file.file_name, "libfuzz.so");
            assert!(file.symbols.iter().all(|s| !s.name.is_empty()));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
