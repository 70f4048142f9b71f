//! `hotctl diff OLD.so NEW.so`: what a new build of a library changes in its exports, decided by
//! the same comparison `reload --changed-only` makes (the `hotagent-elfdiff` crate).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use hotagent_elfdiff::diff::{diff, DiffError, FileDiff};
use serde_json::json;

use crate::cli::{DiffArgs, Global};
use crate::render::{self, Align};

pub fn run(global: &Global, args: &DiffArgs, out: &mut dyn Write) -> Result<()> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let (old, new) = (read(&args.old)?, read(&args.new)?);
    // Separate debug files are trusted when root or this user owns them, as the agent does.
    let euid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    let d = diff(&old, &new, euid).map_err(|e| match e {
        DiffError::Old(why) => anyhow::anyhow!("{} is not an ELF file: {why}", args.old.display()),
        DiffError::New(why) => anyhow::anyhow!("{} is not an ELF file: {why}", args.new.display()),
    })?;
    if global.json {
        render::json(out, &to_json(args, &d))?;
    } else {
        human(out, args, &d)?;
    }
    Ok(())
}

fn to_json(args: &DiffArgs, d: &FileDiff) -> serde_json::Value {
    json!({
        "old": args.old.display().to_string(),
        "new": args.new.display().to_string(),
        "functions": {
            "changed": d.changed.iter().map(|c| json!({"name": c.name, "proven": c.proven})).collect::<Vec<_>>(),
            "added": d.added,
            "removed": d.removed,
            "unchanged": d.unchanged,
        },
        "data": {
            "resized": d.data_resized.iter().map(|r| json!({"name": r.name, "old_size": r.old_size, "new_size": r.new_size})).collect::<Vec<_>>(),
            "added": d.data_added,
            "removed": d.data_removed,
        },
        "notes": d.notes,
    })
}

fn human(out: &mut dyn Write, args: &DiffArgs, d: &FileDiff) -> std::io::Result<()> {
    writeln!(
        out,
        "{} -> {}: functions {} changed, {} added, {} removed, {} unchanged; data {} resized, {} added, {} removed",
        args.old.display(),
        args.new.display(),
        d.changed.len(),
        d.added.len(),
        d.removed.len(),
        d.unchanged.len(),
        d.data_resized.len(),
        d.data_added.len(),
        d.data_removed.len()
    )?;
    let mut rows = Vec::new();
    for c in &d.changed {
        let why = if c.proven { "" } else { "(could not compare)" };
        rows.push(vec!["changed".into(), c.name.clone(), why.into()]);
    }
    let plain = |what: &str, names: &[String]| {
        names
            .iter()
            .map(|n| vec![what.to_string(), n.clone(), String::new()])
            .collect::<Vec<_>>()
    };
    rows.extend(plain("added", &d.added));
    rows.extend(plain("removed", &d.removed));
    for r in &d.data_resized {
        let sizes = format!("{} -> {} bytes", r.old_size, r.new_size);
        rows.push(vec!["data resized".into(), r.name.clone(), sizes]);
    }
    rows.extend(plain("data added", &d.data_added));
    rows.extend(plain("data removed", &d.data_removed));
    render::table(out, "  ", &[Align::Left, Align::Left, Align::Left], &rows)?;
    for n in &d.notes {
        writeln!(out, "note: {n}")?;
    }
    Ok(())
}
