//! The command line.

use std::path::PathBuf;

use crate::value_error::ValueError;
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};

/// Drives the hotagent inside running processes: swap a loaded library for a new build, roll back,
/// inspect.
#[derive(Debug, Parser)]
#[command(
    name = "hotctl",
    version,
    propagate_version = true,
    after_help = crate::exit_status::help_text()
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(flatten)]
    pub pids: Pids,
    #[command(subcommand)]
    pub command: Command,
}

/// Options that apply to every verb, accepted before or after it.
#[derive(Debug, Args)]
pub struct Global {
    /// The one `--pid` given (see [`Pids`]); None with none or several.
    #[arg(skip)]
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
    /// Print nothing but errors (one line on stderr); the exit status tells the rest.
    #[arg(long, short = 'q', global = true, conflicts_with_all = ["verbose", "json"])]
    pub quiet: bool,
    /// Say more: where hotctl looks for agents, and per-symbol detail in reports.
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,
}

/// `--pid`, kept apart from [`Global`] because it may be repeated: the verbs that act on one
/// process read `Global::pid`, filled in when exactly one was given.
#[derive(Debug, Args)]
pub struct Pids {
    /// The target process; needed only when more than one runs the agent. reload, rollback and
    /// status take it more than once, to act on each of those processes.
    #[arg(long = "pid", global = true, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,
}

/// Which processes reload, rollback and status act on, besides `--pid`.
#[derive(Debug, Args, Clone, Default)]
pub struct Select {
    /// Every process of this executable: its path or file name (as /proc/PID/exe names it, or
    /// as it was started).
    #[arg(long, value_name = "NAME|PATH", conflicts_with = "all")]
    pub exe: Option<String>,
    /// Every agent found (reload: the processes without the replaced module are skipped).
    #[arg(long)]
    pub all: bool,
    /// With several processes selected: how many are worked on at once.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub parallel: u32,
}

/// How a reload of several processes proceeds.
#[derive(Debug, Args, Clone, Default)]
pub struct Rollout {
    /// Switch this many processes first and wait --bake (and a --probation to end) before the
    /// rest; a canary that fails stops the rollout.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub canary: Option<u32>,
    /// How long the canaries run before the rest is switched (`200ms`, `30s`, `5m`; default 0).
    #[arg(long, value_name = "DURATION", requires = "canary", value_parser = parse_bake)]
    pub bake: Option<std::time::Duration>,
    /// Stop starting processes once more than K (or P% of those selected) have failed.
    #[arg(long, value_name = "K|P%", value_parser = parse_max_fail)]
    pub max_fail: Option<MaxFail>,
    /// If any process fails, roll back every process already switched (stops at the first
    /// failure).
    #[arg(long)]
    pub all_or_nothing: bool,
}

/// `--max-fail`: a number of processes, or a share of those selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxFail {
    Count(u32),
    Percent(u32),
}

impl MaxFail {
    /// How many failures are tolerated among `selected` processes.
    pub fn limit(self, selected: usize) -> usize {
        match self {
            MaxFail::Count(k) => k as usize,
            MaxFail::Percent(p) => selected * p as usize / 100,
        }
    }
}

fn parse_max_fail(text: &str) -> Result<MaxFail, ValueError> {
    let bad = || ValueError::NotCount { text: text.into() };
    match text.strip_suffix('%') {
        Some(p) => match p.trim().parse::<u32>() {
            Ok(p) if p <= 100 => Ok(MaxFail::Percent(p)),
            Ok(_) => Err(ValueError::PercentOutOfRange { text: text.into() }),
            Err(_) => Err(bad()),
        },
        None => text.trim().parse().map(MaxFail::Count).map_err(|_| bad()),
    }
}

/// A bake: 0 up to a day.
fn parse_bake(text: &str) -> Result<std::time::Duration, ValueError> {
    parse_duration(text, 0.0, 86_400.0, "give 0 up to 86400s")
}

impl Global {
    /// The timeout the user gave, or the verb's default.
    pub fn timeout_or(&self, default: std::time::Duration) -> std::time::Duration {
        self.timeout.unwrap_or(default)
    }
}

/// Seconds, fractions allowed, more than zero and at most a day.
fn parse_seconds(text: &str) -> Result<std::time::Duration, ValueError> {
    let secs: f64 = text
        .parse()
        .map_err(|_| ValueError::NotSeconds { text: text.into() })?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(ValueError::SecondsOutOfRange { text: text.into() });
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// A settle time: `N`, `Ns` or `Nms` (fractions allowed), at most a minute.
fn parse_settle(text: &str) -> Result<std::time::Duration, ValueError> {
    parse_duration(text, 0.0, 60.0, "give 0 (no watch) up to 60s")
}

/// A hook's time limit: more than 0, at most ten minutes.
fn parse_hook_timeout(text: &str) -> Result<std::time::Duration, ValueError> {
    let d = parse_duration(text, 0.001, 600.0, "give 1ms up to 600s")?;
    Ok(d)
}

/// `N`, `Ns` or `Nms` (fractions allowed) within `[lo, hi]` seconds.
fn parse_duration(
    text: &str,
    lo: f64,
    hi: f64,
    range: &'static str,
) -> Result<std::time::Duration, ValueError> {
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
        .map_err(|_| ValueError::NotDuration { text: text.into() })?;
    let secs = value * scale;
    if !(lo..=hi).contains(&secs) {
        return Err(ValueError::OutOfRange {
            text: text.into(),
            range,
        });
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Switch calls from a loaded library to a new build of it.
    Reload(ReloadArgs),
    /// Return to the previous generation.
    Rollback(Select),
    /// Show the target, its current generation and the generations stacked so far.
    Status(Select),
    /// List the processes of this user that run the agent.
    List,
    /// Try each candidate in turn: reload it, run CHECK (exit 0 = pass), roll back; with
    /// --keep, the first that passes stays.
    Try(TryArgs),
    /// Show the persisted patches: what later starts will apply to which executable.
    Persisted,
    /// Remove persisted patches: those whose patch path or file name is LIB, or all.
    Forget(ForgetArgs),
    /// Watch library files and reload each complete rebuild (one line per reload or refusal);
    /// Ctrl-C or SIGTERM ends it (exit 0).
    Watch(WatchArgs),
    /// Print a completion script for SHELL on stdout (e.g. `hotctl completions bash >
    /// /etc/bash_completion.d/hotctl`).
    Completions(CompletionsArgs),
    /// Print the manual page (roff) on stdout, or write one page per verb into DIR.
    Man(ManArgs),
    /// Show every reload, rollback and revert the target's agent remembers, with its outcome.
    History,
    /// Compare two builds of a library: functions added, removed and changed (as
    /// `reload --changed-only` decides), exported data whose size changed.
    Diff(DiffArgs),
    /// Unload retired generation GEN (rolled back, no longer on the stack); refused while a
    /// slot, symbol-table entry, entry jump or thread still leads into it. A function pointer the
    /// program holds cannot be seen: you vouch for those.
    Purge(PurgeArgs),
}

/// `hotctl purge GEN`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The retired generation to unload.
    pub generation: u32,
}

/// `hotctl diff OLD NEW`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The build to compare from (for instance the one that runs).
    pub old: PathBuf,
    /// The new build.
    pub new: PathBuf,
}

/// `hotctl watch [--debounce D] PATH...`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The library files to watch (their folders must exist; the files may appear later). Each
    /// is reloaded as `hotctl reload PATH` would, once a rebuild is complete.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// How long a closed file must stay unchanged (size and time) before it is loaded
    /// (`200ms`, `1s`; default 200ms).
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_debounce)]
    pub debounce: std::time::Duration,
    #[command(flatten)]
    pub select: Select,
}

/// A quiet period: 0 up to a minute.
fn parse_debounce(text: &str) -> Result<std::time::Duration, ValueError> {
    parse_duration(text, 0.0, 60.0, "give 0 up to 60s")
}

/// `hotctl completions SHELL`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: CompletionShell,
}

/// The shells `hotctl completions` writes for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// `hotctl man [--dir DIR]`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write hotctl.1 and hotctl-VERB.1 into DIR (created if missing) instead.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
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
fn parse_check_timeout(text: &str) -> Result<std::time::Duration, ValueError> {
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
    /// Reload even when PATH's bytes are those the current generation already runs (without
    /// it, such a reload changes nothing and says so).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub select: Select,
    #[command(flatten)]
    pub rollout: Rollout,
}

/// A probation: 0 (none) up to a day.
fn parse_probation(text: &str) -> Result<std::time::Duration, ValueError> {
    parse_duration(text, 0.0, 86_400.0, "give 0 (none) up to 86400s")
}

impl Cli {
    /// Parses the process arguments, exiting with clap's message and code on a usage error.
    pub fn parse_args() -> Cli {
        let cli = Cli::parse().with_single_pid();
        if let Err(err) = cli.validate() {
            err.exit();
        }
        cli
    }

    /// Fills `Global::pid` when exactly one `--pid` was given.
    fn with_single_pid(mut self) -> Cli {
        if let [pid] = self.pids.pids[..] {
            self.global.pid = Some(pid);
        }
        self
    }

    /// The selectors of the verbs that act on several processes.
    pub fn select(&self) -> Option<&Select> {
        match &self.command {
            Command::Reload(args) => Some(&args.select),
            Command::Rollback(select) | Command::Status(select) => Some(select),
            Command::Watch(args) => Some(&args.select),
            _ => None,
        }
    }

    /// Rules clap's derive cannot state: `--pid` is global so that it may follow the verb, but
    /// `list` has no use for it, and silently ignoring it would mislead; only the verbs with
    /// selectors take several, and none takes `--pid` with `--exe` or `--all`.
    fn validate(&self) -> Result<(), clap::Error> {
        let conflict = |msg: &str| Err(Cli::command().error(ErrorKind::ArgumentConflict, msg));
        if matches!(self.command, Command::List) && !self.pids.pids.is_empty() {
            return conflict("--pid cannot be used with list, which shows every agent");
        }
        match self.select() {
            None if self.pids.pids.len() > 1 => {
                conflict("--pid may be repeated only with reload, rollback, status and watch")
            }
            Some(s) if (s.all || s.exe.is_some()) && !self.pids.pids.is_empty() => {
                conflict("--pid cannot be used with --all or --exe: choose one way to select")
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("hotctl").chain(args.iter().copied()))?
            .with_single_pid();
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

    #[test]
    fn selectors() {
        let cli = parse(&["reload", "x.so", "--pid", "3", "--pid", "4"]).unwrap();
        assert_eq!(cli.pids.pids, [3, 4]);
        assert_eq!(cli.global.pid, None);
        let cli = parse(&["status", "--exe", "basic", "--parallel", "2"]).unwrap();
        let select = cli.select().unwrap();
        assert_eq!(select.exe.as_deref(), Some("basic"));
        assert_eq!(select.parallel, 2);
        assert!(parse(&["rollback", "--all"]).unwrap().select().unwrap().all);
        let cli = parse(&[
            "reload",
            "x.so",
            "--all",
            "--canary",
            "1",
            "--bake",
            "200ms",
            "--max-fail",
            "10%",
        ])
        .unwrap();
        let rollout = &reload_args(&cli).rollout;
        assert_eq!(rollout.canary, Some(1));
        assert_eq!(rollout.bake, Some(std::time::Duration::from_millis(200)));
        assert_eq!(rollout.max_fail, Some(MaxFail::Percent(10)));
        assert_eq!(MaxFail::Percent(10).limit(25), 2);
        assert_eq!(MaxFail::Count(0).limit(25), 0);

        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(
            kind(&["try", "a.so", "--pid", "1", "--pid", "2", "--", "true"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["status", "--all", "--pid", "2"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["status", "--all", "--exe", "x"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["reload", "x.so", "--bake", "1s"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["reload", "x.so", "--max-fail", "lots"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["reload", "x.so", "--max-fail", "101%"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["status", "--parallel", "0"]),
            ErrorKind::ValueValidation
        );
    }
}
