//! Selecting what a reload switches: the replaced module's exports that the patch also exports.

use super::check::{PatchFile, PatchSymbol};
use super::error::ReloadError;
use crate::image::{Export, SymKind};

/// Symbols the agent itself cannot live without: switching them would pull the floor from under
/// the agent (and under every allocation the target already made). Their aliases (`__libc_malloc`,
/// `__mmap`, `mmap64` ...) share their code, so a symbol at the same address is refused too
/// (`alias.rs`). The reload and rollback writes themselves make raw system calls (`sys::raw`),
/// so `mprotect`, `open`, `sigaction` or `clock_gettime` no longer carry them; what remains is
/// what Rust's standard library and the loader call: the allocator, the loader's interface,
/// `syscall` (std's futex: every lock the agent takes), `__errno_location` (every error std
/// reads), thread creation (each client's connection is a thread).
pub(super) const NEVER_REPLACED: &[&str] = &[
    "malloc",
    "free",
    "calloc",
    "realloc",
    "reallocarray",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "malloc_usable_size",
    "dlopen",
    "dlmopen",
    "dlclose",
    "dlsym",
    "dlvsym",
    "dlerror",
    "dladdr",
    "dladdr1",
    "dlinfo",
    "dl_iterate_phdr",
    "mprotect",
    "mmap",
    "munmap",
    "mremap",
    "brk",
    "sbrk",
    "pthread_atfork",
    "syscall",
    "__errno_location",
    "pthread_create",
    "clone",
    "clone3",
    // Rust's standard library reads the clock (`Instant`, and the log's timestamps, even in the
    // panic hook: a failing clock there aborts the process) and seeds every `HashMap` from
    // `getrandom`.
    "clock_gettime",
    "getrandom",
];

/// The prefix of the agent's own exports: a patch carrying one is a build of the agent, whose
/// constructor would start a second agent in the process, on the same socket.
const AGENT_PREFIX: &str = "hotagent_";
use crate::hooks::{HOOK_NAMES, MIGRATE};

/// What a matched symbol does in the reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A function: every slot and the symbol-table entry switch to the new code.
    Code,
    /// Read-only data (vtables, typeinfo, const tables): comes from the new version.
    Rodata,
    /// A mutable variable: the new code is bound to the old storage.
    State,
    /// A mutable variable whose size changed, in a patch with a migrate hook: the new code keeps
    /// its own storage, every user switches to it, and migrate fills it.
    Moved,
}

/// A symbol both versions export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub old: Export,
    pub new: PatchSymbol,
    pub role: Role,
}

/// Pairs the patch's exports with the module's; refuses kind changes and resized variables.
/// Thread-local variables are compared but not switched: the warnings name the ones the new
/// library keeps a copy of its own.
pub fn select(
    patch: &PatchFile,
    module: &str,
    exports: &[Export],
    before_main: bool,
) -> Result<(Vec<Match>, Vec<String>), ReloadError> {
    // A patch's hooks are the API, not a second agent; any other name of ours is.
    if let Some(ours) = patch
        .symbols
        .iter()
        .find(|s| s.name.starts_with(AGENT_PREFIX) && !HOOK_NAMES.contains(&s.name.as_str()))
    {
        return Err(ReloadError::IsHotagent {
            file: patch.file_name.clone(),
            export: ours.name.clone(),
        });
    }
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    // Before main the program has not used a resized variable yet: the new build may own it.
    let migrates = before_main || patch.exports_function(MIGRATE);
    for new in &patch.symbols {
        if HOOK_NAMES.contains(&new.name.as_str()) {
            continue;
        }
        // An unversioned patch symbol replaces the default version; a versioned one, that version.
        let old = exports.iter().find(|e| {
            e.name == new.name
                && match &new.version {
                    None => e.default_version,
                    // Versions pair by name, never by index: two builds number them apart.
                    // A hidden one (`name@V`) serves only callers bound to `V`, which an
                    // unversioned old library cannot have.
                    Some(v) => {
                        e.version.as_deref() == Some(v.as_str())
                            || (e.version.is_none() && e.default_version && new.default_version)
                    }
                }
        });
        let Some(old) = old else { continue };
        if NEVER_REPLACED.contains(&new.name.as_str()) {
            return Err(ReloadError::AgentDepends {
                symbol: new.name.clone(),
                module: module.into(),
            });
        }
        if old.kind == SymKind::ThreadLocal || new.kind == SymKind::ThreadLocal {
            warnings.push(thread_local(old, new, module)?);
            continue;
        }
        let role = match (old.kind.is_code(), new.kind.is_code()) {
            (true, true) => Role::Code,
            (true, false) | (false, true) => {
                let (was, is) = if old.kind.is_code() {
                    ("a function", "data")
                } else {
                    ("data", "a function")
                };
                return Err(ReloadError::KindChanged {
                    symbol: new.name.clone(),
                    module: module.into(),
                    was,
                    is,
                });
            }
            (false, false) if new.mutable => match (new.size == old.size, migrates) {
                (true, _) => Role::State,
                (false, true) => Role::Moved,
                (false, false) => {
                    return Err(ReloadError::SizeChanged {
                        symbol: new.name.clone(),
                        module: module.into(),
                        old: old.size,
                        new: new.size,
                    });
                }
            },
            (false, false) => Role::Rodata,
        };
        out.push(Match {
            old: old.clone(),
            new: new.clone(),
            role,
        });
    }
    if !out.iter().any(|m| m.role != Role::State) {
        let shared: Vec<_> = out.iter().map(|m| m.new.name.as_str()).collect();
        let detail = if shared.is_empty() {
            String::new()
        } else {
            format!(" (only variables in common: {})", shared.join(", "))
        };
        return Err(ReloadError::NothingShared {
            module: module.into(),
            detail,
        });
    }
    Ok((out, warnings))
}

/// A thread-local variable both versions export: refused if it changed kind or size (every
/// thread's block was laid out for the old size, and the new code's references bind to it);
/// else the warning that the new library has its own copy too.
fn thread_local(old: &Export, new: &PatchSymbol, module: &str) -> Result<String, ReloadError> {
    let name = &new.name;
    if old.kind != new.kind {
        let (was, is) = if old.kind == SymKind::ThreadLocal {
            ("a thread-local variable", "not thread-local")
        } else {
            ("not thread-local", "a thread-local variable")
        };
        return Err(ReloadError::KindChanged {
            symbol: name.clone(),
            module: module.into(),
            was,
            is,
        });
    }
    if old.size != new.size {
        return Err(ReloadError::ThreadLocalSizeChanged {
            symbol: name.clone(),
            module: module.into(),
            old: old.size,
            new: new.size,
        });
    }
    Ok(format!(
        "thread-local variable {name}: the new library reaches {module}'s per-thread copy through the dynamic symbol (state kept), but has one of its own that starts fresh in every thread: code that reaches {name} directly (a hidden alias, -Bsymbolic, the initial- or local-exec model) uses that one"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old(version: Option<&str>, default_version: bool, addr: u64) -> Export {
        Export {
            name: "f".into(),
            version: version.map(str::to_string),
            default_version,
            kind: SymKind::Function,
            index: 1,
            addr,
            size: 8,
            info: 0x12,
            entry: 0,
        }
    }

    fn patch(symbols: &[(Option<&str>, bool)]) -> PatchFile {
        PatchFile {
            soname: None,
            file_name: "p.so".into(),
            symbols: symbols
                .iter()
                .map(|&(v, default_version)| PatchSymbol {
                    name: "f".into(),
                    version: v.map(str::to_string),
                    kind: SymKind::Function,
                    size: 8,
                    mutable: false,
                    default_version,
                })
                .collect(),
            imports: Vec::new(),
            origin_in_run_path: false,
            versioned: true,
        }
    }

    /// Each new symbol's partner, by the old one's address.
    fn partners(p: &PatchFile, exports: &[Export]) -> Vec<u64> {
        match select(p, "m.so", exports, false) {
            Ok((m, _)) => m.iter().map(|m| m.old.addr).collect(),
            Err(_) => Vec::new(),
        }
    }

    #[test]
    fn versions_pair_by_name() {
        let versioned = [old(Some("V1"), false, 1), old(Some("V2"), true, 2)];
        // Unversioned replaces the default; each version its namesake, hidden or not.
        assert_eq!(partners(&patch(&[(None, true)]), &versioned), [2]);
        assert_eq!(
            partners(
                &patch(&[(Some("V1"), false), (Some("V2"), true)]),
                &versioned
            ),
            [1, 2]
        );
        assert!(partners(&patch(&[(Some("V3"), true)]), &versioned).is_empty());
        // An unversioned old library: a default version replaces it, a hidden one does not
        // (no caller of that library is bound to the hidden version).
        let plain = [old(None, true, 3)];
        assert_eq!(partners(&patch(&[(Some("V2"), true)]), &plain), [3]);
        assert!(partners(&patch(&[(Some("V1"), false)]), &plain).is_empty());
    }
}
