//! Running a hook on the agent's hook thread, with a deadline.
//!
//! A hook is the patch author's code, and may hang. The agent's own thread cannot be taken back
//! from a hung call, so hooks run on a separate thread while the caller waits with a deadline;
//! past it the thread is abandoned (it stays where it hangs, out of the way) and the next hook
//! gets a new one. The wait allocates nothing and takes no lock, so it also serves migrate and
//! unmigrate, which run while every other thread is parked: the hook thread is the one thread a
//! stop leaves running (`stop::exempt`).

use crate::sys::hooks_ffi::{self, HookFn};
use crate::sys::{raw, stop, thread};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Stack for hooks: they are the patch's code, and may need as much as any of its functions.
const HOOK_STACK: usize = 8 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("did not return within {} ms", .0.as_millis())]
    TimedOut(Duration),
    #[error("the hook thread could not be started: {0}")]
    NoThread(String),
}

/// What a hook returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returns {
    Int,
    Nothing,
}

/// One hook thread and its mailbox. Leaked: an abandoned thread may still write to it.
struct Worker {
    go: AtomicU32,
    done: AtomicU32,
    /// The call to make: taken only by the agent's request thread and this worker, never by a
    /// thread a stop parks.
    mail: Mutex<Option<(HookFn, usize, Returns)>>,
    result: AtomicI32,
    tid: AtomicI32,
}

static CURRENT: Mutex<Option<&'static Worker>> = Mutex::new(None);

/// The hook thread, started now if there is none. Allocates on first use: call it before a stop.
pub fn ready() -> Result<(), HookError> {
    let mut cur = CURRENT
        .lock()
        .map_err(|_| HookError::NoThread("its record is unusable".into()))?;
    if cur.is_some() {
        return Ok(());
    }
    let w: &'static Worker = Box::leak(Box::new(Worker {
        go: AtomicU32::new(0),
        done: AtomicU32::new(0),
        mail: Mutex::new(None),
        result: AtomicI32::new(0),
        tid: AtomicI32::new(0),
    }));
    thread::spawn_quiet("hotagent-hooks", HOOK_STACK, move || serve(w))
        .map_err(|e| HookError::NoThread(e.to_string()))?;
    // The thread says who it is before a stop can need to leave it out.
    let deadline = raw::monotonic() + Duration::from_secs(1);
    while w.tid.load(Ordering::Acquire) == 0 && raw::monotonic() < deadline {
        raw::sleep(Duration::from_micros(50));
    }
    let tid = w.tid.load(Ordering::Acquire);
    if tid == 0 {
        return Err(HookError::NoThread("it did not start within 1 s".into()));
    }
    stop::exempt(tid);
    *cur = Some(w);
    Ok(())
}

fn serve(w: &'static Worker) {
    w.tid.store(raw::gettid(), Ordering::Release);
    let mut seen = 0;
    loop {
        let go = w.go.load(Ordering::Acquire);
        if go == seen {
            raw::futex_wait(&w.go, seen, None);
            continue;
        }
        seen = go;
        let mail = w.mail.lock().ok().and_then(|mut m| m.take());
        let result = match mail {
            Some((f, ctx, returns)) => hooks_ffi::call_hook(f, ctx, returns == Returns::Int),
            None => -1,
        };
        w.result.store(result, Ordering::Release);
        w.done.store(go, Ordering::Release);
        raw::futex_wake(&w.done, 1);
    }
}

/// Runs the hook at `f` with context address `ctx` on the hook thread, waiting at most
/// `timeout`. Allocates nothing and takes no lock but the worker record's (which only the agent's
/// own request thread takes), once [`ready`] has succeeded.
///
pub fn call(f: HookFn, ctx: usize, returns: Returns, timeout: Duration) -> Result<i32, HookError> {
    let mut cur = CURRENT
        .lock()
        .map_err(|_| HookError::NoThread("its record is unusable".into()))?;
    let Some(w) = *cur else {
        return Err(HookError::NoThread("none was readied".into()));
    };
    match w.mail.lock() {
        Ok(mut m) => *m = Some((f, ctx, returns)),
        Err(_) => return Err(HookError::NoThread("its mailbox is unusable".into())),
    }
    let go = w.go.load(Ordering::Acquire).wrapping_add(1);
    w.go.store(go, Ordering::Release);
    raw::futex_wake(&w.go, 1);
    let deadline = raw::monotonic() + timeout;
    loop {
        let done = w.done.load(Ordering::Acquire);
        if done == go {
            return Ok(w.result.load(Ordering::Acquire));
        }
        let now = raw::monotonic();
        if now >= deadline {
            // Abandoned where it hangs; stops take it in again (it runs the patch's code now).
            stop::exempt(0);
            *cur = None;
            return Err(HookError::TimedOut(timeout));
        }
        raw::futex_wait(&w.done, done, Some(deadline - now));
    }
}
