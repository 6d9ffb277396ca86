//! Adaptive timeouts as ptlrpc keeps them (`struct adaptive_timeout`): the worst value measured
//! over a sliding history in four bins, and the limits (`at_min`, `at_max`, `at_extra`,
//! `at_early_margin`) that turn an estimate into an RPC deadline or an early reply.

use std::time::{Duration, Instant};

/// `AT_BINS`: the history is kept as this many bins of `history / AT_BINS` each.
const AT_BINS: usize = 4;

/// The adaptive-timeout tunables (Lustre's module parameters; seconds there, any duration here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AtConfig {
    /// `at_min`: no estimate goes below this.
    #[serde(default)]
    pub min_ms: u64,
    /// `at_max`: no estimate goes above this (Lustre: 600 s).
    #[serde(default = "default_max")]
    pub max_ms: u64,
    /// `at_extra`: what an early reply asks for beyond the time already spent.
    #[serde(default = "default_extra")]
    pub extra_ms: u64,
    /// `at_early_margin`: an early reply goes this long before a request's deadline.
    #[serde(default = "default_margin")]
    pub early_margin_ms: u64,
    /// `at_history`: how long a measurement is remembered.
    #[serde(default = "default_history")]
    pub history_ms: u64,
}

fn default_max() -> u64 {
    600_000
}
fn default_extra() -> u64 {
    30_000
}
fn default_margin() -> u64 {
    5_000
}
fn default_history() -> u64 {
    600_000
}

impl Default for AtConfig {
    fn default() -> Self {
        AtConfig { min_ms: 0, max_ms: default_max(), extra_ms: default_extra(), early_margin_ms: default_margin(), history_ms: default_history() }
    }
}

impl AtConfig {
    pub fn min(&self) -> Duration {
        Duration::from_millis(self.min_ms)
    }
    pub fn max(&self) -> Duration {
        Duration::from_millis(self.max_ms.max(self.min_ms))
    }
    pub fn extra(&self) -> Duration {
        Duration::from_millis(self.extra_ms)
    }
    pub fn early_margin(&self) -> Duration {
        Duration::from_millis(self.early_margin_ms)
    }

    /// `at_est2timeout`: the RPC timeout for a service estimate — a quarter more, plus 5 s
    /// for what the estimate does not see — within `at_min`..`at_max`.
    pub fn timeout_for(&self, estimate: Duration) -> Duration {
        (estimate * 5 / 4 + Duration::from_secs(5)).clamp(self.min(), self.max())
    }
}

/// One adaptive timeout: the worst measurement of the last `history`, in ms.
#[derive(Debug, Clone, Default)]
pub struct Estimate {
    bin_start: Option<Instant>,
    hist: [u64; AT_BINS],
    current: u64,
}

impl Estimate {
    /// Starts at `initial` (remembered like a measurement).
    pub fn new(initial: Duration) -> Estimate {
        Estimate { current: initial.as_millis() as u64, ..Default::default() }
    }

    /// The estimate, within `at_min`..`at_max`.
    pub fn get(&self, cfg: &AtConfig) -> Duration {
        Duration::from_millis(self.current).clamp(cfg.min(), cfg.max())
    }

    /// `at_measured`: a new value; bins older than the history are forgotten.
    pub fn measured(&mut self, cfg: &AtConfig, now: Instant, val: Duration) {
        let val = val.as_millis() as u64;
        let bin = Duration::from_millis((cfg.history_ms / AT_BINS as u64).max(1));
        let start = *self.bin_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= bin {
            // Shift out the bins that ended; the first measurement after a long quiet spell
            // starts the history afresh.
            let shift = (elapsed.as_millis() / bin.as_millis()) as usize;
            if shift >= AT_BINS {
                self.hist = [0; AT_BINS];
            } else {
                self.hist.rotate_right(shift);
                self.hist[..shift].fill(0);
            }
            self.bin_start = Some(start + bin * shift as u32);
        }
        self.hist[0] = self.hist[0].max(val);
        self.current = self.hist.iter().copied().max().unwrap_or(0);
    }
}

/// Whole seconds for `pb_timeout` and `pb_service_time`, rounded up.
pub fn wire_secs(d: Duration) -> u32 {
    d.as_millis().div_ceil(1000).min(u32::MAX as u128) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_the_worst_of_the_history_and_forgets_old_bins() {
        let cfg = AtConfig { history_ms: 4000, ..Default::default() };
        let t0 = Instant::now();
        let mut e = Estimate::new(Duration::ZERO);
        e.measured(&cfg, t0, Duration::from_secs(7));
        e.measured(&cfg, t0 + Duration::from_millis(1500), Duration::from_secs(2));
        assert_eq!(e.get(&cfg), Duration::from_secs(7), "the worst of the history");
        // 7 s was measured in the first 1 s bin; four bins later it is gone, 2 s is not yet.
        e.measured(&cfg, t0 + Duration::from_millis(4100), Duration::from_secs(1));
        assert_eq!(e.get(&cfg), Duration::from_secs(2));
        // A long silence forgets everything.
        e.measured(&cfg, t0 + Duration::from_secs(60), Duration::from_millis(300));
        assert_eq!(e.get(&cfg), Duration::from_millis(300));
    }

    #[test]
    fn timeouts_stay_within_at_min_and_at_max() {
        let cfg = AtConfig { min_ms: 8000, max_ms: 20_000, ..Default::default() };
        assert_eq!(cfg.timeout_for(Duration::ZERO), Duration::from_secs(8), "at_min");
        assert_eq!(cfg.timeout_for(Duration::from_secs(8)), Duration::from_secs(15), "8 × 1.25 + 5");
        assert_eq!(cfg.timeout_for(Duration::from_secs(100)), Duration::from_secs(20), "at_max");
        let e = Estimate::new(Duration::from_secs(1));
        assert_eq!(e.get(&cfg), Duration::from_secs(8), "an estimate is clamped too");
        assert_eq!((wire_secs(Duration::ZERO), wire_secs(Duration::from_millis(1))), (0, 1));
        assert_eq!(wire_secs(Duration::from_millis(2001)), 3);
    }
}
