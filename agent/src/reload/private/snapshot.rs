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

const PF_W: u32 = 2;

/// The saved bytes of one module, as runs of consecutive unrelocated bytes.
#[derive(Debug)]
pub struct Snapshot {
    pub module: String,
    pub base: u64,
    runs: Vec<(u64, Vec<u8>)>,
}

impl Snapshot {
    /// How many bytes a restore writes.
    pub fn bytes(&self) -> u64 {
        self.runs.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// Writes the saved bytes back into `module` (its layout as the loader has it now, taken
    /// under the list lock); returns how many were written, 0 when `module` is not the one the
    /// checkpoint was taken of. Allocates nothing and takes no lock: it runs while every other
    /// thread is parked.
    pub fn restore(&self, module: &Layout) -> u64 {
        if module.base != self.base || module.path != self.module {
            return 0;
        }
        crate::sys::mem::restore_runs(module, &self.runs)
    }
}

/// Reads `module`'s private writable data from `mem` (the caller holds the list lock), leaving
/// out the bytes the loader relocates. The file on disk only says where the sections lie and
/// which words are relocated; it must be the build that is mapped.
pub fn checkpoint(
    module: &Layout,
    live: &LiveIdentity,
    mem: &impl Memory,
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
    identity::prove(path, live, view.build_id().as_deref()).map_err(refuse)?;
    let relro = module.relro.unwrap_or((0, 0));
    let mut runs = Vec::new();
    for s in &view.private {
        let start = module.base.wrapping_add(s.addr);
        let writable = module
            .loads
            .iter()
            .any(|l| l.flags & PF_W != 0 && l.start <= start && start + s.size <= l.end);
        if !writable || (relro.0 < start + s.size && start < relro.1) {
            return Err(refuse(format!(
                "its section {} is not in a writable segment as the file says",
                s.name
            )));
        }
        let live = mem
            .tail(start)
            .and_then(|t| t.get(..usize::try_from(s.size).ok()?))
            .ok_or_else(|| refuse(format!("its section {} cannot be read", s.name)))?;
        let mask = view.initial(s.addr, s.size);
        let mut run: Option<(u64, Vec<u8>)> = None;
        for (i, (&b, m)) in live.iter().zip(&mask).enumerate() {
            if m.is_none() {
                runs.extend(run.take());
                continue;
            }
            run.get_or_insert_with(|| (start + i as u64, Vec::new()))
                .1
                .push(b);
        }
        runs.extend(run);
    }
    Ok(Snapshot {
        module: path.to_string(),
        base: module.base,
        runs,
    })
}
