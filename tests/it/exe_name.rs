//! A program started through a symbolic link (Debian's `/usr/bin/redis-server` is a link to
//! `redis-check-rdb`) is named by the path it was started with, in status, list and reports;
//! either name selects it.

use hotagent_tests::*;

const CFG: Config = Config::DEFAULT;

#[test]
fn a_program_started_through_a_link_is_named_by_the_link() {
    let folder = scratch();
    let link = std::fs::canonicalize(folder.path())
        .unwrap()
        .join("my-server");
    let real = CFG.path("basic");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let mut t = Target::spawn(&link);
    let link_text = path_str(&link).to_string();

    assert_eq!(status(&t).exe, link_text);
    let listed = hotctl_in(t.socket_dir(), None, &["list", "--json"]);
    assert!(listed.success(), "{listed}");
    let agents: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(agents[0]["exe"], link_text.as_str(), "{listed}");

    let report = reload(&t, &CFG.path("libfoo_v2.so"), &[]);
    let modules: Vec<&str> = report
        .symbols
        .iter()
        .flat_map(|s| s.modules.iter().map(String::as_str))
        .collect();
    assert!(modules.contains(&"my-server"), "{modules:?}");
    assert!(!modules.contains(&"basic"), "{modules:?}");
    t.expect("version", 2);

    // Either name selects the executable (which is then refused: it cannot be replaced).
    let real_name = real.file_name().unwrap().to_str().unwrap();
    for name in ["my-server", real_name, link_text.as_str()] {
        let msg = expect_fail(
            &t,
            &[
                "reload",
                path_str(&CFG.path("libfoo_v3.so")),
                "--replace",
                name,
            ],
        );
        assert!(msg.contains("is the main executable"), "{name}: {msg}");
    }
}
