//! What a vtable symbol must look like for its objects to be converted: a primary vtable of a
//! class with single, non-virtual inheritance, `[offset-to-top = 0, typeinfo, method...]`.

use super::ConvertError;
use crate::sys::object;

/// A `_ZTV…` symbol in memory: where it is and its size from the symbol table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vtable {
    pub name: String,
    pub addr: u64,
    pub size: u64,
}

impl Vtable {
    /// What objects of the class carry as their first word: the address past the two header
    /// words.
    pub fn vptr(&self) -> u64 {
        self.addr + 16
    }
}

/// A vtable that passed the checks: its two header words and its method slots as they are now.
#[derive(Debug, Clone)]
pub struct Checked {
    pub header: [u64; 2],
    pub methods: Vec<u64>,
}

/// Reads the symbol (through the kernel: an unmapped address is an error, not a fault) and
/// checks it.
pub fn read(vt: &Vtable, is_code: &dyn Fn(u64) -> bool) -> Result<Checked, ConvertError> {
    let n = words_in(vt)?;
    let words = object::read_words(vt.addr, n).ok_or_else(|| ConvertError::Unreadable {
        symbol: vt.name.clone(),
        addr: vt.addr,
        size: vt.size,
    })?;
    check(&vt.name, &words, is_code)
}

fn words_in(vt: &Vtable) -> Result<usize, ConvertError> {
    let bad = || ConvertError::BadSize {
        symbol: vt.name.clone(),
        size: vt.size,
    };
    // A vtable of more than a million methods is a wrong size, not a class.
    if !vt.size.is_multiple_of(8) || vt.size < 24 || vt.size > 8 << 20 || !vt.addr.is_multiple_of(8)
    {
        return Err(bad());
    }
    Ok((vt.size / 8) as usize)
}

/// Checks the words of a vtable symbol.
pub fn check(
    symbol: &str,
    words: &[u64],
    is_code: &dyn Fn(u64) -> bool,
) -> Result<Checked, ConvertError> {
    if words.len() < 3 {
        return Err(ConvertError::BadSize {
            symbol: symbol.to_string(),
            size: words.len() as u64 * 8,
        });
    }
    if words[0] != 0 {
        return Err(ConvertError::NotPrimary {
            symbol: symbol.to_string(),
            value: words[0],
        });
    }
    for (k, &w) in words.iter().enumerate().skip(2) {
        if is_code(w) {
            continue;
        }
        // A secondary vtable starts with its offset-to-top (minus the base's offset in the
        // object) or, for virtual bases, with vcall/vbase offsets: small numbers, not addresses.
        let small = (w as i64) > -(1 << 31) && (w as i64) < (1 << 31);
        return Err(if small {
            ConvertError::Secondary {
                symbol: symbol.to_string(),
                offset: k as u64 * 8,
            }
        } else {
            ConvertError::NotCode {
                symbol: symbol.to_string(),
                slot: k - 2,
                value: w,
            }
        });
    }
    Ok(Checked {
        header: [words[0], words[1]],
        methods: words[2..].to_vec(),
    })
}
