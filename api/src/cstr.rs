//! NUL-terminated copies of Rust strings on the stack: `hotagent_migrate` and
//! `hotagent_unmigrate` run with the other threads parked, where one of them may hold the malloc
//! lock, so turning a `&str` into a C string must not allocate.

use std::ffi::{c_char, CStr};
use std::fmt;

/// A NUL-terminated string of at most `N - 1` bytes, built without allocating.
pub(crate) struct StackStr<const N: usize> {
    buf: [u8; N],
    len: usize,
    truncated: bool,
}

impl<const N: usize> StackStr<N> {
    pub(crate) const fn new() -> Self {
        StackStr {
            buf: [0; N],
            len: 0,
            truncated: false,
        }
    }

    /// `s` as a C string, or `None` when it does not fit or holds a NUL (a symbol name that
    /// cannot be what was meant: looking up a shortened name could find another symbol).
    pub(crate) fn exact(s: &str) -> Option<Self> {
        let mut out = Self::new();
        if s.len() >= N || s.bytes().any(|b| b == 0) {
            return None;
        }
        out.buf[..s.len()].copy_from_slice(s.as_bytes());
        out.len = s.len();
        Some(out)
    }

    /// Whether text was dropped because it did not fit.
    #[cfg(test)]
    pub(crate) fn truncated(&self) -> bool {
        self.truncated
    }

    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        // Only whole characters are ever copied in.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    pub(crate) fn as_ptr(&self) -> *const c_char {
        self.as_cstr().as_ptr()
    }

    pub(crate) fn as_cstr(&self) -> &CStr {
        // The byte after the text is always a NUL (the buffer starts zeroed and `len < N`).
        CStr::from_bytes_until_nul(&self.buf).unwrap_or_default()
    }
}

/// Messages: text that does not fit is cut at a character boundary; a NUL (which would end the C
/// string early) becomes `?`.
impl<const N: usize> fmt::Write for StackStr<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let c = if c == '\0' { '?' } else { c };
            let mut tmp = [0u8; 4];
            let bytes = c.encode_utf8(&mut tmp).as_bytes();
            if self.len + bytes.len() >= N {
                self.truncated = true;
                return Ok(());
            }
            self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write;

    #[test]
    fn messages_are_cut_at_a_character_boundary_and_stay_terminated() {
        let mut s = StackStr::<8>::new();
        write!(s, "abcdé€xyz").unwrap();
        // 7 bytes of room: "abcdé" is 6, "€" (3 bytes) does not fit.
        assert_eq!(s.as_str(), "abcdé");
        assert!(s.truncated());
        assert_eq!(s.as_cstr().to_bytes(), "abcdé".as_bytes());
    }

    #[test]
    fn a_nul_in_a_message_does_not_end_it_early() {
        let mut s = StackStr::<32>::new();
        write!(s, "a\0b {}", 7).unwrap();
        assert_eq!(s.as_cstr().to_str(), Ok("a?b 7"));
        assert!(!s.truncated());
    }

    #[test]
    fn names_are_exact_or_refused() {
        assert_eq!(
            StackStr::<16>::exact("counter").unwrap().as_cstr().to_str(),
            Ok("counter")
        );
        assert!(
            StackStr::<8>::exact("12345678").is_none(),
            "no room for NUL"
        );
        assert!(StackStr::<16>::exact("a\0b").is_none());
        assert_eq!(StackStr::<8>::exact("").unwrap().as_cstr().to_bytes(), b"");
    }
}
