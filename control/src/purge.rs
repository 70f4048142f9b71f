//! `hotctl purge GEN`: unload a retired generation the operator vouches for.
//!
//! The agent refuses while anything it can see still leads into the generation (a slot, a
//! symbol-table entry, an entry jump, a thread running it or due to return into it). A function
//! pointer the program took while the generation was current cannot be seen: purging is the
//! operator's word that none is left.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use hotagent_protocol::{PurgeReport, PurgeRequest, Request, Response};

use crate::cli::Global;
use crate::client::{self, ROLLBACK_TIMEOUT};
use crate::{discover, render};

pub fn run(dir: &Path, global: &Global, generation: u32, out: &mut dyn Write) -> Result<()> {
    let target = discover::find(dir, global.pid)?;
    let request = Request::Purge(PurgeRequest { generation });
    let report = match target.exchange(&request, global.timeout_or(ROLLBACK_TIMEOUT))? {
        Response::Purge(report) => report,
        other => return Err(client::unexpected(other, "purge")),
    };
    render::report(out, global.json, &report, human)
}

fn human(out: &mut dyn Write, report: &PurgeReport) -> std::io::Result<()> {
    writeln!(
        out,
        "generation {} purged: {} unloaded ({} KiB), {}",
        report.generation,
        report.unloaded.join(", "),
        report.bytes / 1024,
        render::micros(report.elapsed_us)
    )
}
