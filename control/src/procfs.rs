//! Reading a `/proc` file whole. Such files report a size of 0, so `fs::read_to_string` starts
//! from a 32-byte probe and doubles: a `stat` and eight reads for a 1.4 KB `status`, three times
//! per request (find, check the folder, check the peer). A buffer of a page takes the usual file
//! in one read and one more that sees its end.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

const PAGE: usize = 4096;

/// The whole file as bytes.
pub fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(PAGE);
    File::open(path)?.read_to_end(&mut buf)?;
    Ok(buf)
}

/// The whole file as text (an error if it is not UTF-8).
pub fn read_to_string(path: impl AsRef<Path>) -> io::Result<String> {
    let mut text = String::with_capacity(PAGE);
    File::open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_proc_file_longer_than_a_page_whole() {
        // /proc/self/maps of a test binary runs past 4 KiB: the buffer must grow, not cut it.
        let maps = read_to_string("/proc/self/maps").unwrap();
        assert_eq!(maps, std::fs::read_to_string("/proc/self/maps").unwrap());
        assert!(maps.ends_with('\n'));
        let status = read(format!("/proc/{}/status", std::process::id())).unwrap();
        assert!(status.starts_with(b"Name:\t"));
        assert!(read("/proc/0/status").is_err());
    }
}
