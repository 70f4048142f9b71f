//! Daemons under the agent (nginx, redis-server) and plain loopback clients for them.
//!
//! A daemon runs in its own process group, so dropping it kills it and every child it forked
//! (nginx's workers), whatever happened to the test.

use hotagent_tests::{agent_so, wait_for_agent, AgentRef, HasAgent, DEADLINE};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago (the kernel's pick).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("pick a free loopback port")
}

/// A daemon started with the agent preloaded, in its own process group and socket folder.
pub struct Daemon {
    child: Child,
    socket_dir: tempfile::TempDir,
    name: String,
    /// A file the daemon logs to, shown when something goes wrong.
    log: Option<PathBuf>,
}

impl HasAgent for Daemon {
    fn socket_dir(&self) -> &Path {
        self.socket_dir.path()
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Daemon {
    /// Starts `cmd` (its program, arguments and environment set) under the agent and waits for
    /// the agent's socket. Its output goes to `/dev/null`: daemons log to `log`.
    pub fn start(mut cmd: Command, log: Option<PathBuf>) -> Daemon {
        let socket_dir = tempfile::Builder::new()
            .prefix("hotagent-rw-")
            .tempdir()
            .expect("create a socket folder");
        let name = cmd.get_program().to_string_lossy().into_owned();
        cmd.env_remove("HOTAGENT_LOG")
            .env("LD_PRELOAD", agent_so())
            .env("HOTAGENT_SOCKET_DIR", socket_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut d = Daemon {
            child,
            socket_dir,
            name,
            log,
        };
        let (dir, pid) = (d.socket_dir.path().to_path_buf(), d.pid());
        if let Err(why) = wait_for_agent(&dir, pid, || d.check_alive()) {
            panic!("{why}\n{}", d.describe());
        }
        d
    }

    /// The agent of one of its children (an nginx worker), once it listens.
    pub fn agent_of(&mut self, pid: u32) -> AgentRef {
        let dir = self.socket_dir.path().to_path_buf();
        let mut alive = || {
            if Path::new(&format!("/proc/{pid}")).exists() {
                Ok(())
            } else {
                Err(format!("process {pid} is gone"))
            }
        };
        if let Err(why) = wait_for_agent(&dir, pid, &mut alive) {
            panic!("{why}\n{}", self.describe());
        }
        AgentRef { dir, pid }
    }

    /// What went wrong, for a failure message: the daemon's state and its log's tail.
    pub fn describe(&mut self) -> String {
        let state = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited: {status}"),
            Ok(None) => "still running".to_string(),
            Err(e) => format!("unknown state: {e}"),
        };
        let log = self
            .log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| {
                let lines: Vec<&str> = t.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            })
            .unwrap_or_default();
        format!(
            "[{} pid {}: {state}; log tail:\n{log}]",
            self.name,
            self.pid()
        )
    }

    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            _ => Err(format!("the daemon died\n{}", self.describe())),
        }
    }

    #[track_caller]
    pub fn assert_alive(&mut self) {
        if let Err(why) = self.check_alive() {
            panic!("{why}");
        }
    }

    /// Its children (by `/proc/*/stat`'s parent field), waiting until there are `n`.
    pub fn children(&mut self, n: usize) -> Vec<u32> {
        let me = self.pid();
        let start = Instant::now();
        loop {
            let kids = children_of(me);
            if kids.len() >= n {
                return kids;
            }
            if start.elapsed() > DEADLINE {
                let state = self.describe();
                panic!(
                    "{} has {} children, not {n}, after {DEADLINE:?}\n{state}",
                    self.name,
                    kids.len()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The whole group: the daemon and every process it forked.
        let group = -(self.child.id() as libc::pid_t);
        // SAFETY: kill(2) has no memory-safety preconditions; the group is the one this daemon
        // leads (process_group(0)), and the leader is not reaped yet, so the id is still ours.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// The pids whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The name is in parentheses and may hold spaces: the fields start after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            kids.push(pid);
        }
    }
    kids.sort_unstable();
    kids
}

/// The uid a process runs as now (the real uid of `/proc/PID/status`).
pub fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .expect("a Uid: line")
}

/// Connects to 127.0.0.1:`port`, retrying until the deadline (the daemon may still be starting).
pub fn connect(port: u16) -> TcpStream {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let start = Instant::now();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => {
                s.set_read_timeout(Some(DEADLINE)).expect("read timeout");
                s.set_write_timeout(Some(DEADLINE)).expect("write timeout");
                return s;
            }
            Err(e) if start.elapsed() > DEADLINE => panic!("cannot connect to {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// An HTTP response: status line, lower-cased headers, body.
pub struct Response {
    pub status: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` over HTTP/1.0 (the server closes after the body), asking for gzip.
pub fn http_get(port: u16, path: &str) -> Response {
    let mut s = connect(port);
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip\r\n\r\n"
    )
    .expect("send the request");
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).expect("read the status line");
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("read a header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut body = Vec::new();
    r.read_to_end(&mut body).expect("read the body");
    Response {
        status: status.trim_end().to_string(),
        headers,
        body,
    }
}

/// Decompresses a gzip body with Debian's python3 and the system's zlib — not the build under
/// test — so a wrong stream cannot be judged right by the code that made it.
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(crate::PYTHON)
        .args([
            "-I",
            "-c",
            "import gzip,sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))",
        ])
        .env_remove("LD_PRELOAD")
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3 to gunzip");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("wait for gunzip");
    let _ = writer.join();
    assert!(
        out.status.success(),
        "not a valid gzip stream: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// One RESP value of a redis reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

/// A raw RESP2 client.
pub struct Redis {
    r: BufReader<TcpStream>,
}

impl Redis {
    pub fn connect(port: u16) -> Redis {
        Redis {
            r: BufReader::new(connect(port)),
        }
    }

    /// Sends one command and reads its reply.
    pub fn cmd(&mut self, args: &[&str]) -> Resp {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        self.r.get_mut().write_all(&req).expect("send a command");
        self.read()
    }

    /// A command whose reply is an array of bulk strings, as strings.
    pub fn strings(&mut self, args: &[&str]) -> Vec<String> {
        match self.cmd(args) {
            Resp::Array(items) => items
                .into_iter()
                .map(|i| match i {
                    Resp::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
                    other => panic!("{args:?}: not a bulk string: {other:?}"),
                })
                .collect(),
            other => panic!("{args:?}: not an array: {other:?}"),
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("read a reply line");
        assert!(line.ends_with("\r\n"), "truncated reply: {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    fn read(&mut self) -> Resp {
        let line = self.line();
        let (kind, rest) = line.split_at(1);
        let int = |s: &str| -> i64 {
            s.parse()
                .unwrap_or_else(|_| panic!("bad number in reply: {s:?}"))
        };
        match kind {
            "+" => Resp::Simple(rest.to_string()),
            "-" => Resp::Error(rest.to_string()),
            ":" => Resp::Int(int(rest)),
            "$" => {
                let n = int(rest);
                if n < 0 {
                    return Resp::Bulk(None);
                }
                let mut buf = vec![0u8; n as usize + 2];
                self.r.read_exact(&mut buf).expect("read a bulk string");
                buf.truncate(n as usize);
                Resp::Bulk(Some(buf))
            }
            "*" => {
                let n = int(rest);
                Resp::Array((0..n.max(0)).map(|_| self.read()).collect())
            }
            _ => panic!("not a RESP reply: {line:?}"),
        }
    }
}
