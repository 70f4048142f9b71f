//! The reload's `dlsym`/`dlvsym` lookups in the new library, decided from the file alone.
//!
//! After loading the patch, the reload looks each matched symbol up through the new handle
//! (`resolve` in `transaction.rs`); the probe makes the same lookups in its throwaway copy. A dry
//! run without the probe must refuse what those lookups would refuse, so this module answers
//! them from the patch's own `.dynsym` and versions the way glibc's `check_match` does:
//!
//! - `dlvsym(h, name, V)`: a definition of `name` whose version is `V`, default or hidden; the
//!   base version (index 1, which names the file) never matches. A file without a version table
//!   matches any `V`.
//! - `dlsym(h, name)`: an unversioned definition (index 0 or 1), or else the one default
//!   (`@@`) version; a hidden (`@`) version is never found.
//!
//! What it cannot answer: where an IFUNC's resolver points (only running it tells, which the
//! probe does), so the "resolves back into" check needs the probe or the real load for those.

use super::check::PatchFile;
use super::error::ReloadError;
use super::select::Match;
use crate::image::SymKind;

/// Whether `dlvsym`/`dlsym` on the loaded patch would find its own definition of `name`.
pub fn finds(patch: &PatchFile, name: &str, version: Option<&str>) -> bool {
    let mut same = patch.symbols.iter().filter(|s| s.name == name);
    if !patch.versioned {
        return same.next().is_some();
    }
    match version {
        Some(v) => same.any(|s| s.version.as_deref() == Some(v)),
        None => {
            let candidates: Vec<_> = same.collect();
            candidates
                .iter()
                .any(|s| s.version.is_none() && s.default_version)
                || candidates
                    .iter()
                    .filter(|s| s.version.is_some() && s.default_version)
                    .count()
                    == 1
        }
    }
}

/// Refuses, before anything is loaded, a match the reload's lookup would not find.
pub fn check_lookups(patch: &PatchFile, matches: &[Match], path: &str) -> Result<(), ReloadError> {
    match matches
        .iter()
        .find(|m| !finds(patch, &m.new.name, m.new.version.as_deref()))
    {
        Some(m) => Err(not_found(path, &m.new.name, m.new.version.as_deref())),
        None => Ok(()),
    }
}

/// What a dry run without the probe cannot tell: where the patch's IFUNC resolvers point.
pub fn unseen_without_probe(matches: &[Match]) -> Option<String> {
    let ifuncs: Vec<&str> = matches
        .iter()
        .filter(|m| m.new.kind == SymKind::Ifunc)
        .map(|m| m.new.name.as_str())
        .collect();
    (!ifuncs.is_empty()).then(|| {
        format!(
            "without the probe, this dry run cannot tell where the new library's IFUNC resolvers point ({}): the reload refuses one that picks the old code, after loading the library",
            ifuncs.join(", ")
        )
    })
}

/// The refusal when the new library does not give `name` (at `version`) to `dlsym`.
pub fn not_found(path: &str, name: &str, version: Option<&str>) -> ReloadError {
    let asked = match version {
        Some(v) => format!("{name}@{v}"),
        None => name.to_string(),
    };
    ReloadError::NotFoundOnceLoaded {
        path: path.into(),
        asked,
    }
}

/// The refusal when `name` in the new library resolves to the replaced module's code.
pub fn resolves_back(path: &str, name: &str, module: &str) -> ReloadError {
    ReloadError::ResolvesBack {
        path: path.into(),
        symbol: name.into(),
        module: module.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::check::PatchSymbol;

    fn sym(version: Option<&str>, default_version: bool) -> PatchSymbol {
        PatchSymbol {
            name: "f".into(),
            version: version.map(str::to_string),
            kind: SymKind::Function,
            size: 1,
            mutable: false,
            default_version,
        }
    }

    fn file(symbols: Vec<PatchSymbol>) -> PatchFile {
        PatchFile {
            soname: None,
            file_name: "p.so".into(),
            symbols,
            imports: Vec::new(),
            origin_in_run_path: false,
            versioned: true,
        }
    }

    #[test]
    fn lookups_follow_the_loaders_rules() {
        let base = file(vec![sym(None, true)]);
        assert!(finds(&base, "f", None));
        assert!(
            !finds(&base, "f", Some("libz.so.1")),
            "the base version is no version"
        );
        let both = file(vec![sym(Some("V1"), false), sym(Some("V2"), true)]);
        assert!(finds(&both, "f", None));
        assert!(finds(&both, "f", Some("V1")));
        assert!(finds(&both, "f", Some("V2")));
        assert!(!finds(&both, "f", Some("V3")));
        let hidden_only = file(vec![sym(Some("V1"), false)]);
        assert!(
            !finds(&hidden_only, "f", None),
            "dlsym never returns a hidden version"
        );
        assert!(finds(&hidden_only, "f", Some("V1")));
        let mut plain = file(vec![sym(None, true)]);
        plain.versioned = false;
        assert!(finds(&plain, "f", Some("ANY")));
    }
}
