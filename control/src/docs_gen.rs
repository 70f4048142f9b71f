//! `hotctl completions SHELL` and `hotctl man`: both generated from the command-line definition,
//! so they cannot drift from it.

use std::io::{self, Write};
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, CompletionShell};

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: CompletionShell, out: &mut dyn Write) {
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "hotctl", out);
}

/// `hotctl.1` to `out`; with `dir`, `hotctl.1` and one `hotctl-VERB.1` a verb written there.
pub fn man(dir: Option<&Path>, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = Cli::command();
    cmd.build();
    let Some(dir) = dir else {
        return clap_mangen::Man::new(cmd).render(out);
    };
    std::fs::create_dir_all(dir)?;
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(dir.join("hotctl.1"), page)?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        // build() named each verb's page `hotctl-VERB` and its synopsis `hotctl VERB`.
        let name = sub
            .get_display_name()
            .map_or_else(|| format!("hotctl-{}", sub.get_name()), str::to_string);
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.clone()).render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_every_verb() {
        for shell in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            for verb in ["reload", "rollback", "status", "completions", "man"] {
                assert!(text.contains(verb), "{shell:?}: no {verb}");
            }
        }
    }

    #[test]
    fn man_page_holds_the_exit_status_table() {
        let mut out = Vec::new();
        man(None, &mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH hotctl"),
            "{page}"
        );
        assert!(page.contains("EXIT STATUS"), "{page}");
        let dir = tempfile::tempdir().unwrap();
        man(Some(dir.path()), &mut io::sink()).unwrap();
        for page in ["hotctl.1", "hotctl-reload.1", "hotctl-man.1"] {
            assert!(dir.path().join(page).is_file(), "no {page}");
        }
    }
}
