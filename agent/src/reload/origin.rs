//! `$ORIGIN` for a patch loaded from a sealed copy.
//!
//! The loader takes `$ORIGIN` from the path it opened, `/proc/self/fd/N`, so a dependency that
//! lives next to the patch (`DT_NEEDED libdep.so`, `DT_RUNPATH $ORIGIN`) would not be found. So
//! before the copy is loaded, its needed names are resolved here through its run path with
//! `$ORIGIN` = the patch file's real folder (hotctl sends the resolved path); each one found
//! there, and not loaded yet, is loaded first by its absolute path (`RTLD_LOCAL`), and the loader
//! then finds it by its soname when it loads the copy — as it would have next to the file.

use super::error::ReloadError;
use crate::sys::dl;
use goblin::elf::Elf;

/// The dependencies of the patch (absolute paths, in `DT_NEEDED` order) that only `$ORIGIN` in
/// its run path finds, and that are not loaded yet.
pub fn origin_dependencies(path: &str, elf: &Elf<'_>) -> Result<Vec<String>, ReloadError> {
    let folder = path.rsplit_once('/').map_or("/", |(d, _)| d);
    let folder = if folder.is_empty() { "/" } else { folder };
    // DT_RPATH is not read when DT_RUNPATH is there.
    let run_path = if elf.runpaths.is_empty() {
        &elf.rpaths
    } else {
        &elf.runpaths
    };
    let dirs: Vec<String> = run_path
        .iter()
        .flat_map(|p| p.split(':'))
        .filter(|d| d.contains("$ORIGIN") || d.contains("${ORIGIN}"))
        .map(|d| d.replace("${ORIGIN}", folder).replace("$ORIGIN", folder))
        .collect();
    if dirs.is_empty() {
        return Ok(Vec::new());
    }
    Ok(elf
        .libraries
        .iter()
        .filter(|name| !name.contains('/') && !loaded(name))
        .filter_map(|name| {
            dirs.iter()
                .map(|d| format!("{}/{name}", d.trim_end_matches('/')))
                .find(|candidate| is_file(candidate))
        })
        .collect())
}

fn loaded(name: &str) -> bool {
    match dl::open_loaded(name) {
        Some(h) => {
            dl::release(h);
            true
        }
        None => false,
    }
}

fn is_file(path: &str) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Loads each dependency by its path, before the copy that needs it. On a failure, those loaded
/// are closed again and the loader's message names the file.
pub fn load_dependencies(path: &str, deps: &[String]) -> Result<Vec<dl::Handle>, ReloadError> {
    let mut handles = Vec::with_capacity(deps.len());
    for dep in deps {
        match dl::open_now_local(dep) {
            Ok(h) => handles.push(h),
            Err(e) => {
                unload(handles);
                return Err(ReloadError::DependencyUnloadable {
                    dep: dep.clone(),
                    path: path.to_string(),
                    cause: e,
                });
            }
        }
    }
    Ok(handles)
}

/// Drops dependencies loaded for a copy that then failed to load.
pub fn unload(handles: Vec<dl::Handle>) {
    for h in handles.into_iter().rev() {
        dl::close(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::dl::DlError;

    /// A dependency the loader refuses is a typed error naming both files, with the loader's
    /// refusal as its source, where it used to be one formatted string.
    #[test]
    fn an_unloadable_dependency_is_typed() {
        let dep = "/nonexistent/hotagent-origin-dep.so".to_string();
        let e = load_dependencies("/tmp/p.so", std::slice::from_ref(&dep)).unwrap_err();
        assert_eq!(e.code(), hotagent_protocol::ErrorCode::LoadFailed);
        let ReloadError::DependencyUnloadable {
            dep: named,
            path,
            cause: DlError::Refused(why),
        } = &e
        else {
            panic!("not typed: {e:?}");
        };
        assert_eq!((named.as_str(), path.as_str()), (dep.as_str(), "/tmp/p.so"));
        assert!(why.contains("No such file"), "{why}");
        assert!(
            e.to_string().starts_with(&format!(
                "cannot load {dep}, which /tmp/p.so needs from its own folder ($ORIGIN): "
            )),
            "{e}"
        );
        let nul = load_dependencies("/tmp/p.so", &["a\0b".to_string()]).unwrap_err();
        assert!(
            matches!(
                &nul,
                ReloadError::DependencyUnloadable {
                    cause: DlError::NulInPath(_),
                    ..
                }
            ),
            "{nul:?}"
        );
    }
}
