//! A checkpoint of a module's private writable data (`.data`, `.bss` and the like), taken from
//! memory, for `hotctl try --reset`: a rollback can put the bytes back so one candidate's
//! pollution of global state cannot decide the next one's verdict.
//!
//! Only what is program state is kept: loader data (GOT, `.dynamic`, RELRO) is never part of it,
//! and every word the loader relocates is left out, so pointers into the module keep what the
//! loader wrote. The thread-local block is not kept: each thread has its own copy, made when the
//! thread started.

use super::file::FileView;
use super::{identity, LiveIdentity, PrivateError};
use crate::image::{Layout, Memory};

/// Saved bytes of one module, as runs of consecutive unrelocated bytes.
#[derive(Debug)]
struct Part {
    path: String,
    base: u64,
    runs: Vec<(u64, Vec<u8>)>,
}

/// The checkpoint: the replaced module's private data, plus the live storage of its exported
/// variables where that lies in another module (a copy relocation puts it in the executable).
#[derive(Debug)]
pub struct Snapshot {
    pub module: String,
    parts: Vec<Part>,
}

/// An exported variable of the module: where the process uses it now (`storage`), and its
/// place and size in the module's file.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    pub storage: u64,
    pub vaddr: u64,
    pub size: u64,
}

impl Snapshot {
    /// How many bytes a restore writes.
    pub fn bytes(&self) -> u64 {
        self.parts
            .iter()
            .flat_map(|p| &p.runs)
            .map(|(_, b)| b.len() as u64)
            .sum()
    }

    /// Writes the saved bytes back into the modules of `layouts` (as the loader has them now,
    /// taken under the list lock) that are still where they were; returns how many bytes were
    /// written. Allocates nothing and takes no lock: it runs while every other thread is parked.
    pub fn restore(&self, layouts: &[Layout]) -> u64 {
        let mut written = 0;
        for part in &self.parts {
            if let Some(l) = layouts
                .iter()
                .find(|l| l.base == part.base && l.path == part.path)
            {
                written += crate::sys::mem::restore_runs(l, &part.runs);
            }
        }
        written
    }
}

/// Reads `module`'s private writable data and its exported `variables` from `mem` (the caller
/// holds the list lock; `layouts` are the loaded modules), leaving out the bytes the loader
/// relocates. The file on disk only says where the sections lie and which words are relocated;
/// it must be the build that is mapped.
pub fn checkpoint(
    module: &Layout,
    live: &LiveIdentity,
    mem: &impl Memory,
    layouts: &[Layout],
    variables: &[Variable],
) -> Result<Snapshot, PrivateError> {
    let path = module.path.as_str();
    let refuse = |why: String| {
        PrivateError::Refused(format!(
            "cannot checkpoint {}'s writable data: {why}; nothing was loaded",
            crate::image::file_name(path)
        ))
    };
    let bytes = std::fs::read(path).map_err(|e| refuse(format!("cannot read {path}: {e}")))?;
    let view = FileView::parse(&bytes).map_err(|e| refuse(format!("{path}: {e}")))?;
    identity::prove(path, live, view.build_id().as_deref()).map_err(|e| refuse(e.to_string()))?;
    let mut own = Part {
        path: path.to_string(),
        base: module.base,
        runs: Vec::new(),
    };
    for s in &view.private {
        let start = module.base.wrapping_add(s.addr);
        let mask = view.initial(s.addr, s.size);
        save(module, mem, start, &mask, &mut own.runs)
            .map_err(|why| refuse(format!("its section {}: {why}", s.name)))?;
    }
    let mut parts = vec![own];
    for v in variables {
        if module.contains(v.storage) {
            continue;
        }
        let Some(l) = layouts.iter().find(|l| l.contains(v.storage)) else {
            continue;
        };
        let mask = view.initial(v.vaddr, v.size);
        let mut runs = Vec::new();
        save(l, mem, v.storage, &mask, &mut runs).map_err(|why| {
            refuse(format!(
                "an exported variable's storage in {}: {why}",
                crate::image::file_name(&l.path)
            ))
        })?;
        match parts.iter_mut().find(|p| p.base == l.base) {
            Some(p) => p.runs.extend(runs),
            None => parts.push(Part {
                path: l.path.clone(),
                base: l.base,
                runs,
            }),
        }
    }
    Ok(Snapshot {
        module: path.to_string(),
        parts,
    })
}

/// Why a range of private data cannot be saved for a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaveError {
    #[error("not in one writable segment as the file says")]
    NotWritableData,
    #[error("it cannot be read")]
    Unreadable,
}

/// Appends the bytes of `[start, start + mask.len())` in `module` that `mask` does not leave
/// out, as runs; the range must be writable data.
fn save(
    module: &Layout,
    mem: &impl Memory,
    start: u64,
    mask: &[Option<u8>],
    runs: &mut Vec<(u64, Vec<u8>)>,
) -> Result<(), SaveError> {
    let len = mask.len() as u64;
    if len == 0 {
        return Ok(());
    }
    let writable = |a| module.protection(a).is_some_and(|p| p.write);
    if !writable(start)
        || !writable(start + len - 1)
        || !module.same_segment(start, start + len - 1)
    {
        return Err(SaveError::NotWritableData);
    }
    let live = mem
        .tail(start)
        .and_then(|t| t.get(..mask.len()))
        .ok_or(SaveError::Unreadable)?;
    let mut run: Option<(u64, Vec<u8>)> = None;
    for (i, (&b, m)) in live.iter().zip(mask).enumerate() {
        if m.is_none() {
            runs.extend(run.take());
            continue;
        }
        run.get_or_insert_with(|| (start + i as u64, Vec::new()))
            .1
            .push(b);
    }
    runs.extend(run);
    Ok(())
}

#[cfg(test)]
mod save_tests {
    use super::*;
    use crate::image::SliceMemory;

    /// Read-only data and unreadable bytes are told apart, and read as the strings did.
    #[test]
    fn save_refusals_name_their_cause() {
        // PT_LOAD r-- at 0x1000..0x2000, rw- at 0x2000..0x3000.
        let l = Layout::new(
            "libx.so".into(),
            0,
            false,
            [(1, 4, 0x1000, 0x1000), (1, 6, 0x2000, 0x1000)],
            0x1000,
        );
        let bytes = [7u8; 8];
        let mem = SliceMemory {
            base: 0x2000,
            bytes: &bytes,
        };
        let mut runs = Vec::new();
        let e = save(&l, &mem, 0x1000, &[Some(0); 4], &mut runs).unwrap_err();
        assert_eq!(e, SaveError::NotWritableData);
        assert_eq!(
            e.to_string(),
            "not in one writable segment as the file says"
        );
        let e = save(&l, &mem, 0x2100, &[Some(0); 4], &mut runs).unwrap_err();
        assert_eq!(e, SaveError::Unreadable);
        assert!(save(&l, &mem, 0x2000, &[Some(0), None, Some(0)], &mut runs).is_ok());
        assert_eq!(runs, vec![(0x2000, vec![7]), (0x2002, vec![7])]);
    }
}
