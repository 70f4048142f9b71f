//! `hotctl reload PATH`: switch a loaded library to a new build.

use std::env;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hotagent_protocol::{ReloadReport, ReloadRequest, Request, Response};

use crate::cli::{Global, ReloadArgs};
use crate::client::{self, Extras, OnReport, Target, DEFAULT_SETTLE, RELOAD_TIMEOUT};
use crate::fleet::{self, Selection};
use crate::passfd;
use crate::render;

pub fn run(
    dir: &Path,
    global: &Global,
    pids: &[u32],
    args: &ReloadArgs,
    out: &mut dyn Write,
) -> Result<()> {
    let request = request(args)?;
    let target = match fleet::select(dir, global.pid, pids, &args.select)? {
        Selection::One(target) => target,
        Selection::Many(many) => {
            return fleet::reload(
                &many,
                global,
                &args.select,
                &args.rollout,
                args.probation,
                request,
                out,
            )
        }
    };
    let report = exchange(&target, global, request)?;
    render::report(out, global.json, &report, |out, r| {
        human(out, r, global.verbose)
    })
}

/// The request `hotctl reload` sends for `args` (`hotctl try` sends the same, per candidate).
pub fn request(args: &ReloadArgs) -> Result<ReloadRequest> {
    Ok(ReloadRequest {
        path: absolute_path(&args.path)?,
        replace: args.replace.clone(),
        dry_run: args.dry_run,
        no_probe: args.no_probe,
        got_only: args.got_only,
        fresh_state: args.fresh_state,
        changed_only: args.changed_only,
        checkpoint: false,
        deadline_ms: None,
        confirm: false,
        settle_ms: None,
        hook_timeout_ms: None,
        probation_ms: args
            .probation
            .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64),
        persist: args.persist,
        on_next_start: args.on_next_start,
        force: args.force,
    })
}

/// Sends `request` to `target` with the global options' deadline, settle time and hook limit,
/// the patch file opened here and passed along, and returns the agent's report.
pub fn exchange(target: &Target, global: &Global, request: ReloadRequest) -> Result<ReloadReport> {
    exchange_telling(target, global, request, None)
}

/// [`exchange`], telling `on_report` when the change is reported (see [`Extras::on_report`]).
pub fn exchange_telling(
    target: &Target,
    global: &Global,
    request: ReloadRequest,
    on_report: Option<OnReport<'_>>,
) -> Result<ReloadReport> {
    let timeout = global.timeout_or(RELOAD_TIMEOUT);
    let settle = global.settle.unwrap_or(DEFAULT_SETTLE);
    // Opened here, as the operator: a target that dropped its privileges may not open it itself.
    let file = passfd::open_patch(Path::new(&request.path));
    let request = client::with_settle(
        client::with_deadline(Request::Reload(request), timeout),
        settle,
    );
    let request = client::with_hook_timeout(request, global.hook_timeout);
    let extras = Extras {
        fd: file.as_ref().map(AsFd::as_fd),
        settle,
        on_report,
    };
    match target.exchange_with(&request, timeout, &extras)? {
        Response::Reload(report) => Ok(report),
        other => Err(client::unexpected(other, "reload")),
    }
}

/// The agent runs in another working directory, so it must get an absolute path; and it follows
/// no symbolic link in the path's last part (one swapped in could lead it anywhere), so links are
/// resolved here, as the user sees the file system (`libfoo.so -> libfoo.so.1.2` is the common
/// case). Nothing more is checked here: a path that does not resolve is sent as given, made
/// absolute, and the agent inspects the file and is the one place its problems are reported from.
fn absolute_path(path: &Path) -> Result<String> {
    let absolute = if let Ok(real) = std::fs::canonicalize(path) {
        real
    } else if path.is_absolute() {
        absolute_in(Path::new("/"), path)
    } else {
        let cwd = env::current_dir().context("cannot resolve PATH: no current directory")?;
        absolute_in(&cwd, path)
    };
    match absolute.into_os_string().into_string() {
        Ok(text) => Ok(text),
        Err(_) => bail!("{}: the path is not valid UTF-8", path.display()),
    }
}

/// `path` taken from `cwd`, with `.` components and doubled slashes dropped. `..` and symlinks are
/// kept as they are: resolving them lexically could name a different file.
fn absolute_in(cwd: &Path, path: &Path) -> PathBuf {
    cwd.join(path).components().collect()
}

/// The report in words: a summary of its symbols, or (`verbose`) one line per symbol.
fn human(out: &mut dyn Write, report: &ReloadReport, verbose: bool) -> std::io::Result<()> {
    if report.unchanged {
        return unchanged(out, report);
    }
    let summary = format!(
        "{}, {}, {}",
        render::count(report.symbols.len(), "symbol"),
        render::count(report.slots, "slot"),
        render::micros(report.elapsed_us)
    );
    if report.deferred {
        writeln!(
            out,
            "deferred: {} not replaced now (generation {} stays); {} applies at the next start",
            report.module, report.generation, report.path
        )?;
        writeln!(
            out,
            "recorded in {}",
            report.persisted.as_deref().unwrap_or("?")
        )?;
        return render::warnings(out, &report.warnings);
    }
    if report.dry_run {
        writeln!(
            out,
            "dry run: would make generation {}: {} replaced by {} — {summary}; nothing written",
            report.generation, report.module, report.path
        )?;
    } else {
        writeln!(
            out,
            "generation {}: {} replaced by {} — {summary}",
            report.generation, report.module, report.path
        )?;
    }
    match verbose {
        true => render::symbols(out, &report.symbols)?,
        false => crate::summary::write(out, "  ", &report.symbols)?,
    }
    render::pause(out, &report.pause)?;
    if let Some(j) = &report.persisted {
        writeln!(out, "persisted in {j}")?;
    }
    if report.probation_ms > 0 {
        writeln!(
            out,
            "on probation for {}: a crash in its code rolls back to generation {} and runs the call again there",
            render::millis(report.probation_ms),
            report.generation.saturating_sub(1)
        )?;
    }
    render::warnings(out, &report.warnings)
}

/// A reload of the bytes the current generation already runs: nothing was done.
fn unchanged(out: &mut dyn Write, report: &ReloadReport) -> std::io::Result<()> {
    writeln!(
        out,
        "unchanged: {} has the bytes generation {} already runs in {}; nothing {} (--force makes a new generation anyway)",
        report.path,
        report.generation,
        report.module,
        if report.dry_run { "would be done" } else { "done" }
    )?;
    render::warnings(out, &report.warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fake_agent, reload_report};

    fn human_text(report: &ReloadReport) -> String {
        let mut out = Vec::new();
        human(&mut out, report, true).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn relative_paths_are_taken_from_cwd() {
        let cwd = Path::new("/home/me/proj");
        assert_eq!(
            absolute_in(cwd, Path::new("libfoo.so")),
            Path::new("/home/me/proj/libfoo.so")
        );
        assert_eq!(
            absolute_in(cwd, Path::new("./build//libfoo.so")),
            Path::new("/home/me/proj/build/libfoo.so")
        );
        assert_eq!(
            absolute_in(cwd, Path::new("../v2/libfoo.so")),
            Path::new("/home/me/proj/../v2/libfoo.so")
        );
        assert_eq!(
            absolute_in(cwd, Path::new("/opt/libfoo.so")),
            Path::new("/opt/libfoo.so")
        );
    }

    #[test]
    fn absolute_path_uses_the_real_cwd() {
        let cwd = env::current_dir().unwrap();
        assert_eq!(
            absolute_path(Path::new("x/libfoo.so")).unwrap(),
            cwd.join("x/libfoo.so").to_str().unwrap()
        );
        assert_eq!(absolute_path(Path::new("/a/./b.so")).unwrap(), "/a/b.so");
        // Not checked locally: the agent reports missing files.
        assert_eq!(
            absolute_path(Path::new("/no/such/file.so")).unwrap(),
            "/no/such/file.so"
        );
    }

    #[test]
    fn links_are_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("libfoo.so.1.2");
        std::fs::write(&real, b"").unwrap();
        let link = dir.path().join("libfoo.so");
        std::os::unix::fs::symlink("libfoo.so.1.2", &link).unwrap();
        let want = std::fs::canonicalize(&real).unwrap();
        assert_eq!(absolute_path(&link).unwrap(), want.to_str().unwrap());
    }

    #[test]
    fn non_utf8_paths_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/lib\xff.so"));
        let err = absolute_path(path).unwrap_err();
        assert!(err.to_string().contains("not valid UTF-8"), "{err}");
    }

    #[test]
    fn human_report() {
        let text = human_text(&reload_report(false));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "generation 1: libfoo.so replaced by /abs/libfoo_v2.so — 2 symbols, 7 slots, 412 µs",
                "  foo          function  6 slots  in app, libbar.so  3 lazy, entry jumps",
                "  bar@FOO_1.0  rodata     1 slot  in app             2 bound elsewhere",
                "  1 entry written with 4 threads held 35 µs (1 stop)",
                "warning: foo: 3 lazy slots left to the dynamic linker",
            ]
        );
    }

    #[test]
    fn human_dry_run() {
        let text = human_text(&reload_report(true));
        assert!(
            text.starts_with(
                "dry run: would make generation 1: libfoo.so replaced by /abs/libfoo_v2.so"
            ),
            "{text}"
        );
        assert!(
            text.lines().next().unwrap().ends_with("nothing written"),
            "{text}"
        );
    }

    #[test]
    fn sends_the_request_and_prints_the_bare_report_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let agent = fake_agent(dir.path(), move |request| {
            tx.send(request).unwrap();
            Some(Response::Reload(reload_report(true)))
        });
        let global = Global {
            pid: Some(agent.pid),
            json: true,
            timeout: None,
            settle: None,
            hook_timeout: None,
            quiet: false,
            verbose: false,
        };
        let args = ReloadArgs {
            path: "rel/libfoo_v2.so".into(),
            replace: Some("libfoo.so".into()),
            dry_run: true,
            no_probe: true,
            got_only: true,
            fresh_state: false,
            changed_only: false,
            probation: None,
            persist: false,
            on_next_start: false,
            force: false,
            select: Default::default(),
            rollout: Default::default(),
        };
        let mut out = Vec::new();
        run(dir.path(), &global, &[], &args, &mut out).unwrap();

        let expected = ReloadRequest {
            path: env::current_dir()
                .unwrap()
                .join("rel/libfoo_v2.so")
                .to_str()
                .unwrap()
                .into(),
            replace: Some("libfoo.so".into()),
            dry_run: true,
            no_probe: true,
            got_only: true,
            fresh_state: false,
            changed_only: false,
            checkpoint: false,
            deadline_ms: None,
            confirm: false,
            settle_ms: None,
            hook_timeout_ms: None,
            probation_ms: None,
            persist: false,
            on_next_start: false,
            force: false,
        };
        // Every request carries its deadline; a dry run changes nothing, so it is not confirmed.
        let Request::Reload(mut got) = rx.recv().unwrap() else {
            panic!("not a reload request")
        };
        assert!(got.deadline_ms.is_some());
        got.deadline_ms = None;
        assert_eq!(got, expected);
        let printed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(printed, serde_json::to_value(reload_report(true)).unwrap());
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    }
}
