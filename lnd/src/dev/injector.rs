//! What the device counts and what it injects: its statistics, the fault settings a spec or
//! `--faults` gives, and the seeded generators that decide when each fault fires.

/// Device statistics, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EngineStats {
    pub smsgs: u64,
    pub pulls: u64,
    pub bytes_pulled: u64,
    pub errors: u64,
    /// Pulls whose data the fault injector damaged.
    pub corrupted: u64,
    /// Transmit setups the fault injector refused.
    pub txfails: u64,
    /// Pulls the fault injector failed (error completions at both ends).
    pub pullfails: u64,
    /// SMSGs the fault injector refused as if the mailbox were full.
    pub mailbox_full: u64,
    /// Pulls whose completions the fault injector held back.
    pub late: u64,
    /// Pulls whose completion at the puller the fault injector lost (the data did move).
    pub lost: u64,
    /// SMSGs sent to nodes on other hosts, over a fabric link.
    pub link_smsgs: u64,
    /// Pulls (and their bytes) that crossed a fabric link, counted at the puller's device.
    pub link_pulls: u64,
    pub link_bytes: u64,
    /// Fabric links lost after they were up.
    pub link_downs: u64,
}

impl EngineStats {
    /// Faults injected, of every kind.
    pub fn faults(&self) -> u64 {
        self.fault_counts().iter().map(|k| k.1).sum()
    }

    /// Faults injected, by kind (the names cluster specs use).
    pub fn fault_counts(&self) -> [(&'static str, u64); 6] {
        [("dma_corrupt", self.corrupted), ("dma_txfail", self.txfails), ("dma_pullfail", self.pullfails), ("dma_mailbox", self.mailbox_full), ("dma_late", self.late), ("dma_lost", self.lost)]
    }
}

/// Device faults to inject: each fires for one in `rate` operations of its kind (0: never).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Flip a byte of a pulled transfer.
    pub corrupt: u32,
    /// Refuse a transmit setup (error completion).
    pub txfail: u32,
    /// Fail a pull (error completions at puller and transmitter).
    pub pullfail: u32,
    /// Refuse an SMSG as if the receiver's mailbox were full.
    pub mailbox: u32,
    /// Complete a pull `late_ms` late (devices that copy on their own thread only).
    pub late: u32,
    pub late_ms: u64,
    /// Lose the puller's completion of a pull (it never hears; only a timeout helps).
    pub lost: u32,
}

pub(super) struct Injector {
    pub(super) corrupt: crate::rng::OneIn,
    pub(super) txfail: crate::rng::OneIn,
    pub(super) pullfail: crate::rng::OneIn,
    pub(super) mailbox: crate::rng::OneIn,
    pub(super) late: crate::rng::OneIn,
    pub(super) late_ms: u64,
    pub(super) lost: crate::rng::OneIn,
}

impl Injector {
    /// Generators for `cfg`'s faults, each seeded from `seed` and its kind.
    pub(super) fn new(cfg: FaultConfig, seed: u64) -> Injector {
        let g = |rate, k: u64| crate::rng::OneIn::new(rate, seed ^ k.wrapping_mul(0xA24B_AED4_963E_E407));
        Injector {
            corrupt: g(cfg.corrupt, 0),
            txfail: g(cfg.txfail, 1),
            pullfail: g(cfg.pullfail, 2),
            mailbox: g(cfg.mailbox, 3),
            late: g(cfg.late, 4),
            late_ms: cfg.late_ms,
            lost: g(cfg.lost, 5),
        }
    }
}
