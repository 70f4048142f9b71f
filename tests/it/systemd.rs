//! contrib/systemd/hotagent.conf: systemd accepts it (`systemd-analyze verify` on a unit that
//! uses it), and the folders and variables it sets are ones the agent and hotctl work with.

use hotagent_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const CFG: Config = Config::DEFAULT;

fn drop_in() -> String {
    std::fs::read_to_string(repo_root().join("contrib/systemd/hotagent.conf")).unwrap()
}

/// `systemd-analyze verify` on `demo.service` (running a fixture) with `conf` as its drop-in:
/// its exit status and what it printed.
fn verify(conf: &str) -> (bool, String) {
    let units = scratch();
    let unit = units.path().join("demo.service");
    std::fs::write(
        &unit,
        format!(
            "[Unit]\nDescription=a fixture under the agent\n[Service]\nExecStart={}\n",
            CFG.path("basic").display()
        ),
    )
    .unwrap();
    let d = units.path().join("demo.service.d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("hotagent.conf"), conf).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (install systemd; .ci/run does)");
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), said)
}

#[test]
fn drop_in_passes_systemd_analyze_verify() {
    let (ok, said) = verify(&drop_in());
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    // The check has teeth: a misspelt key is reported.
    let broken = drop_in().replace("RuntimeDirectoryMode=", "RuntimeDirectoryMod=");
    let (_, said) = verify(&broken);
    assert!(said.contains("RuntimeDirectoryMod"), "{said}");
}

/// The drop-in's `Key=value` lines of [Service], in order.
fn settings(conf: &str) -> Vec<(String, String)> {
    conf.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn drop_in_folders_and_variables_reach_the_agent() {
    // Do by hand what systemd does for a system service named demo: %t is /run, %S /var/lib,
    // %N the unit's name; the folders are made with the modes the drop-in asks for.
    let root = scratch();
    let subst = |v: &str| {
        v.replace("%t", &root.path().join("run").to_string_lossy())
            .replace("%S", &root.path().join("var/lib").to_string_lossy())
            .replace("%N", "demo")
    };
    let mut env = Vec::new();
    let mode = |key: &str, settings: &[(String, String)]| {
        settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| u32::from_str_radix(v, 8).unwrap())
            .unwrap_or(0o755)
    };
    let s = settings(&drop_in());
    for (key, value) in &s {
        match key.as_str() {
            "Environment" => {
                let (name, v) = value.split_once('=').unwrap();
                env.push((name.to_string(), subst(v)));
            }
            "RuntimeDirectory" | "StateDirectory" => {
                let base = if key == "RuntimeDirectory" {
                    "run"
                } else {
                    "var/lib"
                };
                let dir = root.path().join(base).join(subst(value));
                std::fs::create_dir_all(&dir).unwrap();
                let m = mode(&format!("{key}Mode"), &s);
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m)).unwrap();
            }
            _ => {}
        }
    }
    let get = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the drop-in sets no {name}"))
    };
    assert!(get("LD_PRELOAD").ends_with("/libhotagent.so"));
    let socket_dir = get("HOTAGENT_SOCKET_DIR");
    let state_dir = get("HOTAGENT_STATE_DIR");
    assert!(
        Path::new(&state_dir).is_dir(),
        "{state_dir} is not made by StateDirectory="
    );

    // The installed path is not there in the tests: the built agent stands in for it.
    let mut t = Target::builder(CFG.path("basic"))
        .socket_dir(&socket_dir)
        .env("HOTAGENT_STATE_DIR", &state_dir)
        .spawn();
    let out = hotctl_in(
        Path::new(&socket_dir),
        None,
        &["reload", "--persist", path_str(&CFG.path("libfoo_v2.so"))],
    );
    assert!(out.success(), "{out}");
    t.expect("version", 2);
    let journal: Vec<_> = std::fs::read_dir(&state_dir).unwrap().flatten().collect();
    assert!(!journal.is_empty(), "nothing persisted in {state_dir}");
    t.finish();
}
