//! What a hook's `struct hotagent_ctx *` points at, and the services it answers.
//!
//! One context serves one reload or rollback. Services may be called from migrate and unmigrate,
//! while every other thread is parked, so everything here that a hook can reach allocates
//! nothing after construction: the failure message goes into a fixed buffer, symbol tables are
//! built beforehand, the class list has its capacity reserved.

use super::symbols::{Symbol, SymbolTable};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// The longest failure message kept (bytes); longer ones are cut at a character boundary.
const MESSAGE_MAX: usize = 1024;
/// Converters one reload may register.
pub const CLASSES_MAX: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Prepare = 0,
    Migrate = 1,
    Unmigrate = 2,
    Committed = 3,
    /// After the last hook: every service refuses.
    Closed = 4,
}

impl Phase {
    pub fn hook_name(self) -> &'static str {
        match self {
            Phase::Prepare => "hotagent_prepare",
            Phase::Migrate => "hotagent_migrate",
            Phase::Unmigrate => "hotagent_unmigrate",
            Phase::Committed => "hotagent_committed",
            Phase::Closed => "no hook",
        }
    }
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Prepare,
            1 => Phase::Migrate,
            2 => Phase::Unmigrate,
            3 => Phase::Committed,
            _ => Phase::Closed,
        }
    }
}

/// A converter registered by `hotagent_convert_class`, its vtables found and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassRequest {
    pub old_name: String,
    pub new_name: String,
    pub old: Symbol,
    pub new: Symbol,
    pub upgrade: u64,
    pub downgrade: Option<u64>,
}

/// Checks a converter before it is accepted (the vtables' method counts, inheritance): the
/// reload supplies it, so the context needs no knowledge of class layouts.
pub type ClassCheck = dyn Fn(&ClassRequest) -> Result<(), RegisterError> + Send + Sync;

/// Why `hotagent_convert_class` refused a converter (recorded as the hook's failure too).
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("hotagent_convert_class({old_name}) was called from {hook}: converters are registered from hotagent_prepare only")]
    NotInPrepare {
        old_name: String,
        hook: &'static str,
    },
    #[error("hotagent_convert_class({old_name}, {new_name}): the upgrade function is NULL")]
    NoUpgrade { old_name: String, new_name: String },
    #[error(
        "hotagent_convert_class: no vtable {name} in {module} (the generation being replaced)"
    )]
    NoOldVtable { name: String, module: String },
    #[error("hotagent_convert_class: no vtable {name} in {module}")]
    NoNewVtable { name: String, module: String },
    /// The classes' layouts do not allow the conversion.
    #[error("hotagent_convert_class: {0}")]
    Class(#[from] crate::convert::ConvertError),
    /// A check of the caller's own (tests) refused, in its words.
    #[error("{0}")]
    Refused(String),
    #[error("hotagent_convert_class: the {0} list is unusable")]
    Poisoned(&'static str),
    #[error("hotagent_convert_class: {0} already has a converter in this reload")]
    Duplicate(String),
    #[error("hotagent_convert_class: more than {CLASSES_MAX} converters in one reload")]
    TooMany,
}

struct Failure {
    len: usize,
    bytes: [u8; MESSAGE_MAX],
    set: bool,
}

pub struct Context {
    generation: u32,
    phase: AtomicU8,
    failure: Mutex<Failure>,
    /// Names as the generation before the patch's sees them.
    previous: SymbolTable,
    /// The patch library's own names (its vtables).
    this: SymbolTable,
    /// Where `previous` was taken from, for messages.
    previous_label: String,
    this_label: String,
    classes: Mutex<Vec<ClassRequest>>,
    check: Box<ClassCheck>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("generation", &self.generation)
            .field("phase", &self.phase())
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        generation: u32,
        previous: (SymbolTable, String),
        this: (SymbolTable, String),
        check: Box<ClassCheck>,
    ) -> Context {
        Context {
            generation,
            phase: AtomicU8::new(Phase::Prepare as u8),
            failure: Mutex::new(Failure {
                len: 0,
                bytes: [0; MESSAGE_MAX],
                set: false,
            }),
            previous: previous.0,
            previous_label: previous.1,
            this: this.0,
            this_label: this.1,
            classes: Mutex::new(Vec::with_capacity(CLASSES_MAX)),
            check,
        }
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    pub fn enter(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Records `message` unless one is recorded already (the first cause is the one to tell).
    /// Allocates nothing.
    pub fn fail(&self, message: &[u8]) {
        let Ok(mut f) = self.failure.lock() else {
            return;
        };
        if f.set {
            return;
        }
        let mut n = message.len().min(MESSAGE_MAX);
        // Cut at a character boundary so the message stays valid UTF-8 where it was.
        while n > 0 && n < message.len() && (message[n] & 0xc0) == 0x80 {
            n -= 1;
        }
        f.bytes[..n].copy_from_slice(&message[..n]);
        f.len = n;
        f.set = true;
    }

    /// Whether a failure was recorded. Allocates nothing.
    pub fn has_failed(&self) -> bool {
        self.failure.lock().is_ok_and(|f| f.set)
    }

    /// The recorded failure, if any.
    pub fn failure(&self) -> Option<String> {
        let f = self.failure.lock().ok()?;
        f.set
            .then(|| String::from_utf8_lossy(&f.bytes[..f.len]).into_owned())
    }

    /// Allocates nothing.
    pub fn previous_symbol(&self, name: &[u8]) -> Option<u64> {
        self.previous.get(name).map(|s| s.addr)
    }

    /// Registers a converter (prepare only). The error is also recorded as the failure.
    pub fn convert_class(
        &self,
        old_name: &str,
        new_name: &str,
        upgrade: u64,
        downgrade: Option<u64>,
    ) -> Result<(), RegisterError> {
        let r = self.register(old_name, new_name, upgrade, downgrade);
        if let Err(e) = &r {
            self.fail(e.to_string().as_bytes());
        }
        r
    }

    fn register(
        &self,
        old_name: &str,
        new_name: &str,
        upgrade: u64,
        downgrade: Option<u64>,
    ) -> Result<(), RegisterError> {
        if self.phase() != Phase::Prepare {
            return Err(RegisterError::NotInPrepare {
                old_name: old_name.into(),
                hook: self.phase().hook_name(),
            });
        }
        if upgrade == 0 {
            return Err(RegisterError::NoUpgrade {
                old_name: old_name.into(),
                new_name: new_name.into(),
            });
        }
        let old =
            self.previous
                .get(old_name.as_bytes())
                .ok_or_else(|| RegisterError::NoOldVtable {
                    name: old_name.into(),
                    module: self.previous_label.clone(),
                })?;
        let new = self
            .this
            .get(new_name.as_bytes())
            .ok_or_else(|| RegisterError::NoNewVtable {
                name: new_name.into(),
                module: self.this_label.clone(),
            })?;
        let req = ClassRequest {
            old_name: old_name.to_string(),
            new_name: new_name.to_string(),
            old: old.clone(),
            new: new.clone(),
            upgrade,
            downgrade,
        };
        (self.check)(&req)?;
        let mut classes = self
            .classes
            .lock()
            .map_err(|_| RegisterError::Poisoned("converter"))?;
        if classes.iter().any(|c| c.old.addr == req.old.addr) {
            return Err(RegisterError::Duplicate(old_name.into()));
        }
        if classes.len() == CLASSES_MAX {
            return Err(RegisterError::TooMany);
        }
        classes.push(req);
        Ok(())
    }

    pub fn classes(&self) -> Vec<ClassRequest> {
        self.classes.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// The context hooks may use now: a service called with any other pointer (a stale one kept by
/// a patch, garbage) refuses instead of reading it.
static LIVE: Mutex<Option<Arc<Context>>> = Mutex::new(None);

/// Makes `ctx` the live context until the returned guard is dropped.
pub fn install(ctx: &Arc<Context>) -> Installed {
    if let Ok(mut live) = LIVE.lock() {
        *live = Some(Arc::clone(ctx));
    }
    Installed
}

/// Clears the live context when dropped.
pub struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if let Ok(mut live) = LIVE.lock() {
            *live = None;
        }
    }
}

/// The live context, if `addr` is its address. Allocates nothing.
pub fn live(addr: usize) -> Option<Arc<Context>> {
    let live = LIVE.lock().ok()?;
    live.as_ref()
        .filter(|c| Arc::as_ptr(c) as usize == addr)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        let prev = SymbolTable::from_entries(vec![(
            b"_ZTV3Old".to_vec().into_boxed_slice(),
            Symbol {
                addr: 0x1000,
                size: 32,
                writable: false,
            },
        )]);
        let this = SymbolTable::from_entries(vec![(
            b"_ZTV3New".to_vec().into_boxed_slice(),
            Symbol {
                addr: 0x2000,
                size: 40,
                writable: false,
            },
        )]);
        Context::new(
            3,
            (prev, "libold.so".into()),
            (this, "libnew.so".into()),
            Box::new(|r: &ClassRequest| {
                if r.old.size == r.new.size {
                    Ok(())
                } else {
                    Err(RegisterError::Refused("method counts differ".to_string()))
                }
            }),
        )
    }

    #[test]
    fn the_first_failure_is_kept_and_long_ones_are_cut_on_a_character() {
        let c = ctx();
        assert_eq!(c.failure(), None);
        c.fail("first".as_bytes());
        c.fail(b"second");
        assert_eq!(c.failure().as_deref(), Some("first"));
        let c = ctx();
        let long = "é".repeat(MESSAGE_MAX);
        c.fail(long.as_bytes());
        let kept = c.failure().unwrap_or_default();
        assert!(kept.len() <= MESSAGE_MAX && !kept.contains('\u{fffd}'));
    }

    #[test]
    fn converters_are_checked_found_and_only_taken_in_prepare() {
        let c = ctx();
        let e = c.convert_class("_ZTV7Missing", "_ZTV3New", 1, None);
        assert!(
            matches!(e, Err(RegisterError::NoOldVtable { ref name, .. }) if name == "_ZTV7Missing")
        );
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("no vtable _ZTV7Missing in libold.so"));
        let c = ctx();
        let e = c.convert_class("_ZTV3Old", "_ZTV3New", 1, None);
        assert!(matches!(e, Err(RegisterError::Refused(_))));
        assert_eq!(c.failure().as_deref(), Some("method counts differ"));
        let c = ctx();
        c.enter(Phase::Migrate);
        let e = c.convert_class("_ZTV3Old", "_ZTV3New", 1, None);
        assert!(
            matches!(e, Err(RegisterError::NotInPrepare { hook, .. }) if hook == Phase::Migrate.hook_name())
        );
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("from hotagent_prepare only"));
    }

    #[test]
    fn only_the_installed_context_answers() {
        let c = Arc::new(ctx());
        let addr = Arc::as_ptr(&c) as usize;
        assert!(live(addr).is_none());
        {
            let _g = install(&c);
            assert!(live(addr).is_some());
            assert!(live(addr + 8).is_none());
        }
        assert!(live(addr).is_none());
    }
}
