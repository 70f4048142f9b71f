//! Whether any other thread runs in, or will return into, some address ranges: what a purge must
//! know before it unloads code.
//!
//! The threads are stopped (`stop`) for one look: each parked thread's program counter, then its
//! stack, every word from its stack pointer to the end of the stack's mapping. A return address
//! into a range is such a word; the scan is conservative (a stale word left on the stack counts
//! too), which can only make a purge refuse, never let one through. The stack pointer comes from
//! `/proc/self/task/TID/syscall`: a parked thread waits in a futex call inside the stop handler,
//! on its own stack (the handler does not use an alternate stack), so the interrupted frames and
//! the signal frame lie above it. While the threads are parked nothing here allocates or locks.

use super::raw;
use super::stop::{stop_others, Tasks};
use super::task::task_path;
use std::time::Duration;

/// How long the other threads may take to park.
const ARRIVAL: Duration = Duration::from_secs(1);
/// Stack read this much at a time.
const CHUNK: usize = 4096;

/// What was found inside the ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inside {
    /// A thread is stopped at this address.
    Pc { pc: u64 },
    /// A word on a thread's stack points there (a return address, or a stale one).
    Stack { tid: i32, word: u64 },
}

/// Where any other thread is inside one of `ranges` (`[start, end)`), if one is. Errors say why
/// the threads could not be looked at.
pub fn find_inside(ranges: &[(u64, u64)]) -> Result<Option<Inside>, String> {
    let within = |a: u64| ranges.iter().any(|&(lo, hi)| a >= lo && a < hi);
    let maps = mappings()?;
    let tids = threads()?;
    let mut tasks = Tasks::default();
    let mut line = [0u8; 512];
    let mut chunk = [0u8; CHUNK];
    let stopped = stop_others(&mut tasks, ARRIVAL)
        .map_err(|e| format!("the other threads could not be stopped to look at them: {e}"))?;
    let mut found = stopped
        .pcs()
        .find(|&pc| within(pc))
        .map(|pc| Inside::Pc { pc });
    let me = raw::gettid();
    for &tid in tids.iter().filter(|&&t| t != me) {
        if found.is_some() {
            break;
        }
        let Some(sp) = stack_pointer(tid, &mut line) else {
            continue;
        };
        let Some(&(_, end)) = maps.iter().find(|&&(lo, hi)| sp >= lo && sp < hi) else {
            continue;
        };
        let mut at = sp & !7;
        while at < end && found.is_none() {
            let len = CHUNK.min((end - at) as usize);
            let Ok(n) = raw::read_own_memory(at, &mut chunk[..len]) else {
                break;
            };
            found = chunk[..n & !7]
                .chunks_exact(8)
                .map(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]))
                .find(|&w| within(w))
                .map(|word| Inside::Stack { tid, word });
            if n < len {
                break;
            }
            at += n as u64;
        }
    }
    stopped.release();
    Ok(found)
}

/// The stack pointer of thread `tid` asleep in a system call (`NR a1..a6 SP PC` or `-1 SP PC`).
/// Allocates nothing.
fn stack_pointer(tid: i32, buf: &mut [u8; 512]) -> Option<u64> {
    let mut path = [0u8; 64];
    let path = task_path(tid, b"syscall", &mut path)?;
    let n = raw::read_file_into(path, buf).ok()?;
    let line = std::str::from_utf8(&buf[..n]).ok()?.trim();
    let mut words = line.rsplit(' ');
    let _pc = words.next()?;
    let sp = words.next()?;
    u64::from_str_radix(sp.strip_prefix("0x")?, 16).ok()
}

/// Every mapping of the process, `[start, end)`.
fn mappings() -> Result<Vec<(u64, u64)>, String> {
    let maps = raw::read_file(c"/proc/self/maps")
        .map_err(|e| format!("cannot read /proc/self/maps (errno {e})"))?;
    Ok(String::from_utf8_lossy(&maps)
        .lines()
        .filter_map(|l| {
            let (lo, hi) = l.split(' ').next()?.split_once('-')?;
            Some((
                u64::from_str_radix(lo, 16).ok()?,
                u64::from_str_radix(hi, 16).ok()?,
            ))
        })
        .collect())
}

/// The threads of this process now.
fn threads() -> Result<Vec<i32>, String> {
    let dir = std::fs::read_dir("/proc/self/task")
        .map_err(|e| format!("cannot list this process's threads: {e}"))?;
    Ok(dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread asleep in a call made from `marker`'s frame has `marker`'s return address on its
    /// stack; ranges no thread is in find nothing.
    #[test]
    fn finds_a_return_address_on_a_sleeping_threads_stack() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        #[inline(never)]
        fn marker(rx: std::sync::mpsc::Receiver<()>) {
            let _ = std::hint::black_box(rx.recv());
        }
        // The agent's constructor installs the stop signal; a unit test has none.
        super::super::stop::install().expect("a stop signal");
        let t = std::thread::spawn(move || marker(rx));
        let at = marker as *const () as usize as u64;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Until the thread has reached its sleep.
        let found = loop {
            let found = find_inside(&[(at, at + 4096)]).unwrap();
            if found.is_some() || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(matches!(found, Some(Inside::Stack { .. })), "{found:?}");
        let nowhere = 0xdead_beef_0000_0000;
        assert_eq!(find_inside(&[(nowhere, nowhere + 16)]).unwrap(), None);
        tx.send(()).unwrap();
        t.join().unwrap();
    }
}
