//! The soak's flatness check (issue 13): after thousands of reload + rollback cycles between two
//! builds, the target's RSS stays within 1 MiB of cycle 100's, and the agent-side reload time
//! within 1.2x of cycle 10's. A soak is a stress check, not a test: it may fail on figures.
//!
//! Reload times are medians over the last `WINDOW` cycles: one reload is too noisy on a shared
//! 2-core machine to compare alone.

/// Cycles each reload-time figure is the median of.
const WINDOW: usize = 10;
/// RSS may grow this much over cycle 100's.
const RSS_SLACK_KIB: u64 = 1024;
/// Reload time may grow this much over cycle 10's.
const TIME_RATIO: f64 = 1.2;
/// Fewer cycles than this say nothing about flatness (`make soak-smoke`).
const MIN_CYCLES: usize = 200;

#[derive(Default)]
pub struct Flat {
    recent: Vec<u64>,
    rss_100: Option<u64>,
    time_10: Option<u64>,
}

impl Flat {
    /// Records cycle `i`'s agent-side reload time and the target's RSS after it.
    pub fn cycle(&mut self, i: usize, reload_us: u64, rss_kib: impl FnOnce() -> u64) {
        self.recent.push(reload_us);
        if self.recent.len() > WINDOW {
            self.recent.remove(0);
        }
        if i == 10 {
            self.time_10 = Some(self.median());
        }
        if i == 100 {
            self.rss_100 = Some(rss_kib());
        }
    }

    /// Cycles at which the soak prints a row: 10, 100, then every 1,000 (every 100 in a shorter
    /// run), and the last.
    pub fn sample_at(i: usize, cycles: usize) -> bool {
        let step = if cycles >= 2000 { 1000 } else { 100 };
        i == 10 || i == 100 || i.is_multiple_of(step) || i == cycles
    }

    /// The median of the last `WINDOW` reload times, µs.
    pub fn median(&self) -> u64 {
        let mut v = self.recent.clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    }

    /// The verdict at the end of `cycles`, with the target's RSS then: a line for the report,
    /// and whether the targets were met.
    pub fn verdict(&self, cycles: usize, rss_end: u64) -> (String, bool) {
        let (Some(rss_100), Some(time_10)) = (self.rss_100, self.time_10) else {
            return (format!("{cycles} cycles: too few to judge flatness."), true);
        };
        if cycles < MIN_CYCLES {
            return (format!("{cycles} cycles: too few to judge flatness."), true);
        }
        let time_end = self.median();
        let grew = rss_end.saturating_sub(rss_100);
        let ratio = time_end as f64 / time_10.max(1) as f64;
        let rss_ok = grew <= RSS_SLACK_KIB;
        let time_ok = ratio <= TIME_RATIO;
        let line = format!(
            "RSS {rss_end} KiB at cycle {cycles}, {grew} KiB above cycle 100's {rss_100} KiB (target ≤ {RSS_SLACK_KIB} KiB): {}; \
             reload {time_end} µs (median of the last {WINDOW}) against {time_10} µs at cycle 10, {ratio:.2}x (target ≤ {TIME_RATIO}x): {}.",
            if rss_ok { "flat" } else { "GREW" },
            if time_ok { "flat" } else { "GREW" },
        );
        (line, rss_ok && time_ok)
    }
}
