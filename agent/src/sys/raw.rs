//! System calls that no patch can intercept: the agent's lifeline.
//!
//! A patch may replace any libc function, `recv`, `accept4`, `sigaction` and `syscall` included.
//! The agent's control channel and its rollback path must keep working whatever the patch did,
//! so they enter the kernel here, with the `syscall` instruction itself, never through libc.
//! Each wrapper returns the kernel's result as `Ok(value)` or `Err(errno)`; none touches the
//! thread's `errno`, so they are safe in a signal handler too.

/// An errno value returned by the kernel.
pub type Errno = i32;

#[cfg(target_arch = "x86_64")]
mod arch {
    use core::arch::asm;

    /// # Safety
    /// The caller passes arguments valid for system call `n`: any pointer among them must be
    /// valid for what that call reads or writes.
    #[inline]
    pub unsafe fn syscall6(n: i64, a: [usize; 6]) -> isize {
        let ret: isize;
        // SAFETY: the `syscall` instruction clobbers rcx and r11 only; the arguments' validity
        // is this function's contract.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") n as isize => ret,
                in("rdi") a[0],
                in("rsi") a[1],
                in("rdx") a[2],
                in("r10") a[3],
                in("r8") a[4],
                in("r9") a[5],
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use core::arch::asm;

    /// # Safety
    /// As for x86_64: arguments valid for system call `n`.
    #[inline]
    pub unsafe fn syscall6(n: i64, a: [usize; 6]) -> isize {
        let ret: isize;
        // SAFETY: `svc 0` clobbers nothing but x0; validity is this function's contract.
        unsafe {
            asm!(
                "svc 0",
                in("x8") n,
                inlateout("x0") a[0] as isize => ret,
                in("x1") a[1],
                in("x2") a[2],
                in("x3") a[3],
                in("x4") a[4],
                in("x5") a[5],
                options(nostack),
            );
        }
        ret
    }
}

/// Makes system call `n` with up to six arguments.
///
/// # Safety
/// The arguments must be valid for system call `n` (pointers valid for what it reads or writes,
/// descriptors the caller may use).
pub unsafe fn syscall(n: i64, args: &[usize]) -> Result<usize, Errno> {
    let mut a = [0usize; 6];
    a[..args.len()].copy_from_slice(args);
    // SAFETY: forwarded contract.
    let r = unsafe { arch::syscall6(n, a) };
    if (-4095..0).contains(&r) {
        Err(-r as Errno)
    } else {
        Ok(r as usize)
    }
}

/// Retries a call interrupted by a signal (the agent's own stop signal reaches agent threads).
fn again<T>(mut f: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
    loop {
        match f() {
            Err(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// `read(2)`.
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: buf is valid for writes of its length.
    again(|| unsafe {
        syscall(
            libc::SYS_read,
            &[fd as usize, buf.as_mut_ptr() as usize, buf.len()],
        )
    })
}

/// `sendto(2)` on a connected socket, never raising SIGPIPE.
pub fn send(fd: i32, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: buf is valid for reads of its length; no address is passed.
    again(|| unsafe {
        syscall(
            libc::SYS_sendto,
            &[
                fd as usize,
                buf.as_ptr() as usize,
                buf.len(),
                (libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) as usize,
                0,
                0,
            ],
        )
    })
}

/// `accept4(2)` without the peer's address, non-blocking and close-on-exec.
pub fn accept(fd: i32) -> Result<i32, Errno> {
    // SAFETY: null address and length pointers are allowed.
    unsafe {
        syscall(
            libc::SYS_accept4,
            &[
                fd as usize,
                0,
                0,
                (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as usize,
            ],
        )
    }
    .map(|f| f as i32)
}

/// `close(2)`.
pub fn close(fd: i32) {
    // SAFETY: the caller owns fd; close has no memory arguments.
    let _ = unsafe { syscall(libc::SYS_close, &[fd as usize]) };
}

/// `ppoll(2)` with a timeout in milliseconds (`None`: wait forever). Returns the ready count.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: Option<u64>) -> Result<usize, Errno> {
    let ts = timeout_ms.map(|ms| libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(0usize, |t| t as *const libc::timespec as usize);
    // SAFETY: fds is a valid array of its length; tsp is null or points at ts, alive here; no
    // signal mask is passed.
    unsafe {
        syscall(
            libc::SYS_ppoll,
            &[fds.as_mut_ptr() as usize, fds.len(), tsp, 0, 8],
        )
    }
}

/// `SO_PEERCRED` of a connected Unix socket: (pid, uid).
pub fn peer_cred(fd: i32) -> Result<(i32, u32), Errno> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writes of the sizes given.
    unsafe {
        syscall(
            libc::SYS_getsockopt,
            &[
                fd as usize,
                libc::SOL_SOCKET as usize,
                libc::SO_PEERCRED as usize,
                &mut cred as *mut libc::ucred as usize,
                &mut len as *mut libc::socklen_t as usize,
            ],
        )
    }?;
    Ok((cred.pid, cred.uid))
}

/// `eventfd2(2)`: non-blocking, close-on-exec.
pub fn eventfd() -> Result<i32, Errno> {
    // SAFETY: no memory arguments.
    unsafe {
        syscall(
            libc::SYS_eventfd2,
            &[0, (libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) as usize],
        )
    }
    .map(|f| f as i32)
}

/// Adds one to an eventfd, waking whoever polls it.
pub fn notify(fd: i32) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: one is 8 readable bytes, as an eventfd write requires.
    let _ = again(|| unsafe {
        syscall(
            libc::SYS_write,
            &[fd as usize, one.as_ptr() as usize, one.len()],
        )
    });
}

/// Empties an eventfd.
pub fn drain(fd: i32) {
    let mut buf = [0u8; 8];
    let _ = read(fd, &mut buf);
}

#[allow(dead_code)] // for the stop path
/// The kernel's view of a signal's handler (`rt_sigaction` with no new action).
pub fn signal_handler(sig: i32) -> Result<usize, Errno> {
    // The kernel's struct sigaction on x86_64 and aarch64: handler, flags, restorer, mask.
    let mut old = [0usize; 4];
    // SAFETY: old is 32 writable bytes, the size of the kernel's sigaction with an 8-byte mask.
    unsafe {
        syscall(
            libc::SYS_rt_sigaction,
            &[sig as usize, 0, old.as_mut_ptr() as usize, 8],
        )
    }?;
    Ok(old[0])
}

#[allow(dead_code)] // for the stop path
/// This thread's id.
pub fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { syscall(libc::SYS_gettid, &[]) }.map_or(0, |t| t as i32)
}

/// This process's id (the kernel's, not glibc's cached one).
pub fn getpid() -> i32 {
    // SAFETY: no arguments.
    unsafe { syscall(libc::SYS_getpid, &[]) }.map_or(0, |t| t as i32)
}

/// The effective uid.
pub fn geteuid() -> u32 {
    // SAFETY: no arguments.
    unsafe { syscall(libc::SYS_geteuid, &[]) }.map_or(u32::MAX, |u| u as u32)
}

/// `CLOCK_MONOTONIC` in milliseconds: the clock of every request's deadline.
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    let _ = unsafe {
        syscall(
            libc::SYS_clock_gettime,
            &[
                libc::CLOCK_MONOTONIC as usize,
                &mut ts as *mut libc::timespec as usize,
            ],
        )
    };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_come_back_as_errno() {
        assert_eq!(read(-1, &mut [0u8; 4]), Err(libc::EBADF));
        assert_eq!(accept(-1), Err(libc::EBADF));
    }

    #[test]
    fn an_eventfd_wakes_poll() {
        let fd = eventfd().unwrap();
        let mut p = [libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(poll(&mut p, Some(0)), Ok(0));
        notify(fd);
        assert_eq!(poll(&mut p, Some(1000)), Ok(1));
        drain(fd);
        assert_eq!(poll(&mut p, Some(0)), Ok(0));
        close(fd);
    }

    #[test]
    fn ids_match_libc() {
        assert_eq!(getpid() as u32, std::process::id());
        assert!(gettid() > 0);
        assert_eq!(signal_handler(libc::SIGKILL), Ok(0));
        // SAFETY: geteuid has no preconditions.
        assert_eq!(geteuid(), unsafe { libc::geteuid() });
        let t = std::time::Instant::now();
        let a = monotonic_ms();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = monotonic_ms();
        assert!(
            b - a >= 19 && b - a <= t.elapsed().as_millis() as u64 + 1,
            "{a} {b}"
        );
    }
}
