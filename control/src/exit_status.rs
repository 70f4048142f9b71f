//! hotctl's exit statuses: one definition, rendered into `--help`, the man page and README's
//! table (a unit test keeps README equal to it).

/// Every status hotctl exits with, and what it means for the target.
pub const TABLE: &[(u8, &str)] = &[
    (SUCCESS, "success"),
    (
        REFUSED,
        "the agent refused the request; the target runs on unchanged",
    ),
    (
        NO_ANSWER,
        "usage or connection problem, or a timeout before the commit (nothing changed)",
    ),
    (
        UNKNOWN,
        "the change was committed, then no report came: check with `hotctl status`",
    ),
    (
        DIED,
        "the target died during the request, or within the settle time after its change",
    ),
];

pub const SUCCESS: u8 = 0;
pub const REFUSED: u8 = 1;
/// Also clap's status for a usage error.
pub const NO_ANSWER: u8 = 2;
pub const UNKNOWN: u8 = 3;
pub const DIED: u8 = 4;

/// The `EXIT STATUS:` block of `hotctl --help`.
pub fn help_text() -> String {
    let mut text = String::from("EXIT STATUS:");
    for (code, meaning) in TABLE {
        text.push_str(&format!("\n  {code}  {meaning}"));
    }
    text
}

/// The table as README shows it (Markdown); README is checked against it.
#[cfg(test)]
pub fn markdown() -> String {
    let mut text = String::from("| Status | Meaning |\n|---|---|\n");
    for (code, meaning) in TABLE {
        text.push_str(&format!("| {code} | {meaning} |\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEGIN: &str = "<!-- exit-status: generated from control/src/exit_status.rs -->\n";
    const END: &str = "<!-- exit-status end -->";

    #[test]
    fn readme_shows_this_table() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find(BEGIN)
            .expect("README.md has the exit-status markers")
            + BEGIN.len();
        let end = start + readme[start..].find(END).expect("end marker");
        assert_eq!(
            &readme[start..end],
            markdown(),
            "README's exit-status table differs from control/src/exit_status.rs: paste markdown()"
        );
    }

    #[test]
    fn codes_are_distinct_and_in_order() {
        let codes: Vec<u8> = TABLE.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4]);
    }
}
