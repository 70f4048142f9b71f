//! The memory abstraction the reader works over.

/// Readable memory addressed by absolute addresses.
pub trait Memory {
    /// The readable bytes from `addr` to the end of the contiguous readable range holding it.
    fn tail(&self, addr: u64) -> Option<&[u8]>;

    fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        self.tail(addr)?.get(..len)
    }
    fn u8(&self, addr: u64) -> Option<u8> {
        self.tail(addr)?.first().copied()
    }
    fn u16(&self, addr: u64) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes(addr, 2)?.try_into().ok()?))
    }
    fn u32(&self, addr: u64) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(addr, 4)?.try_into().ok()?))
    }
    fn u64(&self, addr: u64) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(addr, 8)?.try_into().ok()?))
    }
    /// A pointer-sized slot that other threads may be writing (a GOT entry the lazy-binding
    /// resolver fills): the live memory reads it with one atomic load.
    fn slot(&self, addr: u64) -> Option<u64> {
        self.u64(addr)
    }
    /// A NUL-terminated string, without its NUL.
    fn cstr(&self, addr: u64) -> Option<&[u8]> {
        let t = self.tail(addr)?;
        let end = t.iter().position(|&b| b == 0)?;
        Some(&t[..end])
    }
}

/// A byte buffer standing at `base`: for tests and fuzzing.
pub struct SliceMemory<'a> {
    pub base: u64,
    pub bytes: &'a [u8],
}

impl Memory for SliceMemory<'_> {
    fn tail(&self, addr: u64) -> Option<&[u8]> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        self.bytes.get(off..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let m = SliceMemory {
            base: 0x1000,
            bytes: b"ab\0cdefghij",
        };
        assert_eq!(m.cstr(0x1000), Some(&b"ab"[..]));
        assert_eq!(m.u8(0x0fff), None);
        assert_eq!(m.u64(0x1004), None);
        assert_eq!(m.u64(0x1003), Some(u64::from_le_bytes(*b"cdefghij")));
        assert_eq!(m.cstr(0x1004), None, "no NUL before the end");
        assert_eq!(m.tail(u64::MAX), None);
    }
}
