//! Adaptive polling before sleeping: worth it when the next event is microseconds away (a
//! ping-pong), wasted — and stolen from a peer on few cores — when it is not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a waiter polls before sleeping, adapted to what it sees: a sleep that a longer
/// spin would have saved (woken soon after) doubles the budget, a spin that found nothing
/// halves it. Capped (`LNETLAB_SPIN_US`, default 50 µs; 0 never spins).
pub struct Spin {
    budget_ns: AtomicU64,
    cap_ns: u64,
}

impl Default for Spin {
    fn default() -> Spin {
        Spin::with_cap(spin_cap())
    }
}

/// The spin cap from `LNETLAB_SPIN_US` (default 50 µs), read once.
pub fn spin_cap() -> Duration {
    static CAP: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    Duration::from_micros(*CAP.get_or_init(|| std::env::var("LNETLAB_SPIN_US").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(50)))
}


impl Spin {
    pub fn with_cap(cap: Duration) -> Spin {
        Spin { budget_ns: AtomicU64::new(0), cap_ns: cap.as_nanos() as u64 }
    }

    /// Polls `ready` for up to the budget (yielding the CPU between polls, so a spinner never
    /// keeps a runnable thread off a core); returns whether it became true.
    pub fn spin(&self, ready: impl Fn() -> bool) -> bool {
        let budget = self.budget_ns.load(Ordering::Relaxed);
        if budget == 0 {
            return ready();
        }
        let t0 = Instant::now();
        let mut el = 0u64;
        for i in 0u32.. {
            if ready() {
                return true;
            }
            // The clock is read every 16th look (it cost more than the looks themselves).
            if i % 16 == 15 {
                el = t0.elapsed().as_nanos() as u64;
                if el >= budget {
                    self.budget_ns.store(budget / 2, Ordering::Relaxed);
                    return false;
                }
            }
            if el > 2000 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        unreachable!("the loop returns")
    }

    /// A sleep of `slept` ended because work arrived.
    pub fn woken_after(&self, slept: Duration) {
        let cap = self.cap_ns;
        if cap == 0 {
            return;
        }
        let ns = slept.as_nanos() as u64;
        if ns < cap {
            let b = self.budget_ns.load(Ordering::Relaxed);
            self.budget_ns.store((b.max(ns) * 2).clamp(1000, cap), Ordering::Relaxed);
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_grows_on_quick_wakeups_and_shrinks_on_empty_spins() {
        let s = Spin::with_cap(Duration::from_micros(50));
        assert!(!s.spin(|| false), "no budget yet: one look");
        s.woken_after(Duration::from_micros(10));
        assert_eq!(s.budget_ns.load(Ordering::Relaxed), 20_000, "twice the sleep a spin would have saved");
        s.woken_after(Duration::from_micros(40));
        assert_eq!(s.budget_ns.load(Ordering::Relaxed), 50_000, "capped");
        s.woken_after(Duration::from_millis(5));
        assert_eq!(s.budget_ns.load(Ordering::Relaxed), 50_000, "a long sleep says nothing");
        assert!(s.spin(|| true));
        assert!(!s.spin(|| false));
        assert_eq!(s.budget_ns.load(Ordering::Relaxed), 25_000, "an empty spin halves it");
        let off = Spin::with_cap(Duration::ZERO);
        off.woken_after(Duration::from_nanos(1));
        assert_eq!(off.budget_ns.load(Ordering::Relaxed), 0, "a zero cap never spins");
    }
}
