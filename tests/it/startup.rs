//! What the agent leaves in a process that has not talked to hotctl yet: none of its read-only
//! pages stay in RSS after start-up, and no libgcc_s is loaded for it. Both hold while the agent
//! still answers and reloads (its code faults back in).

use hotagent_tests::*;

/// KiB of clean RSS in libhotagent.so's mappings that are not writable (code, read-only data):
/// what the agent can give back. Its relocated read-only data (RELRO) is dirty, stays, and is
/// not counted.
fn agent_read_only_rss(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let mut counted = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let (Some(first), Some(second)) = (f.next(), f.next()) else {
            continue;
        };
        if !first.ends_with(':') {
            // A mapping's header: "start-end perms offset dev inode path".
            counted = line.contains("libhotagent") && !second.contains('w');
        } else if counted && (first == "Shared_Clean:" || first == "Private_Clean:") {
            kib += second.parse::<u64>().unwrap_or(0);
        }
    }
    kib
}

#[test]
fn idle_agent_gives_back_its_read_only_pages() {
    let cfg = Config::DEFAULT;
    let mut t = Target::spawn(cfg.path("basic"));
    // `main` runs: the constructor, and so the release, is over.
    t.expect("version", 1);
    // Before sys::trim about 1.8 MiB of the agent's clean code and tables stayed mapped. The
    // I/O thread gives them back when the constructor is over, then faults some back in (each
    // fault maps its 64 KiB neighbourhood) on its way to sleep: 0.5-0.8 MiB remains, depending
    // on the code's layout. The bound is the idle budget of issue 13 (1 MiB).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut kib = agent_read_only_rss(t.pid());
    while kib > 1024 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        kib = agent_read_only_rss(t.pid());
    }
    assert!(
        kib <= 1024,
        "{kib} KiB of libhotagent.so's read-only pages in RSS while idle"
    );
    // The pages come back on use: the agent still answers and switches.
    reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    t.expect("version", 2);
    rollback(&t);
    t.expect("version", 1);
    t.finish().assert_clean();
}

#[test]
fn agent_brings_no_libgcc_s() {
    let cfg = Config::DEFAULT;
    let bare = Target::builder(cfg.path("basic")).without_agent().spawn();
    let mut t = Target::spawn(cfg.path("basic"));
    t.expect("version", 1);
    let maps = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    assert!(
        !maps(bare.pid()).contains("libgcc_s"),
        "the fixture itself loads libgcc_s: this test proves nothing with it"
    );
    assert!(
        !maps(t.pid()).contains("libgcc_s"),
        "libhotagent.so made the loader open libgcc_s.so.1"
    );
    status(&t);
    t.finish().assert_clean();
}
