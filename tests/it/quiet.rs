//! The agent never writes to the target's stdout or stderr unless HOTAGENT_LOG asks: not while
//! starting, reloading, rolling back, refusing bad input or answering garbage.

use hotagent_tests::protocol::Request;
use hotagent_tests::*;

#[test]
fn agent_is_silent_through_a_normal_cycle() {
    let cfg = Config::DEFAULT;
    let mut t = Target::spawn(cfg.path("basic"));
    t.expect("version", 1);
    reload(&t, &cfg.path("libfoo_v2.so"), &["--dry-run"]);
    reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    t.expect("version", 2);
    t.expect("late", 22);
    reload(&t, &cfg.path("libfoo_v3.so"), &[]);
    t.expect("version", 3);
    status(&t);
    assert!(hotctl(&t, &["status"]).success());
    rollback(&t);
    rollback(&t);
    t.expect("version", 1);
    // Failures are reported to the client only.
    expect_fail(&t, &["rollback"]);
    expect_fail(&t, &["reload", cfg.path("libnothing.so").to_str().unwrap()]);
    expect_fail(
        &t,
        &["reload", cfg.path("libbad_undef.so").to_str().unwrap()],
    );
    let _ = raw_exchange(&t, b"{\"op\":\"explode\"}\n");
    let _ = raw_exchange(&t, b"not json\n");
    let _ = raw_request(&t, &Request::status());
    t.expect("version", 1);

    t.finish().assert_clean();
}

#[test]
fn agent_is_silent_in_a_cpp_and_a_threaded_target() {
    let cfg = Config::DEFAULT;
    let mut t = Target::spawn(cfg.path("cpp"));
    t.expect("make", 0);
    reload(&t, &cfg.path("libshape_v2.so"), &[]);
    t.expect("make", 1);
    rollback(&t);
    t.finish().assert_clean();

    let t = Target::builder(cfg.path("threads")).arg("2").spawn();
    for _ in 0..5 {
        reload(&t, &cfg.path("libfoo_v2.so"), &[]);
        rollback(&t);
    }
    t.finish().assert_clean();
}

#[test]
fn hotagent_log_is_obeyed() {
    let cfg = Config::DEFAULT;
    // Asked for: the log goes to the target's stderr.
    let mut t = Target::builder(cfg.path("basic"))
        .env("HOTAGENT_LOG", "debug")
        .spawn();
    reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    t.expect("version", 2);
    rollback(&t);
    let done = t.finish();
    assert!(done.status.success());
    assert!(
        done.extra_stdout.is_empty(),
        "the log never goes to stdout: {:?}",
        done.extra_stdout
    );
    assert!(
        !done.stderr.is_empty(),
        "HOTAGENT_LOG=debug should log something on stderr"
    );

    // Sent to a file: the target's stderr stays clean.
    let dir = scratch();
    let log = dir.path().join("agent.log");
    let mut t = Target::builder(cfg.path("basic"))
        .env("HOTAGENT_LOG", format!("debug,file={}", log.display()))
        .spawn();
    reload(&t, &cfg.path("libfoo_v2.so"), &[]);
    t.expect("version", 2);
    t.finish().assert_clean();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.is_empty(), "nothing logged to {}", log.display());
}
