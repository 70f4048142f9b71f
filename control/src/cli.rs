//! The command line.

use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};

/// Drives the hotagent inside running processes: swap a loaded library for a new build, roll back,
/// inspect.
#[derive(Debug, Parser)]
#[command(
    name = "hotctl",
    version,
    propagate_version = true,
    after_help = EXIT_STATUS
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_STATUS: &str = "EXIT STATUS:
  0  success
  1  the agent refused the request; the target runs on unchanged
  2  usage or connection problem, or a timeout before the commit (nothing changed)
  3  the change was committed, then no report came: check with `hotctl status`
  4  the target died during the request, or within the settle time after its change";

/// Options that apply to every verb, accepted before or after it.
#[derive(Debug, Args)]
pub struct Global {
    /// The target process; needed only when more than one runs the agent.
    #[arg(long, global = true, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// Print the agent's report as one JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// How long the request may take before it starts its change (default: 30 for reload, 10
    /// for rollback, 5 for status and list). Past it the agent changes nothing; see EXIT STATUS.
    #[arg(long, global = true, value_name = "SECONDS", value_parser = parse_seconds)]
    pub timeout: Option<std::time::Duration>,
    /// After a reload or rollback is reported, watch the process this long before calling it a
    /// success (`100ms`, `2s`, a bare number is seconds; default 100ms, 0 skips): a process that
    /// dies meanwhile is reported as dead (exit status 4).
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_settle)]
    pub settle: Option<std::time::Duration>,
    /// How long each hook of the patch (hotagent_prepare, _migrate, _unmigrate, _committed) may
    /// run before the reload or rollback is refused (`500ms`, `10s`; default 5s).
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_hook_timeout)]
    pub hook_timeout: Option<std::time::Duration>,
}

impl Global {
    /// The timeout the user gave, or the verb's default.
    pub fn timeout_or(&self, default: std::time::Duration) -> std::time::Duration {
        self.timeout.unwrap_or(default)
    }
}

/// Seconds, fractions allowed, more than zero and at most a day.
fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "{text} s is out of range: give more than 0 and at most 86400"
        ));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// A settle time: `N`, `Ns` or `Nms` (fractions allowed), at most a minute.
fn parse_settle(text: &str) -> Result<std::time::Duration, String> {
    parse_duration(text, 0.0, 60.0, "give 0 (no watch) up to 60s")
}

/// A hook's time limit: more than 0, at most ten minutes.
fn parse_hook_timeout(text: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(text, 0.001, 600.0, "give 1ms up to 600s")?;
    Ok(d)
}

/// `N`, `Ns` or `Nms` (fractions allowed) within `[lo, hi]` seconds.
fn parse_duration(
    text: &str,
    lo: f64,
    hi: f64,
    range: &str,
) -> Result<std::time::Duration, String> {
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else if let Some(m) = text.strip_suffix('m') {
        (m, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 100ms, 2s, 1m, 0)"))?;
    let secs = value * scale;
    if !(lo..=hi).contains(&secs) {
        return Err(format!("{text} is out of range: {range}"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Switch calls from a loaded library to a new build of it.
    Reload(ReloadArgs),
    /// Return to the previous generation.
    Rollback,
    /// Show the target, its current generation and the generations stacked so far.
    Status,
    /// List the processes of this user that run the agent.
    List,
    /// Try each candidate in turn: reload it, run CHECK (exit 0 = pass), roll back; with
    /// --keep, the first that passes stays.
    Try(TryArgs),
    /// Show the persisted patches: what later starts will apply to which executable.
    Persisted,
    /// Remove persisted patches: those whose patch path or file name is LIB, or all.
    Forget(ForgetArgs),
    /// Show every reload, rollback and revert the target's agent remembers, with its outcome.
    History,
    /// Compare two builds of a library: functions added, removed and changed (as
    /// `reload --changed-only` decides), exported data whose size changed.
    Diff(DiffArgs),
}

/// `hotctl diff OLD NEW`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The build to compare from (for instance the one that runs).
    pub old: PathBuf,
    /// The new build.
    pub new: PathBuf,
}

/// `hotctl forget LIB | --all`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The patch (its path, or its file name) whose entries to remove.
    #[arg(
        value_name = "LIB",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub lib: Option<String>,
    /// Remove every entry.
    #[arg(long)]
    pub all: bool,
}

/// `hotctl try CANDIDATE... [--keep] [--reset] [--check-timeout D] -- CHECK [ARGS...]`.
#[derive(Debug, Args)]
#[command(after_help = TRY_EXIT_STATUS)]
pub struct TryArgs {
    /// The builds to try, in order (each is reloaded exactly as `hotctl reload PATH` would).
    #[arg(value_name = "CANDIDATE", required = true)]
    pub candidates: Vec<PathBuf>,
    /// Leave the first candidate that passes in place and try no further one.
    #[arg(long)]
    pub keep: bool,
    /// After each rollback, put the replaced module's writable data back to what it held before
    /// that candidate was loaded, so one candidate's pollution cannot decide the next verdict.
    #[arg(long)]
    pub reset: bool,
    /// How long CHECK may run before it (its whole process group) is killed and the candidate
    /// fails (`300ms`, `2s`; default 60s).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_check_timeout)]
    pub check_timeout: std::time::Duration,
    /// The command that judges a candidate, after `--`. It runs with HOTAGENT_PID,
    /// HOTAGENT_GENERATION and HOTAGENT_CANDIDATE set; its output goes to hotctl's stderr.
    #[arg(last = true, required = true, value_name = "CHECK")]
    pub check: Vec<std::ffi::OsString>,
}

const TRY_EXIT_STATUS: &str = "EXIT STATUS:
  0  every candidate passed (with --keep: one passed and was kept)
  1  otherwise, or a rollback failed (the target is then left where it is)
  2  usage or connection problem";

/// A check's time limit: 1ms up to a day.
fn parse_check_timeout(text: &str) -> Result<std::time::Duration, String> {
    parse_duration(text, 0.001, 86_400.0, "give 1ms up to 86400s")
}

#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The new build of the library (relative paths are taken from hotctl's working directory).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The loaded module to replace, when it cannot be told from PATH's soname or file name.
    #[arg(long, value_name = "MODULE")]
    pub replace: Option<String>,
    /// Check and plan only: the library is loaded in the throwaway probe at most, nothing is
    /// written.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip the probe (a first load in a forked, throwaway copy of the target that turns a
    /// library crashing the loader into an error).
    #[arg(long)]
    pub no_probe: bool,
    /// Rewrite GOT and data slots only; old function entries keep their bytes (no jump at the
    /// old entry, so pointers taken earlier keep running the old code).
    #[arg(long)]
    pub got_only: bool,
    /// Let the new build run on its own, freshly initialised private data (statics, .data,
    /// .bss, thread-local) instead of sharing the running copy's: for a library that keeps no
    /// state worth keeping. Without it, a build whose private data differs is refused.
    #[arg(long)]
    pub fresh_state: bool,
    /// Switch only the functions whose code differs from the running build's (references
    /// compared by what they point at); the others keep running the old code. Private data
    /// must then match only where the switched code reaches. Needs symbols on both sides.
    #[arg(long)]
    pub changed_only: bool,
    /// Keep the new generation on probation this long (`30s`, `2m`, `0` for none; default 0):
    /// meanwhile calls into it are guarded, and a crash in its code rolls the process back at
    /// once and runs the crashed call again on the previous generation.
    #[arg(long, value_name = "DURATION", value_parser = parse_probation)]
    pub probation: Option<std::time::Duration>,
    /// Record the patch in the journal ($HOTAGENT_STATE_DIR): later starts of this executable
    /// with the same module apply it before main.
    #[arg(long)]
    pub persist: bool,
    /// With --persist: a patch that cannot be applied live (a variable that grew, private state
    /// laid out differently, no migrate hook) waits in the journal for the next start.
    #[arg(long, requires = "persist")]
    pub on_next_start: bool,
}

/// A probation: 0 (none) up to a day.
fn parse_probation(text: &str) -> Result<std::time::Duration, String> {
    parse_duration(text, 0.0, 86_400.0, "give 0 (none) up to 86400s")
}

impl Cli {
    /// Parses the process arguments, exiting with clap's message and code on a usage error.
    pub fn parse_args() -> Cli {
        let cli = Cli::parse();
        if let Err(err) = cli.validate() {
            err.exit();
        }
        cli
    }

    /// Rules clap's derive cannot state: `--pid` is global so that it may follow the verb, but
    /// `list` has no use for it, and silently ignoring it would mislead.
    fn validate(&self) -> Result<(), clap::Error> {
        if matches!(self.command, Command::List) && self.global.pid.is_some() {
            return Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                "--pid cannot be used with list, which shows every agent",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("hotctl").chain(args.iter().copied()))?;
        cli.validate()?;
        Ok(cli)
    }

    fn reload_args(cli: &Cli) -> &ReloadArgs {
        match &cli.command {
            Command::Reload(args) => args,
            other => panic!("expected reload, got {other:?}"),
        }
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pid_is_accepted_before_and_after_the_verb() {
        for args in [
            &["--pid", "42", "reload", "libfoo.so"][..],
            &["reload", "--pid", "42", "libfoo.so"][..],
            &["reload", "libfoo.so", "--pid", "42"][..],
        ] {
            let cli = parse(args).unwrap();
            assert_eq!(cli.global.pid, Some(42), "{args:?}");
            assert_eq!(reload_args(&cli).path, PathBuf::from("libfoo.so"));
        }
        assert_eq!(
            parse(&["status", "--pid", "7"]).unwrap().global.pid,
            Some(7)
        );
        assert_eq!(
            parse(&["--pid", "7", "rollback"]).unwrap().global.pid,
            Some(7)
        );
        assert_eq!(parse(&["status"]).unwrap().global.pid, None);
    }

    #[test]
    fn reload_options() {
        let cli = parse(&[
            "reload",
            "v2/libfoo.so",
            "--replace",
            "libfoo.so.1",
            "--dry-run",
        ])
        .unwrap();
        let args = reload_args(&cli);
        assert_eq!(args.path, PathBuf::from("v2/libfoo.so"));
        assert_eq!(args.replace.as_deref(), Some("libfoo.so.1"));
        assert!(args.dry_run);
        assert!(!cli.global.json);

        let cli = parse(&["reload", "libfoo.so"]).unwrap();
        let args = reload_args(&cli);
        assert_eq!(args.replace, None);
        assert!(!args.dry_run);
    }

    #[test]
    fn json_is_accepted_before_and_after_the_verb() {
        assert!(parse(&["--json", "status"]).unwrap().global.json);
        assert!(parse(&["status", "--json"]).unwrap().global.json);
        assert!(parse(&["list", "--json"]).unwrap().global.json);
        assert!(
            parse(&["reload", "x.so", "--json", "--dry-run"])
                .unwrap()
                .global
                .json
        );
        assert!(!parse(&["rollback"]).unwrap().global.json);
    }

    #[test]
    fn settle_durations() {
        let settle = |v: &str| parse(&["rollback", "--settle", v]).map(|c| c.global.settle);
        let ms = |n| Some(std::time::Duration::from_millis(n));
        assert_eq!(settle("250ms").unwrap(), ms(250));
        assert_eq!(settle("2s").unwrap(), ms(2000));
        assert_eq!(settle("0.5").unwrap(), ms(500));
        let hook =
            |v: &str| parse(&["rollback", "--hook-timeout", v]).map(|c| c.global.hook_timeout);
        assert_eq!(hook("250ms").unwrap(), ms(250));
        assert!(hook("0").is_err());
        assert_eq!(settle("0").unwrap(), ms(0));
        assert_eq!(parse(&["rollback"]).unwrap().global.settle, None);
        assert!(settle("61s").is_err());
        assert!(settle("soon").is_err());
        assert!(settle("-1").is_err());
    }

    #[test]
    fn try_arguments() {
        let cli = parse(&[
            "try", "a.so", "b.so", "--keep", "--json", "--", "sh", "-c", "x --y",
        ])
        .unwrap();
        let Command::Try(args) = &cli.command else {
            panic!("expected try")
        };
        assert_eq!(
            args.candidates,
            [PathBuf::from("a.so"), PathBuf::from("b.so")]
        );
        assert!(args.keep && !args.reset && cli.global.json);
        assert_eq!(args.check, ["sh", "-c", "x --y"]);
        assert_eq!(args.check_timeout, std::time::Duration::from_secs(60));
        let cli = parse(&[
            "try",
            "a.so",
            "--check-timeout",
            "300ms",
            "--reset",
            "--",
            "true",
        ])
        .unwrap();
        let Command::Try(args) = &cli.command else {
            panic!("expected try")
        };
        assert_eq!(args.check_timeout, std::time::Duration::from_millis(300));
        assert!(args.reset);

        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(
            kind(&["try", "--", "true"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(kind(&["try", "a.so"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            kind(&["try", "a.so", "--"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(parse(&["try", "a.so"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn usage_errors() {
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(kind(&["reload"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["--pid", "0", "status"]), ErrorKind::ValueValidation);
        assert_eq!(
            kind(&["--pid", "abc", "status"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(kind(&["--pid", "-3", "status"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["status", "--dry-run"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["list", "--pid", "3"]), ErrorKind::ArgumentConflict);
        assert_eq!(kind(&["explode"]), ErrorKind::InvalidSubcommand);
        // Whatever the kind, clap exits with 2 on all of these, as the contract wants.
        assert_eq!(parse(&["reload"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["list", "--pid", "3"]).unwrap_err().exit_code(), 2);
    }
}
