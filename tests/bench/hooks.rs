//! What issue 10's patch-author API costs: each hook as the agent times it, for hooks that only
//! return 0, next to the same reload of the same library built without hooks (the floor); and a
//! converted C++ object's first call against a normal call, timed inside the program.

use super::{us, Counts};
use hotagent_tests::*;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// (median, p90) of `v`, sorted in place.
fn mid_p90<T: Copy + Default + PartialOrd>(v: &mut [T]) -> (T, T) {
    if v.is_empty() {
        return (T::default(), T::default());
    }
    v.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.9))
}

/// "median / p90" of µs figures.
fn us_cell(v: &mut [u64]) -> String {
    let (m, p) = mid_p90(v);
    format!("{} / {}", us(m), us(p))
}

/// The patches of libfoo.so the hook table compares: (label, artifact).
const VARIANTS: [(&str, &str); 3] = [
    ("no hooks (floor)", "libfoo_hooks_none.so"),
    ("prepare + committed", "libfoo_hooks_nomigrate.so"),
    (
        "prepare + migrate + committed + unmigrate",
        "libfoo_hooks_all.so",
    ),
];

/// One reload/rollback cycle's figures, in µs.
#[derive(Default)]
struct Samples {
    agent: Vec<u64>,
    prepare: Vec<u64>,
    migrate: Vec<u64>,
    committed: Vec<u64>,
    pause: Vec<u64>,
    probe: Vec<u64>,
    rollback: Vec<u64>,
    unmigrate: Vec<u64>,
    rollback_pause: Vec<u64>,
}

impl Samples {
    fn cycle(&mut self, t: &Target, lib: &Path, extra: &[&str]) {
        let mut args = extra.to_vec();
        args.extend_from_slice(&["--settle", "0"]);
        let r = reload(t, lib, &args);
        self.agent.push(r.elapsed_us);
        self.prepare.push(r.phases.prepare_us);
        self.migrate.push(r.phases.migrate_us);
        self.committed.push(r.phases.committed_us);
        self.pause.push(r.pause.longest_us);
        self.probe.push(r.phases.probe_us);
        let b = rollback(t);
        self.rollback.push(b.elapsed_us);
        self.unmigrate.push(b.unmigrate_us);
        self.rollback_pause.push(b.pause.longest_us);
    }
}

/// The runs the hook table compares: (label, busy threads in `threads`, probe flags).
const RUNS: [(&str, &str, &[&str]); 3] = [
    ("idle, probe off", "0", &["--no-probe"]),
    ("idle, probe on", "0", &[]),
    ("2 busy threads, probe off", "2", &["--no-probe"]),
];

fn hook_costs(n: &Counts) -> String {
    let cfg = Config::DEFAULT;
    let libs: Vec<PathBuf> = VARIANTS.iter().map(|(_, a)| cfg.path(a)).collect();
    let mut samples: Vec<Vec<Samples>> = RUNS
        .iter()
        .map(|_| VARIANTS.iter().map(|_| Samples::default()).collect())
        .collect();
    for _ in 0..n.targets {
        for (r, (_, busy, extra)) in RUNS.iter().enumerate() {
            let mut t = Target::builder(cfg.path("threads")).arg(*busy).spawn();
            // Once each first, not counted: the first hook starts the agent's hook thread.
            for lib in &libs {
                Samples::default().cycle(&t, lib, extra);
            }
            // Interleaved, so drift in the machine's load hits every variant alike.
            for _ in 0..n.cycles {
                for (v, lib) in libs.iter().enumerate() {
                    samples[r][v].cycle(&t, lib, extra);
                }
            }
            t.assert_alive();
        }
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = format!(
        "libfoo.so v2 reloaded into `threads` and rolled back, {} cycles each; the same source \
         built with hooks that only return 0, and without any (the floor). *Idle*: the program \
         waits for its next command line; *2 busy threads*: two threads call libfoo flat out \
         (this machine has {cores} cores). Every figure is the agent's own (`hotctl reload \
         --json`: `phases`, `elapsed_us`, `pause.longest_us`; the rollback's `elapsed_us`, \
         `unmigrate_us`), median / p90. A hook runs on the agent's hook thread, woken for each \
         call and waited for with a deadline: its figure is that hand-over plus the empty call, \
         so with every core busy it includes waiting for the scheduler to run the hook thread. \
         Without migrate the GOT slots are written while threads run and only the entry jumps \
         stop them; with migrate the hook, every slot and every entry are written in one stop. \
         With the probe on, prepare and migrate also run once in the probe's forked copy (in \
         *probe phase*).\n\n\
         | target | hooks | reload (agent) | prepare | migrate | committed | longest pause | probe phase | rollback (agent) | unmigrate | rollback pause |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        n.targets * n.cycles
    );
    for (r, (run, _, _)) in RUNS.iter().enumerate() {
        for (v, (label, _)) in VARIANTS.iter().enumerate() {
            let s = &mut samples[r][v];
            let _ = writeln!(
                out,
                "| {run} | {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                us_cell(&mut s.agent),
                us_cell(&mut s.prepare),
                us_cell(&mut s.migrate),
                us_cell(&mut s.committed),
                us_cell(&mut s.pause),
                us_cell(&mut s.probe),
                us_cell(&mut s.rollback),
                us_cell(&mut s.unmigrate),
                us_cell(&mut s.rollback_pause),
            );
        }
    }
    out
}

/// `ns X sum Y` → (X, Y).
fn timed(t: &mut Target, line: &str) -> (f64, i64) {
    let answer = t.cmd(line);
    let mut w = answer.split_whitespace();
    match (w.next(), w.next(), w.next(), w.next()) {
        (Some("ns"), Some(ns), Some("sum"), Some(sum)) => match (ns.parse(), sum.parse()) {
            (Ok(ns), Ok(sum)) => (ns, sum),
            _ => panic!("answer to {line:?} is not `ns X sum Y`: {answer:?}"),
        },
        _ => panic!("answer to {line:?} is not `ns X sum Y`: {answer:?}"),
    }
}

/// Where the vtable of set `set`'s first object leads for `get()`: the file mapped there (a
/// memfd copy for a reloaded build), or an anonymous page: code the agent made (a thunk).
fn slot_holder(t: &mut Target, set: char) -> String {
    let answer = t.cmd(&format!("slot {set}"));
    let addr = answer
        .strip_prefix("get 0x")
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("answer to slot {set} is not `get 0xADDR`: {answer:?}"));
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", t.pid())).unwrap_or_default();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let range = f.next().unwrap_or_default();
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else {
            continue;
        };
        if (lo..hi).contains(&addr) {
            let file = f.nth(4).unwrap_or_default();
            return match file.rsplit('/').next() {
                Some(name) if !name.is_empty() => format!("`{name}`'s code"),
                _ => "an anonymous code page (a thunk of the agent's)".to_string(),
            };
        }
    }
    format!("{addr:#x}, in no mapping")
}

/// One call on each object of set `sets[0]` through the vtable, then of `sets[1]` directly,
/// into `row`; every call must have reached library version `version`.
fn both(t: &mut Target, row: &mut [Vec<f64>; 2], sets: &str, version: i64, objects: usize) {
    for (k, (kind, set)) in ["virt", "direct"].into_iter().zip(sets.chars()).enumerate() {
        let line = format!("{kind} {set}");
        let (x, sum) = timed(t, &line);
        assert_eq!(
            sum,
            version * objects as i64,
            "{line}: not every call reached v{version}"
        );
        row[k].push(x);
    }
}

/// The rows of the conversion table: what each measures.
const ROWS: [&str; 6] = [
    "generation 0: a normal call (floor)",
    "after the reload: first call on an old object (converted in it)",
    "after the reload: second call on it",
    "after the reload: an object made by v2",
    "after the rollback: first call (converted back in it)",
    "after the rollback: second call",
];

fn conversion_costs(n: &Counts) -> String {
    let cfg = Config::DEFAULT;
    let v2 = cfg.path("libcallcost_v2.so");
    let objects = n.objects;
    // [row][0 = virtual, 1 = direct]: ns per call, one figure per target.
    let mut ns: Vec<[Vec<f64>; 2]> = ROWS.iter().map(|_| Default::default()).collect();
    // Where the get() slot leads: at generation 0, on the new vtable, back on the old one.
    let mut slots: [BTreeSet<String>; 3] = Default::default();
    for _ in 0..n.conversions {
        let mut t = Target::spawn(cfg.path("callcost"));
        // Set a for calls through the vtable, b for direct calls: each object's first call
        // after the reload is the one that converts it, so each kind needs objects of its own.
        t.expect(&format!("make a {objects}"), format!("made {objects}"));
        t.expect(&format!("make b {objects}"), format!("made {objects}"));
        // Not counted: binds the program's lazy PLT slot, and settles the caches.
        timed(&mut t, "virt a");
        timed(&mut t, "direct b");
        both(&mut t, &mut ns[0], "ab", 1, objects);
        slots[0].insert(slot_holder(&mut t, 'a'));
        let r = reload(&t, &v2, &["--no-probe", "--settle", "0"]);
        assert!(
            r.warnings.iter().any(|w| w.contains("_ZTV4Cell")),
            "no class conversion registered: {:?}",
            r.warnings
        );
        both(&mut t, &mut ns[1], "ab", 2, objects);
        both(&mut t, &mut ns[2], "ab", 2, objects);
        t.expect(&format!("make c {objects}"), format!("made {objects}"));
        both(&mut t, &mut ns[3], "cc", 2, objects);
        slots[1].insert(slot_holder(&mut t, 'c'));
        rollback(&t);
        both(&mut t, &mut ns[4], "ab", 1, objects);
        both(&mut t, &mut ns[5], "ab", 1, objects);
        slots[2].insert(slot_holder(&mut t, 'a'));
        t.assert_alive();
    }
    let floor: Vec<f64> = (0..2).map(|k| mid_p90(&mut ns[0][k]).0).collect();
    let mut out = format!(
        "`callcost`: {objects} objects of a class (`Cell`, one virtual `get()`) made at \
         generation 0, then libcallcost.so v2 reloaded (`--no-probe`), whose `hotagent_prepare` \
         registers `hotagent_convert_class` with converters that do nothing (the agent still \
         moves each old object to the new vtable, once, on its first call). One call on each \
         object, the whole loop timed inside the program (`clock_gettime` / objects; every loop \
         after an untimed pass reading each object, so all find them equally warm); median / \
         p90 over {} fresh targets, ns per call. *Virtual*: `o->get()`; an old object's slot \
         holds the upgrade thunk until it is converted. *Direct*: `o->Cell::get()` through the \
         program's PLT, whose GOT slot holds the entry thunk after the reload (a load and three \
         compares for an object already on the new vtable, the conversion for an old one).\n\n\
         | call | virtual | vs floor | direct | vs floor |\n|---|---|---|---|---|\n",
        n.conversions
    );
    for (row, label) in ROWS.iter().enumerate() {
        let cells: Vec<String> = (0..2)
            .map(|k| {
                let (m, p) = mid_p90(&mut ns[row][k]);
                let ratio = if floor[k] > 0.0 { m / floor[k] } else { 0.0 };
                format!("{m:.2} / {p:.2} ns | {ratio:.2}x")
            })
            .collect();
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }
    let said = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(" or ");
    let _ = writeln!(
        out,
        "\nWhere the vtable's `get()` slot leads (read from an object, found in the process's \
         maps): at generation 0, {}; after the reload, on the new vtable, {}; after the \
         rollback, on the old vtable, {}.",
        said(&slots[0]),
        said(&slots[1]),
        said(&slots[2])
    );
    out
}

/// The section: hooks, then conversions.
pub fn hooks_and_conversion(n: &Counts) -> String {
    format!(
        "### Hooks\n\n{}\n### A converted object's first call\n\n{}",
        hook_costs(n),
        conversion_costs(n)
    )
}
