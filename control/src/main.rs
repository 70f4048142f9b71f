//! hotctl: drives the hotagent inside running processes.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::client::{AgentError, ExchangeError};

mod check;
mod cli;
mod client;
mod clock;
mod death;
mod diff;
mod discover;
mod docs_gen;
mod elf_ready;
mod errors;
mod exit_status;
mod fleet;
mod history;
mod list;
mod output;
mod passfd;
mod persisted;
mod places;
mod procfs;
mod purge;
mod quick_connect;
mod reload;
mod render;
mod rollback;
mod status;
mod summary;
#[cfg(test)]
mod testing;
mod trust;
mod try_verb;
mod users;
mod value_error;
mod watch;
mod who;

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    let mut error_sink = match output::setup(cli.global.quiet) {
        Ok(sink) => sink,
        Err(e) => {
            eprintln!("hotctl: cannot silence the output for --quiet: {e}");
            return ExitCode::from(exit_status::NO_ANSWER);
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if is_broken_pipe(&err) {
                // The reader went away (`hotctl list | head`): not worth a complaint.
                return ExitCode::SUCCESS;
            }
            let message = errors::in_words(&one_line(&format!("{err:#}")));
            // A verb that already printed its document (try, many processes) said it there.
            if cli.global.json && !output::stdout_used() {
                let doc = errors::to_json(&err, &message);
                let mut out = io::stdout().lock();
                let _ = render::json(&mut out, &doc).and_then(|()| out.flush());
            }
            error_sink.write_line(&format!("hotctl: {message}"));
            ExitCode::from(exit_code(&err))
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let dir = discover::socket_dir();
    let mut out = output::Counted(io::stdout().lock());
    if cli.global.verbose {
        eprintln!("{}", output::describe_socket_dir(&dir));
    }
    match &cli.command {
        Command::Reload(args) => reload::run(&dir, &cli.global, &cli.pids.pids, args, &mut out)?,
        Command::Rollback(select) => {
            rollback::run(&dir, &cli.global, &cli.pids.pids, select, &mut out)?
        }
        Command::Status(select) => {
            status::run(&dir, &cli.global, &cli.pids.pids, select, &mut out)?
        }
        Command::List => list::run(&dir, &cli.global, &mut out)?,
        Command::Try(args) => try_verb::run(&dir, &cli.global, args, &mut out)?,
        Command::Persisted => persisted::list(&cli.global, &mut out)?,
        Command::Forget(args) => persisted::forget(args, &mut out)?,
        Command::Watch(args) => watch::run(&dir, &cli.global, &cli.pids.pids, args, &mut out)?,
        Command::Completions(args) => docs_gen::completions(args.shell, &mut out),
        Command::Man(args) => docs_gen::man(args.dir.as_deref(), &mut out)?,
        Command::History => history::run(&dir, &cli.global, &mut out)?,
        Command::Diff(args) => diff::run(&cli.global, args, &mut out)?,
        Command::Purge(args) => purge::run(&dir, &cli.global, args.generation, &mut out)?,
    }
    out.flush()?;
    Ok(())
}

/// 1 when the agent refused the request, 2 when hotctl could not get an answer at all (usage,
/// discovery, connection), matching clap's 2 for usage errors, 3 when the agent was told to go
/// ahead with a change and then fell silent: whether it happened is unknown, 4 when the target
/// died during the request or right after its change.
fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(fleet) = err.downcast_ref::<fleet::FleetFailed>() {
        fleet.exit
    } else if err.downcast_ref::<AgentError>().is_some()
        || err.downcast_ref::<try_verb::TryError>().is_some()
    {
        exit_status::REFUSED
    } else if matches!(
        err.downcast_ref::<ExchangeError>(),
        Some(ExchangeError::Unknown { .. })
    ) {
        exit_status::UNKNOWN
    } else if matches!(
        err.downcast_ref::<ExchangeError>(),
        Some(ExchangeError::Died { .. })
    ) {
        exit_status::DIED
    } else {
        exit_status::NO_ANSWER
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// Scripts read the failure as a single `hotctl: ...` line, whatever an agent's message holds.
fn one_line(message: &str) -> String {
    let parts: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotagent_protocol::{ErrorCode, ErrorReply};

    #[test]
    fn exit_codes() {
        let refused = AgentError(ErrorReply {
            code: ErrorCode::BadElf,
            message: "not ELF".into(),
        });
        assert_eq!(exit_code(&anyhow::Error::new(refused)), 1);
        assert_eq!(exit_code(&anyhow::anyhow!("no hotagent process found")), 2);
        let io = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(exit_code(&anyhow::Error::new(io)), 2);
    }

    #[test]
    fn broken_pipe_is_recognised() {
        assert!(is_broken_pipe(
            &io::Error::from(io::ErrorKind::BrokenPipe).into()
        ));
        assert!(!is_broken_pipe(
            &io::Error::from(io::ErrorKind::NotFound).into()
        ));
    }

    #[test]
    fn messages_fit_one_line() {
        assert_eq!(
            one_line("dlopen failed:\n  undefined symbol: foo\n"),
            "dlopen failed: undefined symbol: foo"
        );
        assert_eq!(one_line("plain"), "plain");
    }
}
