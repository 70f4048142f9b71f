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

/// `recvmsg(2)` on a non-blocking socket into `buf`, taking at most one descriptor passed with
/// the bytes (`SCM_RIGHTS`, close-on-exec): (bytes read, the descriptor). Any further
/// descriptors that came along are closed here.
pub fn recv_with_fd(fd: i32, buf: &mut [u8]) -> Result<(usize, Option<i32>), Errno> {
    // Room for a header and four descriptors, 8-aligned as cmsghdr requires.
    let mut control = [0u64; 6];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zero is a valid value for each of its fields.
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = core::mem::size_of_val(&control) as _;
    // SAFETY: msg points at iov (valid for buf's length) and at control (valid for its size),
    // all alive for the call.
    let n = again(|| unsafe {
        syscall(
            libc::SYS_recvmsg,
            &[
                fd as usize,
                &mut msg as *mut libc::msghdr as usize,
                (libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) as usize,
            ],
        )
    })?;
    let mut got = None;
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of well-formed cmsghdrs;
    // CMSG_FIRSTHDR/CMSG_NXTHDR stay inside them and CMSG_DATA points at each one's payload.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(c).cast::<i32>();
                for i in 0..payload / core::mem::size_of::<i32>() {
                    let passed = core::ptr::read_unaligned(data.add(i));
                    if got.is_none() {
                        got = Some(passed);
                    } else {
                        // SAFETY: just passed to us by the kernel: ours alone, unused.
                        close(passed);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n, got))
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
///
/// # Safety
/// The caller owns `fd` (it is the agent's, not a number the program opened or reused) and
/// nobody uses or closes it after: closing another's number closes their file under them.
pub unsafe fn close(fd: i32) {
    // SAFETY: close has no memory arguments; ownership is the caller's promise.
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

/// A pair of connected Unix stream sockets, non-blocking and close-on-exec: a wake-up channel
/// whose ends, unlike eventfds (which all share one inode), each have an identity of their own.
pub fn socketpair() -> Result<(i32, i32), Errno> {
    let mut fds = [-1i32; 2];
    let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: fds is two writable ints, as socketpair requires.
    unsafe {
        syscall(
            libc::SYS_socketpair,
            &[
                libc::AF_UNIX as usize,
                ty as usize,
                0,
                fds.as_mut_ptr() as usize,
            ],
        )
    }?;
    Ok((fds[0], fds[1]))
}

/// Reads and discards everything waiting on the non-blocking `fd`.
pub fn drain(fd: i32) {
    let mut buf = [0u8; 64];
    while matches!(read(fd, &mut buf), Ok(n) if n > 0) {}
}

/// The kernel's `struct sigaction` on x86_64 and aarch64 (an 8-byte signal mask).
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct KernelSigaction {
    pub handler: usize,
    pub flags: u64,
    pub restorer: usize,
    pub mask: u64,
}

/// `rt_sigaction`: installs `new` for `sig` when given, and returns the action it had. Through
/// the kernel, not libc's `sigaction`, which a patch may replace.
pub fn rt_sigaction(sig: i32, new: Option<&KernelSigaction>) -> Result<KernelSigaction, Errno> {
    let mut old = KernelSigaction::default();
    let new_ptr = new.map_or(0, |n| n as *const KernelSigaction as usize);
    // SAFETY: new_ptr is null or points at a live KernelSigaction; old is writable; both have the
    // kernel's layout for an 8-byte signal mask.
    unsafe {
        syscall(
            libc::SYS_rt_sigaction,
            &[
                sig as usize,
                new_ptr,
                &mut old as *mut KernelSigaction as usize,
                8,
            ],
        )
    }?;
    Ok(old)
}

/// The kernel's view of a signal's handler (`rt_sigaction` with no new action).
pub fn signal_handler(sig: i32) -> Result<usize, Errno> {
    rt_sigaction(sig, None).map(|a| a.handler)
}

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

// The reload/rollback write path: stopping threads, writing code, mapping stub pages.

/// `tgkill(2)`: signal `sig` (0 only checks that the thread exists) to thread `tid` of `pid`.
pub fn tgkill(pid: i32, tid: i32, sig: i32) -> Result<(), Errno> {
    // SAFETY: no memory arguments.
    unsafe {
        syscall(
            libc::SYS_tgkill,
            &[pid as usize, tid as usize, sig as usize],
        )
    }
    .map(|_| ())
}

/// Wakes at most `n` threads waiting on `word` (process-private futex).
pub fn futex_wake(word: &core::sync::atomic::AtomicU32, n: i32) {
    // SAFETY: word is a valid, aligned u32 for the duration of the call.
    let _ = unsafe {
        syscall(
            libc::SYS_futex,
            &[
                word.as_ptr() as usize,
                (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as usize,
                n as usize,
            ],
        )
    };
}

/// Sleeps while `*word == seen`, at most `timeout` (`None`: until woken). Returns early on a
/// signal or a spurious wake: callers loop.
pub fn futex_wait(
    word: &core::sync::atomic::AtomicU32,
    seen: u32,
    timeout: Option<core::time::Duration>,
) {
    let ts = timeout.map(timespec);
    let tsp = ts
        .as_ref()
        .map_or(0usize, |t| t as *const libc::timespec as usize);
    // SAFETY: word is a valid aligned u32; tsp is null or points at ts, alive for the call.
    let _ = unsafe {
        syscall(
            libc::SYS_futex,
            &[
                word.as_ptr() as usize,
                (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as usize,
                seen as usize,
                tsp,
            ],
        )
    };
}

fn timespec(d: core::time::Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// `CLOCK_MONOTONIC` as a duration since an arbitrary start: deadlines that no patch of
/// `clock_gettime` can stretch.
pub fn monotonic() -> core::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a writable timespec.
    let _ = unsafe {
        syscall(
            libc::SYS_clock_gettime,
            &[
                libc::CLOCK_MONOTONIC as usize,
                &mut ts as *mut libc::timespec as usize,
            ],
        )
    };
    core::time::Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Sleeps for `d` (a signal may cut it short).
pub fn sleep(d: core::time::Duration) {
    let ts = timespec(d);
    // SAFETY: ts is a valid timespec; no remainder is asked for.
    let _ = unsafe {
        syscall(
            libc::SYS_nanosleep,
            &[&ts as *const libc::timespec as usize, 0],
        )
    };
}

/// `openat(AT_FDCWD, path, flags | O_CLOEXEC)`.
pub fn open(path: &core::ffi::CStr, flags: i32) -> Result<i32, Errno> {
    open_at(libc::AT_FDCWD, path, flags)
}

/// `openat(dir, path, flags | O_CLOEXEC)`: never creates a file (no mode is passed).
pub fn open_at(dir: i32, path: &core::ffi::CStr, flags: i32) -> Result<i32, Errno> {
    if flags & libc::O_CREAT != 0 {
        return Err(libc::EINVAL);
    }
    // SAFETY: path is NUL-terminated and outlives the call.
    again(|| unsafe {
        syscall(
            libc::SYS_openat,
            &[
                dir as usize,
                path.as_ptr() as usize,
                (flags | libc::O_CLOEXEC) as usize,
            ],
        )
    })
    .map(|fd| fd as i32)
}

/// Reads the file at `path` into `buf` (as much as fits), allocating nothing.
pub fn read_file_into(path: &core::ffi::CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    let fd = open(path, libc::O_RDONLY)?;
    let mut n = 0;
    let result = loop {
        match read(fd, &mut buf[n..]) {
            Ok(0) => break Ok(n),
            Ok(k) => {
                n += k;
                if n == buf.len() {
                    break Ok(n);
                }
            }
            Err(e) => break Err(e),
        }
    };
    // SAFETY: opened at the top of this function, used no more.
    unsafe { close(fd) };
    result
}

/// Reads the whole file at `path` (a `/proc` file whose size `stat` does not tell).
pub fn read_file(path: &core::ffi::CStr) -> Result<Vec<u8>, Errno> {
    let fd = open(path, libc::O_RDONLY)?;
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let result = loop {
        match read(fd, &mut chunk) {
            Ok(0) => break Ok(()),
            Ok(k) => out.extend_from_slice(&chunk[..k]),
            Err(e) => break Err(e),
        }
    };
    // SAFETY: opened at the top of this function, used no more.
    unsafe { close(fd) };
    result.map(|()| out)
}

/// `getdents64(2)` into `buf`: the bytes filled (0 at the end of the directory).
pub fn getdents64(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: buf is writable for its whole length.
    again(|| unsafe {
        syscall(
            libc::SYS_getdents64,
            &[fd as usize, buf.as_mut_ptr() as usize, buf.len()],
        )
    })
}

/// `pwrite64(2)`: the bytes written.
pub fn pwrite(fd: i32, buf: &[u8], offset: u64) -> Result<usize, Errno> {
    // SAFETY: buf is readable for its length; the kernel checks the offset.
    again(|| unsafe {
        syscall(
            libc::SYS_pwrite64,
            &[
                fd as usize,
                buf.as_ptr() as usize,
                buf.len(),
                offset as usize,
            ],
        )
    })
}

/// `mprotect(2)`.
///
/// # Safety
/// Taking access away from memory the process uses (or granting it to memory it must not write)
/// breaks whoever relies on it: the caller knows the range and restores what it changes.
pub unsafe fn mprotect(addr: u64, len: u64, prot: i32) -> Result<(), Errno> {
    // SAFETY: forwarded contract; no memory is read or written by the call itself.
    unsafe {
        syscall(
            libc::SYS_mprotect,
            &[addr as usize, len as usize, prot as usize],
        )
    }
    .map(|_| ())
}

/// An anonymous private mapping of `len` bytes exactly at `addr`, never replacing anything
/// (`MAP_FIXED_NOREPLACE`); an old kernel that takes the flag as a hint gets its mapping undone
/// and `EEXIST`.
pub fn map_anonymous_at(addr: u64, len: u64, prot: i32) -> Result<u64, Errno> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so no memory in use changes.
    let p = unsafe {
        syscall(
            libc::SYS_mmap,
            &[
                addr as usize,
                len as usize,
                prot as usize,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as usize,
                usize::MAX, // fd -1
                0,
            ],
        )
    }? as u64;
    if p != addr {
        // SAFETY: the mapping just made, which nobody knows of.
        let _ = unsafe { munmap(p, len) };
        return Err(libc::EEXIST);
    }
    Ok(p)
}

/// `munmap(2)`.
///
/// # Safety
/// Nothing may use the range any more.
pub unsafe fn munmap(addr: u64, len: u64) -> Result<(), Errno> {
    // SAFETY: forwarded contract.
    unsafe { syscall(libc::SYS_munmap, &[addr as usize, len as usize]) }.map(|_| ())
}

/// `membarrier(2)` with a command and flags.
pub fn membarrier(cmd: i32, flags: u32) -> Result<(), Errno> {
    // SAFETY: integer arguments only.
    unsafe { syscall(libc::SYS_membarrier, &[cmd as usize, flags as usize, 0]) }.map(|_| ())
}

/// The effective uid.
pub fn geteuid() -> u32 {
    // SAFETY: no arguments.
    unsafe { syscall(libc::SYS_geteuid, &[]) }.map_or(u32::MAX, |u| u as u32)
}

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) in nanoseconds: how long a signal
/// handler kept it from its own code, not counting time it spent descheduled. Through the
/// system call, as a patch may replace `clock_gettime` (the vDSO does not serve this clock).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a writable timespec.
    let _ = unsafe {
        syscall(
            libc::SYS_clock_gettime,
            &[
                libc::CLOCK_THREAD_CPUTIME_ID as usize,
                &mut ts as *mut libc::timespec as usize,
            ],
        )
    };
    (ts.tv_sec.max(0) as u64) * 1_000_000_000 + ts.tv_nsec.clamp(0, 999_999_999) as u64
}

/// `CLOCK_MONOTONIC` in milliseconds: the clock of every request's deadline.
pub fn monotonic_ms() -> u64 {
    monotonic().as_millis() as u64
}

/// `CLOCK_REALTIME` in milliseconds since the Unix epoch: when things happened, for people.
pub fn realtime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a writable timespec.
    let _ = unsafe {
        syscall(
            libc::SYS_clock_gettime,
            &[
                libc::CLOCK_REALTIME as usize,
                &mut ts as *mut libc::timespec as usize,
            ],
        )
    };
    (ts.tv_sec.max(0) as u64) * 1000 + (ts.tv_nsec.clamp(0, 999_999_999) as u64) / 1_000_000
}

// The probation handler's needs: reading memory that may be unmapped, writing its warning line,
// creating its marker file, seeding its cookie.

/// Copies `buf.len()` bytes from our own address `addr` with `process_vm_readv`: memory that is
/// not mapped gives `EFAULT` (or a short count) instead of a fault. The bytes copied.
pub fn read_own_memory(addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: local describes buf, writable for its length; the kernel checks the remote range
    // and reports EFAULT rather than touching anything unmapped.
    unsafe {
        syscall(
            libc::SYS_process_vm_readv,
            &[
                getpid() as usize,
                &local as *const libc::iovec as usize,
                1,
                &remote as *const libc::iovec as usize,
                1,
                0,
            ],
        )
    }
}

/// Writes all of `buf` to `fd` (short writes continued): the bytes written.
pub fn write_all(fd: i32, buf: &[u8]) -> Result<usize, Errno> {
    let mut n = 0;
    while n < buf.len() {
        // SAFETY: the rest of buf is readable for its length.
        let k = again(|| unsafe {
            syscall(
                libc::SYS_write,
                &[fd as usize, buf[n..].as_ptr() as usize, buf.len() - n],
            )
        })?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

/// Creates (or opens for writing) the file at `path`, never following a symbolic link:
/// `openat(AT_FDCWD, path, O_WRONLY|O_CREAT|O_NOFOLLOW|O_CLOEXEC, mode)`.
pub fn create_file(path: &core::ffi::CStr, mode: u32) -> Result<i32, Errno> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: path is NUL-terminated and outlives the call.
    again(|| unsafe {
        syscall(
            libc::SYS_openat,
            &[
                libc::AT_FDCWD as usize,
                path.as_ptr() as usize,
                flags as usize,
                mode as usize,
            ],
        )
    })
    .map(|fd| fd as i32)
}

/// Eight random bytes from `getrandom(2)`.
pub fn random_u64() -> Result<u64, Errno> {
    let mut v = 0u64;
    // SAFETY: v is 8 writable bytes.
    again(|| unsafe { syscall(libc::SYS_getrandom, &[&mut v as *mut u64 as usize, 8, 0]) })?;
    Ok(v)
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
    fn a_passed_descriptor_is_received() {
        let (rx, tx) = socketpair().unwrap();
        let (a, b) = socketpair().unwrap();
        let mut control = [0u64; 3];
        let mut byte = *b"x";
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        // SAFETY: a plain sendmsg of one byte and one descriptor from buffers alive here.
        unsafe {
            let mut msg: libc::msghdr = core::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(4) as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as _;
            core::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), a);
            assert_eq!(libc::sendmsg(tx, &msg, 0), 1);
        }
        let mut buf = [0u8; 8];
        let (n, got) = recv_with_fd(rx, &mut buf).unwrap();
        assert_eq!((n, &buf[..1]), (1, &b"x"[..]));
        let got = got.expect("a descriptor");
        assert_ne!(got, a);
        assert_eq!(send(got, b"y"), Ok(1));
        assert_eq!(read(b, &mut buf), Ok(1));
        assert_eq!(recv_with_fd(rx, &mut buf), Err(libc::EAGAIN));
        for fd in [rx, tx, a, b, got] {
            // SAFETY: the test's own descriptors, used no more.
            unsafe { close(fd) };
        }
    }

    #[test]
    fn a_socket_pair_wakes_poll() {
        let (rx, tx) = socketpair().unwrap();
        let mut p = [libc::pollfd {
            fd: rx,
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(poll(&mut p, Some(0)), Ok(0));
        assert_eq!(send(tx, &[1]), Ok(1));
        assert_eq!(send(tx, &[1]), Ok(1));
        assert_eq!(poll(&mut p, Some(1000)), Ok(1));
        drain(rx);
        assert_eq!(poll(&mut p, Some(0)), Ok(0));
        // SAFETY: the test's own pair, used no more.
        unsafe {
            close(rx);
            close(tx);
        }
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
    #[test]
    fn files_and_clocks() {
        let mut buf = [0u8; 4096];
        let n = read_file_into(c"/proc/self/status", &mut buf).unwrap();
        assert!(buf[..n].starts_with(b"Name:"));
        let all = read_file(c"/proc/self/maps").unwrap();
        assert!(all.len() > 100 && all.contains(&b'\n'));
        assert_eq!(open(c"/nonexistent/x", libc::O_RDONLY), Err(libc::ENOENT));
        let a = monotonic();
        sleep(core::time::Duration::from_millis(2));
        assert!(monotonic() - a >= core::time::Duration::from_millis(2));
        assert_eq!(tgkill(getpid(), gettid(), 0), Ok(()));
    }

    #[test]
    fn maps_pages() {
        let page = 4096;
        // A hint far from anything: the first page of a free 1 GiB-aligned area.
        let at = 0x3f00_0000_0000u64;
        let p = map_anonymous_at(at, page, libc::PROT_READ | libc::PROT_WRITE).unwrap();
        assert_eq!(p, at);
        assert_eq!(
            map_anonymous_at(at, page, libc::PROT_READ),
            Err(libc::EEXIST)
        );
        // SAFETY: our own page, used by nobody else.
        unsafe {
            mprotect(at, page, libc::PROT_READ).unwrap();
            munmap(at, page).unwrap();
        }
    }
}
