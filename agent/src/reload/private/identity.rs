//! Proving that the file on disk is the build that is mapped: its layout is only evidence about
//! the running copy if it *is* the running copy.

use crate::image::Memory;

const PT_NOTE: u32 = 4;
const NT_GNU_BUILD_ID: u32 = 3;

/// What the running module says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveIdentity {
    pub build_id: Option<Vec<u8>>,
    /// The address of its first mapped page, to find its mapping in `/proc/self/maps`.
    pub first_page: u64,
}

/// Reads the GNU build-id from the module's `PT_NOTE` segments in memory.
pub fn live_build_id(
    mem: &impl Memory,
    base: u64,
    phdrs: impl IntoIterator<Item = (u32, u64, u64)>,
) -> Option<Vec<u8>> {
    for (p_type, vaddr, memsz) in phdrs {
        if p_type != PT_NOTE {
            continue;
        }
        let bytes = mem.tail(base.wrapping_add(vaddr))?;
        let bytes = bytes.get(..usize::try_from(memsz).ok()?)?;
        if let Some(id) = build_id_in_notes(bytes) {
            return Some(id);
        }
    }
    None
}

/// The build-id in a run of ELF notes (4-byte aligned, as in shared objects).
pub fn build_id_in_notes(mut b: &[u8]) -> Option<Vec<u8>> {
    let word = |b: &[u8], i: usize| -> Option<usize> {
        Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    let pad = |n: usize| n.checked_add(3).map(|x| x & !3);
    while b.len() >= 12 {
        let (namesz, descsz, kind) = (word(b, 0)?, word(b, 4)?, word(b, 8)?);
        let name_end = 12usize.checked_add(pad(namesz)?)?;
        let desc_end = name_end.checked_add(descsz)?;
        let name = b.get(12..12 + namesz)?;
        if kind as u32 == NT_GNU_BUILD_ID && name == b"GNU\0" {
            return b.get(name_end..desc_end).map(<[u8]>::to_vec);
        }
        b = b.get(name_end.checked_add(pad(descsz)?)?..)?;
    }
    None
}

/// Why the file on disk cannot be proven to be the module that is mapped.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path} on disk is not the build that is loaded (build-id {file}, loaded {loaded}): it was replaced since the program started")]
    OtherBuild {
        path: String,
        file: String,
        loaded: String,
    },
    #[error("{path} on disk is not the build that is loaded (one has a build-id, the other not)")]
    OneBuildId { path: String },
    #[error("cannot stat {path}: {source}")]
    Stat {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read /proc/self/maps: {0}")]
    Maps(#[source] std::io::Error),
    #[error("no mapping of {path} starts at {first_page:#x}")]
    NotMapped { path: String, first_page: u64 },
    #[error("{path} on disk is not the file that is mapped (no build-id to compare; device and inode differ): it was replaced since the program started")]
    OtherFile { path: String },
}

/// Checks that `path` (whose bytes are `file_build_id`'s) is what is mapped; the error says why
/// it cannot be proven.
pub fn prove(
    path: &str,
    live: &LiveIdentity,
    file_build_id: Option<&[u8]>,
) -> Result<(), IdentityError> {
    match (&live.build_id, file_build_id) {
        (Some(l), Some(f)) if l.as_slice() == f => Ok(()),
        (Some(l), Some(f)) => Err(IdentityError::OtherBuild {
            path: path.to_string(),
            file: hex(f),
            loaded: hex(l),
        }),
        (Some(_), None) | (None, Some(_)) => Err(IdentityError::OneBuildId {
            path: path.to_string(),
        }),
        (None, None) => same_inode(path, live.first_page),
    }
}

/// Without build-ids: the file's device and inode must be those of the module's mapping.
fn same_inode(path: &str, first_page: u64) -> Result<(), IdentityError> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).map_err(|source| IdentityError::Stat {
        path: path.to_string(),
        source,
    })?;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(IdentityError::Maps)?;
    let want = format!("{first_page:x}-");
    let line =
        maps.lines()
            .find(|l| l.starts_with(&want))
            .ok_or_else(|| IdentityError::NotMapped {
                path: path.to_string(),
                first_page,
            })?;
    let mut f = line.split_whitespace().skip(3);
    let (dev, ino) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
    let (maj, min) = dev.split_once(':').unwrap_or(("", ""));
    let parse = |s: &str| u64::from_str_radix(s, 16).ok();
    let mapped = (parse(maj), parse(min), ino.parse::<u64>().ok());
    let file = (
        Some(u64::from(libc::major(md.dev()))),
        Some(u64::from(libc::minor(md.dev()))),
        Some(md.ino()),
    );
    if mapped == file {
        Ok(())
    } else {
        Err(IdentityError::OtherFile {
            path: path.to_string(),
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_build_id_note() {
        let mut n = Vec::new();
        for w in [4u32, 3, NT_GNU_BUILD_ID] {
            n.extend_from_slice(&w.to_le_bytes());
        }
        n.extend_from_slice(b"GNU\0\xaa\xbb\xcc\0");
        let mut other = Vec::new();
        for w in [4u32, 4, 1] {
            other.extend_from_slice(&w.to_le_bytes());
        }
        other.extend_from_slice(b"GNU\0\x01\x02\x03\x04");
        other.extend_from_slice(&n);
        assert_eq!(build_id_in_notes(&other), Some(vec![0xaa, 0xbb, 0xcc]));
        assert_eq!(build_id_in_notes(&other[..20]), None);
    }

    #[test]
    fn a_different_build_is_named() {
        let live = LiveIdentity {
            build_id: Some(vec![1, 2]),
            first_page: 0,
        };
        assert!(prove("x.so", &live, Some(&[1, 2])).is_ok());
        let e = prove("x.so", &live, Some(&[1, 3])).unwrap_err();
        assert!(matches!(e, IdentityError::OtherBuild { .. }), "{e:?}");
        assert!(e.to_string().contains("build-id 0103, loaded 0102"), "{e}");
        let none = LiveIdentity {
            build_id: None,
            first_page: 0,
        };
        let e = prove("/nonexistent/x.so", &none, None).unwrap_err();
        assert!(matches!(e, IdentityError::Stat { .. }), "{e:?}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
