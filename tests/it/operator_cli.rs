//! hotctl's conventions for operators: completions and man pages generated from the CLI,
//! `--quiet`, `--verbose`, and the exit-status table that README, `--help` and the man page
//! share.

use hotagent_tests::*;
use std::process::{Command, Stdio};

const CFG: Config = Config::DEFAULT;

/// `hotctl ARGS` with no agent around.
fn plain(args: &[&str]) -> CtlOutput {
    hotctl_in(std::path::Path::new("/nonexistent-hotagent"), None, args)
}

/// README's exit-status rows: (status, meaning).
fn readme_exit_table() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme
        .find("<!-- exit-status: generated")
        .expect("README has the exit-status table");
    let end = start + readme[start..].find("<!-- exit-status end -->").unwrap();
    readme[start..end]
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            match cells[..] {
                [code, meaning] if code.parse::<u8>().is_ok() => {
                    Some((code.to_string(), meaning.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

#[test]
fn help_and_man_page_show_readmes_exit_table() {
    let rows = readme_exit_table();
    assert_eq!(rows.len(), 5, "{rows:?}");
    let help = plain(&["--help"]);
    assert!(help.success(), "{help}");
    let man = plain(&["man"]);
    assert!(man.success(), "{man}");
    assert!(man.stdout.contains(".TH hotctl 1"), "{man}");
    for (code, meaning) in rows {
        assert!(
            help.stdout.contains(&format!("  {code}  {meaning}")),
            "--help lacks {code}: {help}"
        );
        // roff escapes a few characters (`-`, quotes): compare the first words.
        let words: String = meaning.split(' ').take(3).collect::<Vec<_>>().join(" ");
        assert!(man.stdout.contains(&words), "man page lacks {code}");
    }
}

#[test]
fn man_pages_render_for_every_verb() {
    let dir = scratch();
    let out = plain(&["man", "--dir", path_str(dir.path())]);
    assert!(out.success(), "{out}");
    for verb in [
        "reload",
        "rollback",
        "status",
        "list",
        "try",
        "completions",
        "man",
    ] {
        let page = dir.path().join(format!("hotctl-{verb}.1"));
        // man(1) formats the page: it must parse and show the verb's own options.
        let shown = Command::new("man")
            .arg("-l")
            .arg(&page)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .expect("run man");
        let text = String::from_utf8_lossy(&shown.stdout);
        // man justifies lines: compare with single spaces.
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(shown.status.success(), "{verb}: {shown:?}");
        assert!(text.contains(&format!("hotctl {verb}")), "{verb}: {text}");
    }
    let reload = std::fs::read_to_string(dir.path().join("hotctl-reload.1")).unwrap();
    assert!(reload.contains("dry\\-run"), "{reload}");
}

#[test]
fn bash_completion_completes_verbs_and_options() {
    let script = plain(&["completions", "bash"]);
    assert!(script.success(), "{script}");
    let file = scratch();
    let path = file.path().join("hotctl.bash");
    std::fs::write(&path, &script.stdout).unwrap();
    // Load the script in a real bash and ask it what `hotctl rel<TAB>` and `hotctl reload --dr<TAB>`
    // complete to.
    let probe = format!(
        "source {p}; f=$(complete -p hotctl | sed -E 's/.*-F ([^ ]+).*/\\1/');
         COMP_WORDS=(hotctl rel); COMP_CWORD=1; COMP_LINE='hotctl rel'; COMP_POINT=10;
         $f hotctl rel hotctl; echo \"verbs: ${{COMPREPLY[*]}}\";
         COMP_WORDS=(hotctl reload --dr); COMP_CWORD=2; COMP_LINE='hotctl reload --dr'; COMP_POINT=18;
         $f hotctl --dr reload; echo \"options: ${{COMPREPLY[*]}}\"",
        p = path.display()
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &probe])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("verbs: reload"), "{text} {out:?}");
    assert!(text.contains("options: --dry-run"), "{text} {out:?}");
    for shell in ["zsh", "fish"] {
        let s = plain(&["completions", shell]);
        assert!(s.success() && s.stdout.contains("rollback"), "{s}");
    }
    let bad = plain(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2), "{bad}");
    assert!(bad.stderr.contains("bash, zsh, fish"), "{bad}");
}

#[test]
fn quiet_prints_only_errors() {
    let mut t = Target::spawn(CFG.path("basic"));
    let out = hotctl(&t, &["reload", "-q", path_str(&CFG.path("libfoo_v2.so"))]);
    assert!(out.success(), "{out}");
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("", ""),
        "{out}"
    );
    t.expect("version", 2);

    let out = hotctl(&t, &["--quiet", "status"]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "", "{out}");

    // A refusal: still its one line on stderr, and its exit status.
    let bad = CFG.path("libbad_undef.so");
    let out = hotctl(&t, &["reload", "-q", path_str(&bad)]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert_eq!(out.stdout, "", "{out}");
    assert_eq!(out.stderr.lines().count(), 1, "{out}");
    assert!(out.stderr.starts_with("hotctl: "), "{out}");
    t.expect("version", 2);

    let out = hotctl(&t, &["--quiet", "--json", "status"]);
    assert_eq!(out.status.code(), Some(2), "{out}");
}

#[test]
fn verbose_names_the_socket_folder_and_its_variable() {
    let t = Target::spawn(CFG.path("basic"));
    let out = hotctl(&t, &["status", "--verbose"]);
    assert!(out.success(), "{out}");
    let want = format!(
        "hotctl: socket folder {} (HOTAGENT_SOCKET_DIR)",
        t.socket_dir().display()
    );
    assert!(out.stderr.contains(&want), "{out}");
    assert!(out.stdout.contains(&t.pid().to_string()), "{out}");
}
