//! Why a command-line value was refused; clap prints the message after the flag's name.

/// A flag's value that does not parse or is out of its range (`text` is what the user typed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{text:?} is not a count or a percentage (e.g. 0, 3, 10%)")]
    NotCount { text: String },
    #[error("{text} is out of range: give 0% up to 100%")]
    PercentOutOfRange { text: String },
    #[error("{text:?} is not a number of seconds")]
    NotSeconds { text: String },
    #[error("{text} s is out of range: give more than 0 and at most 86400")]
    SecondsOutOfRange { text: String },
    #[error("{text:?} is not a duration (e.g. 100ms, 2s, 1m, 0)")]
    NotDuration { text: String },
    /// `range` says what the flag takes, e.g. "give 0 up to 60s".
    #[error("{text} is out of range: {range}")]
    OutOfRange { text: String, range: &'static str },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;
    use std::error::Error;

    fn refusal(args: &[&str]) -> (String, Option<ValueError>) {
        let err = Cli::try_parse_from(std::iter::once("hotctl").chain(args.iter().copied()))
            .expect_err("the value is refused");
        let cause = err
            .source()
            .and_then(|s| s.downcast_ref::<ValueError>())
            .cloned();
        (err.to_string(), cause)
    }

    /// clap keeps the typed cause, so a caller tells "not a duration" from "out of range"
    /// without reading the words, and the words clap prints are the ones users saw before.
    #[test]
    fn clap_carries_the_typed_cause_and_its_words() {
        let (text, cause) = refusal(&["--settle", "soon", "status"]);
        assert_eq!(
            cause,
            Some(ValueError::NotDuration {
                text: "soon".into()
            })
        );
        assert!(
            text.contains("\"soon\" is not a duration (e.g. 100ms, 2s, 1m, 0)"),
            "{text}"
        );

        let (text, cause) = refusal(&["--settle", "2m", "status"]);
        assert_eq!(
            cause,
            Some(ValueError::OutOfRange {
                text: "2m".into(),
                range: "give 0 (no watch) up to 60s"
            })
        );
        assert!(
            text.contains("2m is out of range: give 0 (no watch) up to 60s"),
            "{text}"
        );

        let (_, cause) = refusal(&["--timeout", "0", "status"]);
        assert_eq!(
            cause,
            Some(ValueError::SecondsOutOfRange { text: "0".into() })
        );
        let (_, cause) = refusal(&["--timeout", "x", "status"]);
        assert_eq!(cause, Some(ValueError::NotSeconds { text: "x".into() }));
    }
}
