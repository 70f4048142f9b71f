//! Checking a patch file on disk before anything is loaded: a file the loader would choke on (or
//! crash on: a corrupted ELF can make `dlopen` itself fault) is refused here with a clear reason.

use super::error::{IoErrno, ReloadError};
use super::guard::{self, inside};
use super::parsed::Parsed;
use crate::image::SymKind;
use crate::sys::sealed::{Mapping, Sealed};
use goblin::elf::{dynamic, header, program_header as ph, Elf};

/// An exported definition of the patch file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchSymbol {
    pub name: String,
    pub version: Option<String>,
    pub kind: SymKind,
    pub size: u64,
    /// A variable the program may write (not read-only data).
    pub mutable: bool,
    /// False for a hidden version (`name@VER`): only a lookup naming that version finds it.
    pub default_version: bool,
}

/// A symbol the patch file needs from elsewhere (an undefined dynamic symbol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchImport {
    pub name: String,
    /// The version it asks for (`name@VERSION`), when it asks for one.
    pub version: Option<String>,
}

/// What the checks learnt about the patch file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchFile {
    pub soname: Option<String>,
    pub file_name: String,
    pub symbols: Vec<PatchSymbol>,
    /// What it calls or reads elsewhere: a wrapper's call to an alias of what it replaces
    /// shows here.
    pub imports: Vec<PatchImport>,
    /// Its run path names `$ORIGIN`, which names `/proc/self/fd` for the copy the agent loads.
    pub origin_in_run_path: bool,
    /// It has a symbol version table (`.gnu.version`): lookups follow its versions.
    pub versioned: bool,
}

impl PatchFile {
    /// Whether it exports a function named `name` (a hook, say).
    pub fn exports_function(&self, name: &str) -> bool {
        self.symbols
            .iter()
            .any(|s| s.name == name && s.kind.is_code())
    }
}

/// The machine this agent was built for.
#[cfg(target_arch = "x86_64")]
const OUR_MACHINE: u16 = header::EM_X86_64;
#[cfg(target_arch = "aarch64")]
const OUR_MACHINE: u16 = header::EM_AARCH64;

/// Section index of absolute symbols.
const SHN_ABS: usize = 0xfff1;

/// Maps the sealed copy of `path` read-only for the checks (unmapped when dropped): the bytes
/// checked are the bytes `dlopen` will load, and none passes through the heap.
pub fn map_staged<'s>(path: &str, copy: &'s Sealed) -> Result<Mapping<'s>, ReloadError> {
    copy.map().map_err(|e| ReloadError::CopyUnmappable {
        path: path.to_string(),
        purpose: " to check it",
        cause: IoErrno(e),
    })
}

/// Checks the bytes of a patch file named `path` (the name only appears in messages).
pub fn check_bytes(path: &str, bytes: &[u8]) -> Result<PatchFile, ReloadError> {
    check_parsed(path, bytes).map(|(patch, _)| patch)
}

/// Checks the bytes of a patch file and hands back their parse with what the checks learnt,
/// for the reload's other checks to read without parsing them again.
pub fn check_parsed<'a>(
    path: &str,
    bytes: &'a [u8],
) -> Result<(PatchFile, Parsed<'a>), ReloadError> {
    let bad = |problem: String| ReloadError::Malformed {
        path: path.into(),
        problem,
    };
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        let head: String = bytes
            .iter()
            .take(16)
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        return Err(bad(format!("not an ELF file (it starts with \"{head}\")")));
    }
    match bytes.get(4) {
        Some(2) => {}
        Some(1) => return Err(bad("a 32-bit ELF file; this process is 64-bit".to_string())),
        _ => return Err(bad("corrupted ELF header (bad class byte)".to_string())),
    }
    if bytes.get(5) != Some(&1) {
        return Err(bad(
            "a big-endian ELF file; this machine is little-endian".to_string()
        ));
    }
    let hdr = Elf::parse_header(bytes)
        .map_err(|e| bad(format!("truncated or corrupted ELF header: {e}")))?;
    if hdr.e_machine != OUR_MACHINE {
        return Err(bad(format!(
            "an ELF file for {} (e_machine {}); this process runs on {}",
            header::machine_to_str(hdr.e_machine),
            hdr.e_machine,
            header::machine_to_str(OUR_MACHINE)
        )));
    }
    match hdr.e_type {
        header::ET_DYN => {}
        header::ET_EXEC => {
            return Err(bad(
                "an executable (ET_EXEC), not a shared library".to_string()
            ))
        }
        header::ET_REL => {
            return Err(bad(
                "an object file (ET_REL): link it with -shared first".to_string()
            ))
        }
        t => return Err(bad(format!("not a shared library (ELF type {t})"))),
    }
    let parsed =
        Parsed::parse(bytes).map_err(|e| bad(format!("truncated or corrupted ELF: {e}")))?;
    let elf = parsed.elf();
    let dynamic = elf
        .dynamic
        .as_ref()
        .ok_or_else(|| bad("no dynamic section: not a shared library".to_string()))?;
    if dynamic.info.flags_1 & dynamic::DF_1_PIE != 0 {
        return Err(bad(
            "a position-independent executable, not a shared library".to_string(),
        ));
    }
    guard::check_structure(elf, bytes).map_err(|cause| ReloadError::Corrupted {
        path: path.to_string(),
        cause,
    })?;
    let symbols = exported_symbols(elf);
    let file_name = crate::image::file_name(path).to_string();
    let patch = PatchFile {
        soname: elf.soname.map(str::to_string),
        file_name,
        symbols,
        imports: imported_symbols(elf),
        origin_in_run_path: elf
            .runpaths
            .iter()
            .chain(&elf.rpaths)
            .any(|p| p.contains("$ORIGIN") || p.contains("${ORIGIN}")),
        versioned: elf.versym.is_some(),
    };
    Ok((patch, parsed))
}

fn exported_symbols(elf: &Elf<'_>) -> Vec<PatchSymbol> {
    let loads: Vec<_> = elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == ph::PT_LOAD)
        .collect();
    let relro: Vec<_> = elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == ph::PT_GNU_RELRO)
        .collect();
    let versions = defined_versions(elf);
    let mut out = Vec::new();
    for (i, sym) in elf.dynsyms.iter().enumerate() {
        use goblin::elf::sym;
        let visible = matches!(sym.st_visibility(), sym::STV_DEFAULT | sym::STV_PROTECTED);
        let global = matches!(
            sym.st_bind(),
            sym::STB_GLOBAL | sym::STB_WEAK | sym::STB_GNU_UNIQUE
        );
        let Some(kind) = SymKind::from_type(sym.st_type()) else {
            continue;
        };
        // SHN_ABS symbols are version nodes (VER_1 ...) or constants, never code or storage.
        if sym.st_shndx == 0 || sym.st_shndx == SHN_ABS || !visible || !global {
            continue;
        }
        let Some(name) = elf.dynstrtab.get_at(sym.st_name).filter(|n| !n.is_empty()) else {
            continue;
        };
        let versym = elf.versym.as_ref().and_then(|vs| vs.get_at(i));
        // Index 0 (local) and 1 (VER_NDX_GLOBAL) mean no version; neither does an index whose
        // definition is missing or is the base one (which names the file, not a version).
        let version = versym
            .as_ref()
            .and_then(|v| versions.get(&v.version()).cloned());
        // Hidden: the bit on a real version (index 2 and up); on index 0 or 1 the loader ignores it.
        let default_version = !versym
            .as_ref()
            .is_some_and(|v| v.is_hidden() && v.version() > 1);
        let in_writable = loads
            .iter()
            .any(|l| l.p_flags & ph::PF_W != 0 && inside(l, sym.st_value, 1));
        let in_relro = relro.iter().any(|r| inside(r, sym.st_value, 1));
        out.push(PatchSymbol {
            name: name.to_string(),
            version,
            kind,
            size: sym.st_size,
            // A thread-local variable is per-thread state, wherever its initial image lies.
            mutable: kind == SymKind::ThreadLocal || (in_writable && !in_relro),
            default_version,
        });
    }
    out
}

/// The names of the file's own versions by index. The base definition (`VER_FLG_BASE`, index 1)
/// names the file itself: the loader never matches a version against it (`dlvsym(h, name,
/// soname)` fails), so a symbol carrying index 1 is unversioned.
fn defined_versions(elf: &Elf<'_>) -> std::collections::HashMap<u16, String> {
    use goblin::elf::symver::{VERSYM_VERSION, VER_FLG_BASE};
    let mut versions = std::collections::HashMap::new();
    if let Some(verdef) = &elf.verdef {
        for vd in verdef.iter() {
            let ndx = vd.vd_ndx & VERSYM_VERSION;
            if vd.vd_flags & VER_FLG_BASE != 0 || ndx <= 1 {
                continue;
            }
            if let Some(aux) = vd.iter().next() {
                if let Some(name) = elf.dynstrtab.get_at(aux.vda_name) {
                    versions.insert(ndx, name.to_string());
                }
            }
        }
    }
    versions
}

/// The patch's undefined dynamic symbols, with the version each asks for (from `.gnu.version_r`).
fn imported_symbols(elf: &Elf<'_>) -> Vec<PatchImport> {
    use goblin::elf::sym;
    let mut needed = std::collections::HashMap::new();
    if let Some(verneed) = &elf.verneed {
        for need in verneed.iter() {
            for aux in need.iter() {
                if let Some(name) = elf.dynstrtab.get_at(aux.vna_name) {
                    needed.insert(aux.vna_other, name.to_string());
                }
            }
        }
    }
    let mut out = Vec::new();
    for (i, s) in elf.dynsyms.iter().enumerate() {
        if s.st_shndx != 0 || !matches!(s.st_bind(), sym::STB_GLOBAL | sym::STB_WEAK) {
            continue;
        }
        let Some(name) = elf.dynstrtab.get_at(s.st_name).filter(|n| !n.is_empty()) else {
            continue;
        };
        let version = elf
            .versym
            .as_ref()
            .and_then(|vs| vs.get_at(i))
            .and_then(|v| needed.get(&v.version()).cloned());
        out.push(PatchImport {
            name: name.to_string(),
            version,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::guard::StructureError;
    use super::*;

    fn libc_bytes() -> Vec<u8> {
        std::fs::read("/lib/x86_64-linux-gnu/libc.so.6")
            .or_else(|_| std::fs::read("/lib64/libc.so.6"))
            .unwrap()
    }

    fn err(bytes: &[u8]) -> String {
        check_bytes("p.so", bytes).unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_real_library() {
        let f = check_bytes("libc.so.6", &libc_bytes()).unwrap();
        assert_eq!(f.soname.as_deref(), Some("libc.so.6"));
        let abs = f.symbols.iter().find(|s| s.name == "abs").unwrap();
        assert_eq!(
            (abs.kind, abs.version.as_deref()),
            (SymKind::Function, Some("GLIBC_2.2.5"))
        );
        let environ = f.symbols.iter().find(|s| s.name == "environ").unwrap();
        assert!(environ.mutable);
        // libc needs a few things from the loader, versioned.
        let tls = f
            .imports
            .iter()
            .find(|i| i.name == "__tls_get_addr")
            .unwrap();
        assert_eq!(tls.version.as_deref(), Some("GLIBC_2.3"));
        assert!(!f.imports.iter().any(|i| i.name == "abs"));
    }

    /// Regression: the base version (index 1, which names the file) was read as a version, so
    /// zlib's inflateEnd came out as `inflateEnd@libz.so.1`, which no lookup finds.
    #[test]
    fn the_base_version_is_no_version() {
        let Ok(bytes) = std::fs::read("/lib/x86_64-linux-gnu/libz.so.1") else {
            return; // zlib1g is part of every Debian system; .ci/run installs its headers too.
        };
        let f = check_bytes("libz.so.1", &bytes).unwrap();
        let version = |n: &str| {
            let s = f.symbols.iter().find(|s| s.name == n).unwrap();
            (s.version.as_deref(), s.default_version)
        };
        assert_eq!(version("inflateEnd"), (None, true));
        assert_eq!(version("crc32_z"), (Some("ZLIB_1.2.9"), true));
        assert!(!f
            .symbols
            .iter()
            .any(|s| s.version.as_deref() == Some("libz.so.1")));
        // The same rule answers the reload's lookups.
        assert!(crate::reload::lookup::finds(&f, "inflateEnd", None));
        assert!(!crate::reload::lookup::finds(
            &f,
            "inflateEnd",
            Some("libz.so.1")
        ));
    }

    #[test]
    fn names_what_is_wrong() {
        assert!(err(b"hello world\n").contains("not an ELF file (it starts with \"hello world.\")"));
        let mut b = libc_bytes();
        b[4] = 1;
        assert!(err(&b).contains("32-bit"));
        let mut b = libc_bytes();
        b[18] = 183; // EM_AARCH64
        assert!(err(&b).contains("e_machine 183"), "{}", err(&b));
        let mut b = libc_bytes();
        b[16] = 2; // ET_EXEC
        assert!(err(&b).contains("an executable"));
        let b = libc_bytes();
        assert!(
            err(&b[..b.len() / 2]).contains("truncated"),
            "{}",
            err(&b[..b.len() / 2])
        );
    }

    /// A structural refusal is typed: the cause says which check refused (the JSON code stays
    /// bad_elf and the message is unchanged), where it used to be a bare string.
    #[test]
    fn structural_refusal_names_its_check() {
        let mut b = libc_bytes();
        let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let phoff = word(&b, 32) as usize;
        let load = (0..)
            .map(|i| phoff + i * 56)
            .find(|&at| b[at..at + 4] == 1u32.to_le_bytes())
            .unwrap();
        let memsz = word(&b, load + 40);
        b[load + 32..load + 40].copy_from_slice(&(memsz + 8).to_le_bytes());
        let e = check_bytes("p.so", &b).unwrap_err();
        assert_eq!(e.code(), hotagent_protocol::ErrorCode::BadElf);
        assert!(e.to_string().starts_with("p.so: "), "{e}");
        match &e {
            ReloadError::Corrupted {
                path,
                cause: StructureError::Segments(why),
            } => {
                assert_eq!(path, "p.so");
                let source = std::error::Error::source(&e).map(|s| s.to_string());
                assert_eq!(source.as_deref(), Some(why.as_str()));
            }
            other => panic!("not a typed structural refusal: {other:?}"),
        }
    }
}
