//! zlib 1.3.1 built from crate sources with its own version script (`zlib.map`: versioned
//! exports, the base version naming the soname), reloaded in Debian's python3 (streams open
//! across the switch) and in nginx's gzip filter, whose workers run as `nobody`.
//!
//! Build A' stores every new stream (level 0): the fix shows as output longer than its input,
//! and every stream must still decompress to what went in.

use crate::build::{self, Build};
use crate::service::{free_port, gunzip, http_get, uid_of, Daemon};
use crate::{python, require};
use hotagent_tests::{path_str, reload, rollback, status, AgentRef, HasAgent, Target, DEADLINE};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn lib(dir: &Path) -> PathBuf {
    dir.join("libz.so.1")
}

/// The answer to `roundtrip`: (compressed length, level bits of the zlib header).
fn roundtrip(t: &mut Target) -> (usize, u8) {
    let answer = t.cmd("roundtrip");
    let mut f = answer.split(' ');
    match (f.next(), f.next(), f.next()) {
        (Some("ok"), Some(len), Some(level)) => (
            len.parse().expect("a length"),
            level.parse().expect("a level"),
        ),
        _ => panic!("roundtrip failed: {answer:?}"),
    }
}

/// The sample's length, from `begin` (half of it).
fn begin(t: &mut Target) -> usize {
    let answer = t.cmd("begin");
    let half: usize = answer
        .strip_prefix("begun ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("begin failed: {answer:?}"));
    half
}

fn start_python(lib_dir: &Path) -> Target {
    let mut t = python("zlib_driver.py", lib_dir, &[]);
    let mapped = t.cmd("lib");
    assert_eq!(
        Path::new(&mapped),
        lib(lib_dir),
        "python3 loaded another libz"
    );
    t
}

/// In python3: compress/decompress round trips right before, after and back; a compressor and
/// a decompressor opened before the switch finish their streams after it; the fix is visible
/// (new streams are stored) and gone after rollback.
#[test]
fn zlib_python_fix_round_trips() {
    let a = build::zlib(Build::A);
    let fixed = lib(&build::zlib(Build::Fixed));
    let mut t = start_python(&a);
    let (len_a, level_a) = roundtrip(&mut t);
    let crc = t.cmd("crc");
    let half = begin(&mut t);
    let sample = 2 * half;
    assert!(
        len_a < sample / 4,
        "build A compresses: {len_a} of {sample}"
    );
    assert_eq!(level_a, 2, "zlib's default level");

    let dry = reload(&t, &fixed, &["--dry-run"]);
    assert!(dry.dry_run, "{dry:?}");
    let r = reload(&t, &fixed, &[]);
    assert_eq!(r.generation, 1, "{r:?}");
    assert!(r.module.contains("libz.so.1"), "{r:?}");

    let (len_fixed, level_fixed) = roundtrip(&mut t);
    assert!(len_fixed > sample, "A' stores: {len_fixed} of {sample}");
    assert_eq!(level_fixed, 0, "a stored stream's header says level 0");
    t.expect("finish", format!("stream ok {sample}"));
    t.expect("crc", &crc);
    begin(&mut t);

    rollback(&t);
    assert_eq!(
        roundtrip(&mut t),
        (len_a, level_a),
        "rollback brings A back"
    );
    t.expect("finish", format!("stream ok {sample}"));
    t.expect("crc", &crc);
    t.finish().assert_clean();
}

/// Issue 9 §3: a byte-identical copy of the running build (versioned with `zlib.map`) reloads
/// as a no-op or a clean reload, never a refusal; streams and answers stay right.
#[test]
fn zlib_identical_copy_reloads() {
    let a = build::zlib(Build::A);
    let copy_dir = tempfile::tempdir().expect("a folder");
    let copy = lib(copy_dir.path());
    std::fs::copy(lib(&a), &copy).expect("copy libz.so.1");
    let mut t = start_python(&a);
    let before = roundtrip(&mut t);
    let half = begin(&mut t);

    reload(&t, &copy, &["--dry-run"]);
    let r = reload(&t, &copy, &[]);
    assert!(r.generation <= 1, "{r:?}");
    assert_eq!(roundtrip(&mut t), before);
    t.expect("finish", format!("stream ok {}", 2 * half));
    if status(&t).generation == 1 {
        rollback(&t);
        assert_eq!(roundtrip(&mut t), before);
    }
    t.finish().assert_clean();
}

/// The same with Debian's own `libz.so.1` in a python3 that runs it (issue 9: "even a
/// byte-identical copy of Debian's libz.so.1 is refused").
#[test]
fn zlib_debian_copy_reloads() {
    let system = Path::new("/lib/x86_64-linux-gnu/libz.so.1");
    let empty = tempfile::tempdir().expect("a folder");
    let copy_dir = tempfile::tempdir().expect("a folder");
    let copy = lib(copy_dir.path());
    std::fs::copy(system, &copy).expect("copy Debian's libz.so.1");
    let mut t = python("zlib_driver.py", empty.path(), &[]);
    let mapped = std::fs::canonicalize(t.cmd("lib")).expect("the mapped libz");
    assert_eq!(
        mapped,
        std::fs::canonicalize(system).expect("Debian's libz"),
        "python3 should run Debian's libz here"
    );
    let before = roundtrip(&mut t);
    let half = begin(&mut t);
    reload(&t, &copy, &["--dry-run"]);
    let r = reload(&t, &copy, &[]);
    assert!(r.generation <= 1, "{r:?}");
    assert_eq!(roundtrip(&mut t), before);
    t.expect("finish", format!("stream ok {}", 2 * half));
    t.finish().assert_clean();
}

/// A text page nginx serves gzip'd: compressible, 64 KiB, the same every run.
fn page() -> Vec<u8> {
    let mut p = Vec::new();
    let mut i = 0u32;
    while p.len() < 64 * 1024 {
        p.extend_from_slice(
            format!("{i:06} hotagent real-world page, gzip'd by nginx\n").as_bytes(),
        );
        i += 1;
    }
    p
}

/// A served folder: nginx's configuration, logs and temporary folders, readable by its workers.
struct Site {
    dir: tempfile::TempDir,
    port: u16,
}

impl Site {
    fn new(page: &[u8]) -> Site {
        let dir = tempfile::Builder::new()
            .prefix("hotagent-rw-nginx-")
            .tempdir()
            .expect("a folder for nginx");
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::create_dir(root.join("html")).expect("html folder");
        std::fs::write(root.join("html").join("page.txt"), page).expect("write the page");
        let port = free_port();
        let r = root.display();
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 2;\nuser nobody nogroup;\n\
             pid {r}/nginx.pid;\nerror_log {r}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  default_type text/plain;\n\
               client_body_temp_path {r}/body;\n  proxy_temp_path {r}/proxy;\n\
               fastcgi_temp_path {r}/fastcgi;\n  uwsgi_temp_path {r}/uwsgi;\n\
               scgi_temp_path {r}/scgi;\n\
               gzip on;\n  gzip_types text/plain;\n  gzip_min_length 0;\n\
               gzip_http_version 1.0;\n  gzip_comp_level 1;\n\
               server {{ listen 127.0.0.1:{port} reuseport; root {r}/html;\n\
                 add_header X-Worker $pid; }}\n}}\n"
        );
        std::fs::write(root.join("nginx.conf"), conf).expect("write nginx.conf");
        Site { dir, port }
    }

    fn start(&self, lib_dir: &Path) -> Daemon {
        let root = self.dir.path();
        let mut cmd = Command::new(require("/usr/sbin/nginx"));
        cmd.arg("-p")
            .arg(root)
            .arg("-c")
            .arg(root.join("nginx.conf"))
            .arg("-e")
            .arg(root.join("error.log"))
            .env("LD_LIBRARY_PATH", lib_dir);
        Daemon::start(cmd, Some(root.join("error.log")))
    }
}

/// Fetches the page until every worker served it at least twice (`reuseport` spreads new
/// connections over them; each answer names its worker); each body must gunzip, with the
/// system's zlib, to the page. Returns every compressed length.
fn fetch(port: u16, page: &[u8], workers: &[u32]) -> Vec<usize> {
    let mut served = vec![0usize; workers.len()];
    let mut lengths = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while served.iter().any(|&n| n < 2) {
        assert!(
            Instant::now() < deadline,
            "not every worker answered within {DEADLINE:?}: {served:?} of {workers:?}"
        );
        let r = http_get(port, "/page.txt");
        assert!(r.status.contains(" 200 "), "status: {}", r.status);
        assert_eq!(
            r.header("content-encoding"),
            Some("gzip"),
            "{:?}",
            r.headers
        );
        assert!(
            gunzip(&r.body) == page,
            "the gzip'd page does not decompress to the page"
        );
        let worker: u32 = r
            .header("x-worker")
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no X-Worker header: {:?}", r.headers));
        let i = workers
            .iter()
            .position(|&w| w == worker)
            .unwrap_or_else(|| panic!("answered by {worker}, not one of {workers:?}"));
        served[i] += 1;
        lengths.push(r.body.len());
    }
    lengths
}

/// nginx with gzip on, its workers as `nobody` (master root), on build A of libz: every worker
/// reloads A' from a root-only folder (staged as `nobody`, issue 9 §5), every page still gunzips right and is now
/// stored; rollback brings compression back; no worker died or was replaced.
#[test]
fn nginx_gzip_workers_as_nobody() {
    let page = page();
    let site = Site::new(&page);
    let a = build::zlib(Build::A);
    // Where an operator keeps patches: a folder only root may enter (0700), which the workers
    // cannot open anything in.
    let private = tempfile::tempdir().expect("a root-only folder");
    let fixed = lib(private.path());
    std::fs::copy(lib(&build::zlib(Build::Fixed)), &fixed).expect("copy A'");
    let mut nginx = site.start(&a);
    let workers = nginx.children(2);
    let agents: Vec<AgentRef> = workers.iter().map(|&w| nginx.agent_of(w)).collect();
    for agent in &agents {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", agent.pid()))
            .expect("a worker's maps");
        assert!(
            maps.contains(path_str(&lib(&a))),
            "worker {} does not run build A of libz",
            agent.pid()
        );
    }
    // After their maps: a worker drops root once it is set up.
    for &w in &workers {
        let deadline = Instant::now() + DEADLINE;
        while uid_of(w) != 65534 {
            assert!(Instant::now() < deadline, "worker {w} never became nobody");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    for len in fetch(site.port, &page, &workers) {
        assert!(
            len < page.len() / 4,
            "build A compresses: {len} of {}",
            page.len()
        );
    }
    for agent in &agents {
        reload(agent, &fixed, &["--dry-run"]);
        let r = reload(agent, &fixed, &[]);
        assert_eq!(r.generation, 1, "worker {}: {r:?}", agent.pid());
    }
    for len in fetch(site.port, &page, &workers) {
        assert!(len > page.len(), "A' stores: {len} of {}", page.len());
    }
    for agent in &agents {
        rollback(agent);
    }
    for len in fetch(site.port, &page, &workers) {
        assert!(len < page.len() / 4, "back on A: {len} of {}", page.len());
    }
    nginx.assert_alive();
    assert_eq!(nginx.children(2), workers, "a worker died and was replaced");
}
