//! Who runs a process, by name: the owner of `/proc/PID`, named from `/etc/passwd` (no NSS
//! lookup; a user known only to LDAP shows as its number).

use std::os::unix::fs::MetadataExt;

/// The real owner of process `pid`, if it still runs.
pub fn uid_of(pid: u32) -> Option<u32> {
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// The user name of `uid`, or the number when `/etc/passwd` does not name it.
pub fn name_of(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    lookup(&passwd, uid).unwrap_or_else(|| uid.to_string())
}

fn lookup(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_passwd_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nbroken\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\n";
        assert_eq!(lookup(passwd, 0).as_deref(), Some("root"));
        assert_eq!(lookup(passwd, 33).as_deref(), Some("www-data"));
        assert_eq!(lookup(passwd, 7), None);
        assert_eq!(name_of(4_000_000_000), "4000000000");
    }
}
