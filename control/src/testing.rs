//! Test doubles: a fake agent on a real socket, and canned reports.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use hotagent_protocol::{
    decode_request, encode_line, socket_path, EntryReport, EntryState, GenerationInfo, PauseReport,
    Phases, ReloadReport, Request, Response, StatusReport, SymbolReport, PROTOCOL_VERSION,
};

use crate::client::Target;

/// A socket `<dir>/<pid>.sock` that this process accepts on, while `SO_PEERCRED` names another
/// process, `pid`, as its listener: a child (`sleep`) calls `listen` again on the socket it
/// inherited, which makes its credentials the socket's. So each fake agent has a pid of its own,
/// as hotctl checks. The child dies with the calling thread (the test).
pub fn foreign_listener(dir: &Path) -> (UnixListener, Target) {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".fake-{}-{n}", std::process::id()));
    let listener = UnixListener::bind(&tmp).unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sleep");
    cmd.arg("3600")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the hook makes only async-signal-safe system calls (prctl, listen) in the forked
    // child, on a descriptor it inherited.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::listen(fd, 128) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start sleep");
    let pid = child.id();
    thread::spawn(move || child.wait());
    let socket = socket_path(dir, pid);
    fs::rename(&tmp, &socket).unwrap();
    (listener, Target { pid, socket })
}

/// Serves `listener` as an agent would, one request per connection, answering with `answer`'s
/// reply, or closing without one when it returns `None`. The thread lives until the test process
/// ends.
pub fn serve(
    listener: UnixListener,
    answer: impl Fn(Request) -> Option<Response> + Send + 'static,
) {
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut line = Vec::new();
            if BufReader::new(&stream)
                .read_until(b'\n', &mut line)
                .is_err()
            {
                continue;
            }
            let request = decode_request(&line).expect("hotctl sent a valid request");
            if let Some(response) = answer(request) {
                let _ = stream.write_all(&encode_line(&response));
            }
        }
    });
}

/// A fake agent in `dir` (see [`foreign_listener`]) answering with [`serve`].
pub fn fake_agent(
    dir: &Path,
    answer: impl Fn(Request) -> Option<Response> + Send + 'static,
) -> Target {
    let (listener, target) = foreign_listener(dir);
    serve(listener, answer);
    target
}

/// A fake agent that answers status requests only, as discovery expects.
pub fn status_agent(dir: &Path, exe: &str) -> Target {
    let (listener, target) = foreign_listener(dir);
    let report = status_report(target.pid, exe);
    serve(listener, move |request| match request {
        Request::Status(_) => Some(Response::Status(report.clone())),
        _ => None,
    });
    target
}

pub fn status_report(pid: u32, exe: &str) -> StatusReport {
    StatusReport {
        protocol: PROTOCOL_VERSION,
        agent_version: "0.1.0".into(),
        pid,
        exe: exe.into(),
        generation: 0,
        generations: Vec::new(),
        modules: 5,
        busy: false,
        symbols: Vec::new(),
        refused_loads: Vec::new(),
        reverted: Vec::new(),
    }
}

pub fn generation(generation: u32, path: &str) -> GenerationInfo {
    GenerationInfo {
        generation,
        path: path.into(),
        staged: format!("/tmp/staged/{generation}.so"),
        module: "libfoo.so".into(),
        symbols: vec!["foo".into(), "bar".into()],
        slots: 7,
        elapsed_us: 412,
        probation: None,
        applied_at_startup: false,
        since_unix_ms: None,
    }
}

pub fn symbol(name: &str, slots: usize, lazy: usize, other: usize) -> SymbolReport {
    SymbolReport {
        name: name.into(),
        version: None,
        kind: "function".into(),
        slots,
        modules: vec!["app".into(), "libbar.so".into()],
        lazy,
        other,
        entries: Vec::new(),
    }
}

pub fn entry(module: &str, state: EntryState, reason: Option<&str>) -> EntryReport {
    EntryReport {
        module: module.into(),
        addr: 0x7f00_0000_1000,
        state,
        reason: reason.map(String::from),
    }
}

pub fn reload_report(dry_run: bool) -> ReloadReport {
    let mut versioned = symbol("bar", 1, 0, 2);
    versioned.version = Some("FOO_1.0".into());
    versioned.kind = "rodata".into();
    versioned.modules = vec!["app".into()];
    let mut foo = symbol("foo", 6, 3, 0);
    foo.entries = vec![
        entry("libfoo.so", EntryState::Jump, None),
        entry("libfoo_v2.so#1", EntryState::Current, None),
    ];
    ReloadReport {
        generation: 1,
        dry_run,
        path: "/abs/libfoo_v2.so".into(),
        module: "libfoo.so".into(),
        slots: 7,
        symtab_entries: 2,
        symbols: vec![foo, versioned],
        elapsed_us: 412,
        phases: Phases::default(),
        pause: PauseReport {
            rounds: 1,
            longest_us: 35,
            threads: 4,
            entries: 1,
            ..Default::default()
        },
        warnings: vec!["foo: 3 lazy slots left to the dynamic linker".into()],
        probation_ms: 0,
        persisted: None,
        deferred: false,
        unchanged: false,
    }
}
