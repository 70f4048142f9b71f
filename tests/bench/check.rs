//! The reload's check phase and the rollback against their floor, the `dlopen` of the patch
//! (the load phase), measured in the same cycles: issue 13 asks for a reload within 1.5x the
//! load and a rollback within 150 µs.

use crate::{stats, timed_reload, us, Counts};
use hotagent_tests::*;

pub fn check_and_rollback(n: &Counts) -> String {
    let cfg = Config::DEFAULT;
    let v2 = cfg.path("libfoo_v2.so");
    let (mut check, mut load, mut agent, mut rb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n.targets {
        let t = Target::spawn(cfg.path("basic"));
        for _ in 0..n.cycles {
            let (_, r) = timed_reload(&t, &v2, &["--no-probe"]);
            check.push(r.phases.check_us);
            load.push(r.phases.load_us);
            agent.push(r.elapsed_us);
            rb.push(rollback(&t).elapsed_us);
        }
    }
    let (lm, _) = stats(&mut load);
    let (am, ap) = stats(&mut agent);
    let (cm, cp) = stats(&mut check);
    let (rm, rp) = stats(&mut rb);
    let ratio = |v: u64| format!("{:.1}x", v as f64 / lm.max(1) as f64);
    format!(
        "`basic` (libfoo.so), `--no-probe`, reload/rollback cycles. Floor: the load phase (the \
         `dlopen` of the patch), same cycles.\n\n\
         | figure | median | p99 | median / load |\n|---|---|---|---|\n\
         | load (floor) | {} | | 1.0x |\n\
         | check | {} | {} | {} |\n\
         | agent-side reload (target ≤ 1.5x load) | {} | {} | {} |\n\
         | rollback (target ≤ 150 µs) | {} | {} | {} |\n",
        us(lm),
        us(cm),
        us(cp),
        ratio(cm),
        us(am),
        us(ap),
        ratio(am),
        us(rm),
        us(rp),
        ratio(rm),
    )
}
