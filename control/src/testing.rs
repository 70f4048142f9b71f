//! Test doubles: a fake agent on a real socket, and canned reports.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::thread;

use hotagent_protocol::{
    decode_request, encode_line, socket_path, EntryReport, EntryState, GenerationInfo, PauseReport,
    Phases, ReloadReport, Request, Response, StatusReport, SymbolReport, PROTOCOL_VERSION,
};

use crate::client::Target;

/// Listens on `<dir>/<pid>.sock` and answers each request with `answer`'s reply, or closes without
/// one when it returns `None`. The thread lives until the test process ends.
pub fn fake_agent(
    dir: &Path,
    pid: u32,
    answer: impl Fn(Request) -> Option<Response> + Send + 'static,
) -> Target {
    let socket = socket_path(dir, pid);
    let listener = UnixListener::bind(&socket).unwrap();
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
    Target { pid, socket }
}

/// A fake agent that answers status requests only, as discovery expects.
pub fn status_agent(dir: &Path, pid: u32, exe: &str) -> Target {
    let report = status_report(pid, exe);
    fake_agent(dir, pid, move |request| match request {
        Request::Status(_) => Some(Response::Status(report.clone())),
        _ => None,
    })
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
        },
        warnings: vec!["foo: 3 lazy slots left to the dynamic linker".into()],
    }
}
