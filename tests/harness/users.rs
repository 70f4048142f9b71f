//! Another user, for tests of what other users can do to a target: `hotagent-test`, created with
//! `useradd` the first time it is needed (the tests run as root, as CI does).

use std::process::Command;
use std::sync::OnceLock;

/// The name of the other user.
pub const TEST_USER: &str = "hotagent-test";

fn id(flag: &str) -> Option<u32> {
    let out = Command::new("id").arg(flag).arg(TEST_USER).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// `(uid, gid)` of [`TEST_USER`], created if missing. Idempotent, and safe against another test
/// process creating it at the same time (a failed `useradd` is followed by a second look).
pub fn test_user() -> (u32, u32) {
    static USER: OnceLock<(u32, u32)> = OnceLock::new();
    *USER.get_or_init(|| {
        if let (Some(u), Some(g)) = (id("-u"), id("-g")) {
            return (u, g);
        }
        let made = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(TEST_USER)
            .output();
        match (id("-u"), id("-g")) {
            (Some(u), Some(g)) => (u, g),
            _ => panic!("cannot create the user {TEST_USER} (the tests run as root): {made:?}"),
        }
    })
}
