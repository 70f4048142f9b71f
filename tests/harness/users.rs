//! Another user, for the tests of what other users can do: `hotagent-test`, made with `useradd`
//! the first time it is needed (CI is a fresh root machine). Only root can make it, or run
//! programs as it.

use std::process::Command;
use std::sync::OnceLock;

/// The name of the test user.
pub const TEST_USER: &str = "hotagent-test";

/// A user account: its name and ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}

/// The test user, created if missing; `None` when the tests do not run as root (a test that
/// needs it then says it skipped). Panics if `useradd` fails.
pub fn test_user() -> Option<User> {
    static USER: OnceLock<User> = OnceLock::new();
    if !is_root() {
        return None;
    }
    Some(USER.get_or_init(make_test_user).clone())
}

fn make_test_user() -> User {
    if let Some(user) = lookup(TEST_USER) {
        return user;
    }
    let out = Command::new("useradd")
        .args(["--system", "--user-group", "--no-create-home"])
        .args(["--shell", "/usr/sbin/nologin", TEST_USER])
        .output()
        .expect("run useradd");
    // Status 9: the name exists (another test process made it meanwhile).
    if !out.status.success() && out.status.code() != Some(9) {
        panic!(
            "useradd {TEST_USER} failed: {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    lookup(TEST_USER).unwrap_or_else(|| panic!("{TEST_USER} is not in /etc/passwd after useradd"))
}

/// The account `name` as `/etc/passwd` lists it.
pub fn lookup(name: &str) -> Option<User> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields[..] {
            [n, _, uid, gid, ..] if n == name => Some(User {
                name: n.to_string(),
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
            }),
            _ => None,
        }
    })
}
