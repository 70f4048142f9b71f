//! A load generator for the demo server, and starting the server: shared by the bench's
//! reload-against-restart section and the soak.

use hotagent_tests::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the load generator saw.
#[derive(Default)]
pub struct Load {
    pub ok: u64,
    pub failed: u64,
    /// Replies whose text came from neither version.
    pub wrong: u64,
    /// The longest time a client went without a reply, in µs.
    pub longest_gap_us: u64,
    /// The server's request counter in the first and last reply (state carried over or lost).
    pub first_req: u64,
    pub last_req: u64,
}

/// `clients` persistent connections to 127.0.0.1:`port`, one request after another, until
/// `stop` is set; a broken connection counts its request as failed and is opened again.
pub fn load(port: u16, clients: usize, stop: &std::sync::atomic::AtomicBool) -> Load {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut l = Load::default();
                    let mut conn: Option<(std::net::TcpStream, BufReader<std::net::TcpStream>)> =
                        None;
                    let mut last = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        if conn.is_none() {
                            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                                Ok(c) => {
                                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                                    let r = BufReader::new(c.try_clone().expect("clone"));
                                    conn = Some((c, r));
                                }
                                Err(_) => {
                                    l.failed += 1;
                                    std::thread::sleep(Duration::from_millis(1));
                                    continue;
                                }
                            }
                        }
                        let (c, r) = conn.as_mut().expect("connected");
                        let mut line = String::new();
                        let answered = c.write_all(b"bob\n").is_ok()
                            && matches!(r.read_line(&mut line), Ok(n) if n > 0);
                        if !answered {
                            l.failed += 1;
                            conn = None;
                            continue;
                        }
                        let now = Instant::now();
                        l.longest_gap_us = l.longest_gap_us.max((now - last).as_micros() as u64);
                        last = now;
                        if !(line.contains("hello, bob (v1)") || line.contains("HELLO, BOB! (v2)"))
                        {
                            l.wrong += 1;
                        }
                        let req = line
                            .split("req ")
                            .nth(1)
                            .and_then(|r| r.split(',').next())
                            .and_then(|r| r.parse::<u64>().ok())
                            .unwrap_or(0);
                        if l.first_req == 0 {
                            l.first_req = req;
                        }
                        l.last_req = req;
                        l.ok += 1;
                    }
                    l
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("load thread"))
            .fold(Load::default(), |mut a, l| {
                a.ok += l.ok;
                a.failed += l.failed;
                a.wrong += l.wrong;
                a.longest_gap_us = a.longest_gap_us.max(l.longest_gap_us);
                a.first_req = if a.first_req == 0 {
                    l.first_req
                } else {
                    a.first_req.min(l.first_req)
                };
                a.last_req = a.last_req.max(l.last_req);
                a
            })
    })
}

/// Starts the demo server (with or without the agent) on `port` (0: any); returns it and its port.
pub fn demo_server(port: u16, agent: bool, socket_dir: &Path) -> (std::process::Child, u16) {
    use std::io::{BufRead, BufReader};
    let demo = target_dir().join("demo");
    let mut c = Command::new(demo.join("server"));
    c.arg(port.to_string())
        .env_remove("LD_PRELOAD")
        .env("HOTAGENT_SOCKET_DIR", socket_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if agent {
        c.env("LD_PRELOAD", agent_so());
    }
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the demo server (make demo-build): {e}"));
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("the server's first line");
    let port = first
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {first:?}"));
    (child, port)
}
