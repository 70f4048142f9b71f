//! Whether this process was started with privileges its invoker does not have.
//!
//! A setuid or setgid program (or one given file capabilities) runs with `AT_SECURE` set; a
//! process whose real and effective ids differ can switch back to the real ones. In both, the
//! environment — `HOTAGENT_SOCKET_DIR`, `HOTAGENT_STATE_DIR` (whose journal the agent applies
//! at start), `HOTAGENT_LOG=file=...` — belongs to a less privileged user, and an agent that
//! followed it would let that user write files as, or run a patch inside, the privileged
//! process.

/// True when the agent must stay off: `AT_SECURE`, or real and effective uid or gid differ.
#[cfg_attr(not(feature = "autostart"), allow(dead_code))]
pub fn untrusted_start() -> bool {
    // SAFETY: getauxval has no preconditions; an absent entry reads as 0.
    let at_secure = unsafe { libc::getauxval(libc::AT_SECURE) } != 0;
    at_secure || ids_differ(resid(libc::SYS_getresuid)) || ids_differ(resid(libc::SYS_getresgid))
}

fn ids_differ(ids: Option<[u32; 3]>) -> bool {
    // Ids that cannot be read are treated as the unsafe case.
    ids.is_none_or(|[real, effective, _]| real != effective)
}

/// `getresuid` or `getresgid`: real, effective, saved.
fn resid(nr: i64) -> Option<[u32; 3]> {
    let mut ids = [u32::MAX; 3];
    let [r, e, s] = &mut ids;
    // SAFETY: three valid, writable u32 slots for the kernel to fill.
    let done = unsafe {
        super::raw::syscall(
            nr,
            &[
                r as *mut u32 as usize,
                e as *mut u32 as usize,
                s as *mut u32 as usize,
            ],
        )
    };
    done.ok().map(|_| ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_test_process_is_trusted() {
        assert!(!untrusted_start());
    }

    #[test]
    fn differing_ids_are_untrusted() {
        assert!(ids_differ(Some([1000, 0, 0])));
        assert!(ids_differ(None));
        assert!(!ids_differ(Some([7, 7, 0])));
    }
}
