//! `dl_iterate_phdr`: the list of loaded modules, copied out of the loader's callback.
//!
//! The callback runs with the loader's list lock (`dl_load_write_lock`) held. That lock is
//! recursive, which lets [`with_modules_locked`] hold it across a whole plan-and-write: while it is
//! held no module can be added to the list or unlinked from it (and a module is unlinked before it
//! is unmapped), so every module we look at stays mapped until we are done.

use std::any::Any;
use std::ffi::CStr;
use std::marker::PhantomData;
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// One program header, as the loader reports it (addresses relative to `base`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phdr {
    pub p_type: u32,
    pub p_flags: u32,
    pub p_vaddr: u64,
    pub p_memsz: u64,
}

/// A loaded module, copied out of `dl_phdr_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// The path the loader knows it by; empty for the main executable.
    pub name: String,
    /// Load bias (`l_addr`): 0 for a non-PIE executable.
    pub base: u64,
    pub phdrs: Vec<Phdr>,
}

impl ModuleInfo {
    /// Its executable segments, `[start, end)`: where its code lies.
    pub fn text_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0)
            .map(move |p| {
                let lo = self.base.wrapping_add(p.p_vaddr);
                (lo, lo.wrapping_add(p.p_memsz))
            })
    }
}

struct Collect {
    modules: Vec<ModuleInfo>,
    panic: Option<Box<dyn Any + Send>>,
}

fn copy_info(info: &libc::dl_phdr_info) -> ModuleInfo {
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: the loader hands a NUL-terminated name that lives while the module is loaded,
        // and we are inside its callback.
        unsafe { CStr::from_ptr(info.dlpi_name) }
            .to_string_lossy()
            .into_owned()
    };
    let phdrs = if info.dlpi_phdr.is_null() {
        Vec::new()
    } else {
        // SAFETY: dlpi_phdr points at dlpi_phnum program headers of a loaded module.
        let raw =
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        raw.iter()
            .map(|p| Phdr {
                p_type: p.p_type,
                p_flags: p.p_flags,
                p_vaddr: p.p_vaddr,
                p_memsz: p.p_memsz,
            })
            .collect()
    };
    ModuleInfo {
        name,
        base: info.dlpi_addr,
        phdrs,
    }
}

unsafe extern "C" fn collect_cb(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: `data` is the `Collect` passed by `snapshot`, alive for the whole iteration.
    let collect = unsafe { &mut *(data as *mut Collect) };
    if collect.panic.is_some() {
        return 1;
    }
    // SAFETY: the loader passes a valid dl_phdr_info for the duration of the callback.
    let info = unsafe { &*info };
    match catch_unwind(AssertUnwindSafe(|| copy_info(info))) {
        Ok(m) => {
            collect.modules.push(m);
            0
        }
        Err(p) => {
            collect.panic = Some(p);
            1
        }
    }
}

/// The modules loaded right now, in the loader's order (the executable first).
pub fn snapshot() -> Vec<ModuleInfo> {
    let mut collect = Collect {
        modules: Vec::with_capacity(64),
        panic: None,
    };
    // SAFETY: the callback only copies from the info it is given and never unwinds.
    unsafe {
        libc::dl_iterate_phdr(
            Some(collect_cb),
            &mut collect as *mut Collect as *mut libc::c_void,
        )
    };
    if let Some(p) = collect.panic {
        std::panic::resume_unwind(p);
    }
    collect.modules
}

/// Proof that the loader's list lock is held: only [`with_modules_locked`] makes one, and lends it
/// for the duration of its work, so whatever borrows it cannot outlive the lock. Not `Send`: the
/// lock belongs to the thread that took it.
#[derive(Debug)]
pub struct LoaderLock {
    _held_by_this_thread: PhantomData<*const ()>,
}

/// The module list read under the loader's list lock, with the lock's token: every module in it
/// stays mapped while this value (or anything borrowing [`LockedModules::lock`]) lives.
#[derive(Debug)]
pub struct LockedModules<'l> {
    modules: Vec<ModuleInfo>,
    lock: &'l LoaderLock,
}

impl<'l> LockedModules<'l> {
    /// The token of the lock under which the list was read.
    pub fn lock(&self) -> &'l LoaderLock {
        self.lock
    }
}

impl Deref for LockedModules<'_> {
    type Target = [ModuleInfo];
    fn deref(&self) -> &[ModuleInfo] {
        &self.modules
    }
}

struct Locked<'f> {
    work: Option<&'f mut dyn FnMut(LockedModules<'_>)>,
    panic: Option<Box<dyn Any + Send>>,
}

unsafe extern "C" fn locked_cb(
    _info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: `data` is the `Locked` passed by `with_modules_locked`, alive for the iteration.
    let locked = unsafe { &mut *(data as *mut Locked<'_>) };
    if let Some(work) = locked.work.take() {
        // Inner iteration under the same (recursive) lock: the full, stable list.
        let lock = LoaderLock {
            _held_by_this_thread: PhantomData,
        };
        let modules = || LockedModules {
            modules: snapshot(),
            lock: &lock,
        };
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| work(modules()))) {
            locked.panic = Some(p);
        }
    }
    1
}

/// Runs `work` over the module list while holding the loader's list lock. `work` must not call
/// `dlopen`, `dlclose` or `dlsym` (they take the loader's other lock in the opposite order).
pub fn with_modules_locked<R>(work: impl FnOnce(LockedModules<'_>) -> R) -> R {
    let mut work = Some(work);
    let mut out = None;
    let mut run = |mods: LockedModules<'_>| {
        if let Some(w) = work.take() {
            out = Some(w(mods));
        }
    };
    let mut locked = Locked {
        work: Some(&mut run),
        panic: None,
    };
    // SAFETY: the callback catches every panic and only calls `snapshot` and `work`.
    unsafe {
        libc::dl_iterate_phdr(
            Some(locked_cb),
            &mut locked as *mut Locked<'_> as *mut libc::c_void,
        )
    };
    if let Some(p) = locked.panic {
        std::panic::resume_unwind(p);
    }
    match out {
        Some(r) => r,
        // dl_iterate_phdr always reports at least the executable; never reached in practice.
        None => panic!("dl_iterate_phdr reported no module"),
    }
}
